"""Checkers for lesson 11, the capstone: a paired interval over seeds, and a write-up that
cites its intervals.

    check_paired_interval(fn)     fn(a (n,), b (n,)) -> mean, sd, low, high
        the per-seed differences d_k = a_k - b_k (seed k of a and of b share an init, the
        batches and the evaluation windows), their mean, their sample sd (ddof = 1) and the
        95% t interval  mean +- t_{0.975, n-1} * sd / sqrt(n),  as minifope.stats.paired_difference
    check_write_up(text, rows)    every sentence that compares variants cites an interval that
        excludes zero, or says "not separated at this scale"; every interval it quotes is one of
        `rows` (the lesson's paired differences: dicts with a, b, length, mean, low, high)

Each prints what it checked and its verdict, and returns True only if everything passes; a
stub (or a template still holding "...") is reported as not done yet, and no checker raises.
"""

import math
import re

import numpy as np

from ..stats import LEVEL, paired_difference
from .grading import grade_cases, verdict

# --- the paired interval -------------------------------------------------------------------

# (label, a, b): losses of two variants by seed. The seeds move both variants together (a
# shared init and shared batches), so the paired and the unpaired intervals differ widely.
PAIRED_CASES = (
    ("3 seeds", [2.412, 2.287, 2.531], [2.205, 2.180, 2.262]),
    ("3 seeds, b ahead", [1.981, 1.962, 2.004], [2.043, 1.990, 2.071]),
    ("5 seeds", [2.74, 2.61, 2.88, 2.70, 2.79], [2.51, 2.47, 2.66, 2.43, 2.58]),
)


def _t(q, df):
    from scipy import stats as sps  # as minifope.stats: scipy only when a checker runs

    return float(sps.t.ppf(q, df))


def _from(mean, sd, half):
    return [mean, sd, mean - half, mean + half]


def _paired_mistakes(a, b):
    """{hint: [mean, sd, low, high] that a known wrong answer gives, None where it is right}."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d, n = a - b, len(a)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    t = _t(0.5 + LEVEL / 2, n - 1)
    unpaired_sd = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    sd0 = float(d.std(ddof=0))
    sign = "the difference is a - b, seed by seed; yours is b - a"
    return {
        sign: [-mean, None, -mean - t * sd / math.sqrt(n), -mean + t * sd / math.sqrt(n)],
        "this is the unpaired interval: it treats the seeds of a and of b as independent samples "
        "(sd from var(a) + var(b)). Seed k of both variants shares its init, batches and windows: "
        "take the differences d_k = a_k - b_k first, then the mean and sd of d":
            [None, unpaired_sd, mean - t * unpaired_sd / math.sqrt(n), mean + t * unpaired_sd / math.sqrt(n)],
        "this is the pooled two-sample interval (2n - 2 degrees of freedom), which ignores the pairs: "
        "take the differences d_k = a_k - b_k first, then the mean and sd of d, with n - 1 degrees of freedom":
            _from(mean, unpaired_sd, _t(0.5 + LEVEL / 2, 2 * n - 2) * unpaired_sd / math.sqrt(n)),
        "np.std defaults to ddof=0, the population sd (divides by n); the lab reports the sample sd, "
        "np.std(d, ddof=1), which divides by n - 1":
            [None, sd0, mean - t * sd0 / math.sqrt(n), mean + t * sd0 / math.sqrt(n)],
        "1.96 is the normal quantile, right only for many seeds; the mean of n differences follows a t "
        f"distribution with n - 1 degrees of freedom: scipy.stats.t.ppf(0.975, n - 1) ({_t(0.975, 2):.2f} "
        "for 3 seeds)": _from(mean, sd, 1.96 * sd / math.sqrt(n)),
        "norm.ppf(0.975) = 1.96 is the normal quantile, right only for many seeds; the mean of n "
        "differences follows a t distribution: scipy.stats.t.ppf(0.975, n - 1)":
            _from(mean, sd, 1.959963984540054 * sd / math.sqrt(n)),
        "the t quantile has n - 1 degrees of freedom (one is spent on the mean), not n":
            _from(mean, sd, _t(0.5 + LEVEL / 2, n) * sd / math.sqrt(n)),
        "a two-sided 95% interval leaves 2.5% in each tail: t.ppf(0.975, n - 1), not t.ppf(0.95, n - 1)":
            _from(mean, sd, _t(LEVEL, n - 1) * sd / math.sqrt(n)),
        "the interval is for the mean of the differences: its half-width is t * sd / sqrt(n), the "
        "standard error, not t * sd": _from(mean, sd, t * sd),
    }


def check_paired_interval(fn, tol=1e-9):
    """Grade fn(a, b) -> (mean, sd, low, high) against minifope.stats.paired_difference on three
    cases (3 seeds, 3 seeds with b ahead, 5 seeds), naming the mistake an answer matches."""
    cases = []
    for label, a, b in PAIRED_CASES:
        ref = paired_difference(a, b)
        cases.append((label, (np.array(a), np.array(b)), [ref[k] for k in ("mean", "sd", "low", "high")],
                      _paired_mistakes(a, b)))
    return grade_cases("paired_interval", fn, cases, tol, outputs=("mean", "sd", "low", "high"))


# --- the write-up ----------------------------------------------------------------------------

NOT_SEPARATED = "not separated at this scale"
VARIANT = re.compile(r"\b(?:rope|clip-only|series-only|fope)\b", re.IGNORECASE)
COMPARATIVE = re.compile(
    r"\b(?:than|lower|higher|better|worse|below|above|beats?|ahead|behind|outperforms?|flatter|"
    r"steeper|smaller|larger|more|less|fewer|helps?|hurts?|improves?|differs?|same as|equal)\b",
    re.IGNORECASE)
NUMBER = r"[+\-\u2212]?\d*\.?\d+"
INTERVAL = re.compile(rf"\[\s*({NUMBER})\s*,\s*({NUMBER})\s*\]")
PLACEHOLDER = re.compile(r"\.\.\.|\u2026|\bTODO\b")


def _blocks(text):
    # parts of the write-up: at blank lines, list items and lines that open with a label of at
    # most five words ("Results:", "Hypothesis (written before the run):")
    return [b for b in re.split(r"\n\s*\n|\n\s*[-*]\s+|\n(?=\s*[A-Z][\w()]*(?: [\w()]+){0,4}:)", text)
            if b.strip()]


def _sentences_of(block):
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=\S)", " ".join(block.split())) if s.strip()]


def sentences(text):
    """The write-up cut into sentences: at blank lines, list items, labelled lines ("Results:")
    and a full stop, question or exclamation mark followed by a space (a decimal point is
    followed by a digit)."""
    return [s for block in _blocks(text) for s in _sentences_of(block)]


def claims(text):
    """The sentences of a write-up that claim something: all but questions and the parts
    labelled "Question" and "Hypothesis" (the question asked, and the prediction written before
    the run, quoted: neither is a finding)."""
    return [s for block in _blocks(text) if not block.strip().lower().startswith(("question", "hypothesis"))
            for s in _sentences_of(block) if not s.endswith("?")]


def _number(text):
    return float(text.replace("\u2212", "-"))


def _known(low, high, rows, digits):
    # an interval quoted to `digits` decimals matches a row's interval rounded to as many
    near = 0.5 * 10 ** -digits + 1e-9
    return any(abs(low - r["low"]) <= near and abs(high - r["high"]) <= near for r in rows)


def _decimals(text):
    return len(text.split(".")[1]) if "." in text else 0


def check_write_up(text, rows):
    """Check a write-up against the experiment's paired differences `rows` (dicts with keys a,
    b, length, mean, low, high). In every sentence that claims something (`claims`: not the
    question, not the hypothesis quoted from before the run): each quoted interval [low, high]
    must be one of theirs, to the decimals it is quoted with; a sentence that names a variant
    and compares must cite an interval that excludes zero or say "not separated at this scale",
    and a sentence that cites only intervals containing zero must say so. Prints every
    sentence that fails and why."""
    name = "write_up"
    if not isinstance(text, str) or not text.strip() or PLACEHOLDER.search(text):
        print(f"FAIL  {name}: not done yet (the template still holds '...'); fill in every part and "
              "run the check again")
        return verdict(name, False)
    problems, compared = [], 0
    for s in claims(text):
        intervals = [(m.group(0), _number(m.group(1)), _number(m.group(2)),
                      min(_decimals(m.group(1)), _decimals(m.group(2)))) for m in INTERVAL.finditer(s)]
        for quoted, low, high, digits in intervals:
            if low > high:
                problems.append((s, f"{quoted}: its low end is above its high end"))
            elif _known(-high, -low, rows, digits) and not _known(low, high, rows, digits):
                problems.append((s, f"{quoted} is a printed interval with its sign turned (b - a): quote "
                                    "the difference in the order the table prints it, a - b"))
            elif not _known(low, high, rows, digits):
                problems.append((s, f"{quoted} is not one of the intervals the experiment printed"))
        excluding = [i for i in intervals if i[1] > 0 or i[2] < 0]
        says_not_separated = NOT_SEPARATED in s.lower()
        comparative = bool(VARIANT.search(s) and COMPARATIVE.search(s))
        compared += comparative
        if comparative and not excluding and not says_not_separated:
            problems.append((s, "compares variants without an interval that excludes zero: cite one, "
                                f"or say '{NOT_SEPARATED}'"))
        elif intervals and not excluding and not says_not_separated:
            problems.append((s, f"every interval it cites contains zero: say '{NOT_SEPARATED}'"))
        if says_not_separated and excluding and len(excluding) == len(intervals):
            problems.append((s, f"says '{NOT_SEPARATED}' but cites only intervals that exclude zero"))
    for s, why in problems:
        print(f"FAIL  {why}:\n      \"{s}\"")
    if not compared:
        print(f"FAIL  {name}: no sentence compares the variants; say what the intervals show")
        return verdict(name, False)
    if not problems:
        print(f"{compared} sentence(s) compare variants; each cites an interval that excludes zero or "
              f"says '{NOT_SEPARATED}', and every interval quoted is one the experiment printed")
    return verdict(name, not problems)
