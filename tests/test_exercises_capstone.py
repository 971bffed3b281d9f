"""The checkers of lesson 11 (the capstone) accept the right answer and name realistic mistakes."""

import math

import numpy as np
import pytest
from scipy import stats

from minifope.exercises.capstone import NOT_SEPARATED, check_paired_interval, check_write_up, sentences
from minifope.stats import paired_difference


def not_done(*args):
    raise NotImplementedError


def _interval(mean, sd, n, quantile):
    half = quantile * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def paired(a, b):
    d = np.asarray(a) - np.asarray(b)
    return _interval(d.mean(), d.std(ddof=1), len(d), stats.t.ppf(0.975, len(d) - 1))


def test_paired_checker_accepts_the_interval_of_minifope_stats(capsys):
    assert check_paired_interval(paired)
    assert "paired_interval: all ok" in capsys.readouterr().out


def test_paired_checker_accepts_minifope_stats_itself(capsys):
    assert check_paired_interval(lambda a, b: [paired_difference(a, b)[k] for k in ("mean", "sd", "low", "high")])


def test_paired_checker_reports_a_stub_as_not_done_without_raising(capsys):
    assert not check_paired_interval(not_done)
    out = capsys.readouterr().out
    assert "not done yet" in out and out.count("not done yet") == 1


def test_paired_checker_rejects_a_dict_and_says_what_to_return(capsys):
    assert not check_paired_interval(paired_difference)
    assert "must return 4 arrays" in capsys.readouterr().out


def unpaired(a, b):
    # the difference of the means with the spread of each variant over seeds, as if independent
    a, b = np.asarray(a), np.asarray(b)
    sd = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    return _interval(a.mean() - b.mean(), sd, len(a), stats.t.ppf(0.975, len(a) - 1))


def pooled_two_sample(a, b):
    a, b = np.asarray(a), np.asarray(b)
    sd = math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    return _interval(a.mean() - b.mean(), sd, len(a), stats.t.ppf(0.975, 2 * len(a) - 2))


def population_sd(a, b):
    d = np.asarray(a) - np.asarray(b)
    return _interval(d.mean(), d.std(), len(d), stats.t.ppf(0.975, len(d) - 1))


def normal_quantile(a, b):
    d = np.asarray(a) - np.asarray(b)
    return _interval(d.mean(), d.std(ddof=1), len(d), 1.96)


def normal_ppf(a, b):
    d = np.asarray(a) - np.asarray(b)
    return _interval(d.mean(), d.std(ddof=1), len(d), stats.norm.ppf(0.975))


def t_with_n_degrees(a, b):
    d = np.asarray(a) - np.asarray(b)
    return _interval(d.mean(), d.std(ddof=1), len(d), stats.t.ppf(0.975, len(d)))


def one_sided_quantile(a, b):
    d = np.asarray(a) - np.asarray(b)
    return _interval(d.mean(), d.std(ddof=1), len(d), stats.t.ppf(0.95, len(d) - 1))


def without_sqrt_n(a, b):
    d = np.asarray(a) - np.asarray(b)
    mean, sd = d.mean(), d.std(ddof=1)
    half = stats.t.ppf(0.975, len(d) - 1) * sd
    return mean, sd, mean - half, mean + half


def b_minus_a(a, b):
    return paired(b, a)


@pytest.mark.parametrize("wrong, hint", [
    (unpaired, "this is the unpaired interval"),
    (pooled_two_sample, "pooled two-sample interval"),
    (population_sd, "ddof=0, the population sd"),
    (normal_quantile, "1.96 is the normal quantile"),
    (normal_ppf, "1.96 is the normal quantile"),
    (t_with_n_degrees, "n - 1 degrees of freedom (one is spent on the mean), not n"),
    (one_sided_quantile, "not t.ppf(0.95, n - 1)"),
    (without_sqrt_n, "the standard error, not t * sd"),
    (b_minus_a, "yours is b - a"),
], ids=lambda x: getattr(x, "__name__", ""))
def test_paired_checker_rejects_a_realistic_mistake_with_its_hint(wrong, hint, capsys):
    assert not check_paired_interval(wrong)
    out = capsys.readouterr().out
    assert "paired_interval: FAIL" in out
    hints = [line for line in out.splitlines() if line.startswith("  hint:")]
    assert hints and all(hint in line for line in hints), out


def test_unpaired_mistake_keeps_the_mean_and_fails_on_the_spread(capsys):
    # the difference of means equals the mean of the differences: only the sd and interval tell
    assert not check_paired_interval(unpaired)
    out = capsys.readouterr().out
    assert "mean (3 seeds)" in out and [line for line in out.splitlines()
                                        if line.startswith("mean (3 seeds) ")][0].endswith("ok")
    assert [line for line in out.splitlines() if line.startswith("sd (3 seeds) ")][0].endswith("FAIL")


# --- the write-up ----------------------------------------------------------------------------

ROWS = [dict(a="rope", b="clip-only", length=512, mean=0.3311, low=0.0192, high=0.6431),
        dict(a="rope", b="clip-only", length=256, mean=0.1893, low=-0.0524, high=0.4302),
        dict(a="rope", b="series-only", length=512, mean=0.0524, low=-0.1891, high=0.2938)]

TRUE_WRITE_UP = """Question: does FoPE's clip or its series keep the loss down past N?

Results: rope has a higher loss than clip-only at 8N, +0.331 [+0.019, +0.643].
At 4N rope and clip-only are not separated at this scale (+0.189 [-0.052, +0.430]).
- rope and series-only are not separated at this scale at 8N ([-0.189, +0.294]).

Limits: three seeds are few, and 800 steps is a short training."""


def test_write_up_checker_accepts_a_write_up_that_cites_its_intervals(capsys):
    assert check_write_up(TRUE_WRITE_UP, ROWS)
    out = capsys.readouterr().out
    assert "write_up: all ok" in out and "FAIL" not in out


def test_write_up_checker_reports_the_template_as_not_done(capsys):
    assert not check_write_up("Results: ...\nLimits: ...", ROWS)
    assert "not done yet" in capsys.readouterr().out


def test_a_comparison_without_an_interval_fails(capsys):
    assert not check_write_up("Results: clip-only is better than rope past N.", ROWS)
    assert "compares variants without an interval" in capsys.readouterr().out


def test_a_difference_claimed_from_an_interval_containing_zero_fails(capsys):
    assert not check_write_up("Results: clip-only is lower than rope at 4N (+0.189 [-0.052, +0.430]).", ROWS)
    assert "compares variants without an interval that excludes zero" in capsys.readouterr().out


def test_an_interval_the_experiment_did_not_print_fails(capsys):
    assert not check_write_up("Results: rope is higher than clip-only at 8N [+0.020, +0.700].", ROWS)
    assert "is not one of the intervals the experiment printed" in capsys.readouterr().out


def test_an_interval_quoted_with_its_sign_turned_is_named(capsys):
    assert not check_write_up("Results: clip-only is lower than rope at 8N [-0.643, -0.019].", ROWS)
    assert "sign turned" in capsys.readouterr().out


def test_not_separated_with_only_separated_intervals_is_a_contradiction(capsys):
    text = f"Results: rope and clip-only are {NOT_SEPARATED} at 8N [+0.019, +0.643]."
    assert not check_write_up(text, ROWS)
    assert "cites only intervals that exclude zero" in capsys.readouterr().out


def test_a_write_up_that_compares_nothing_fails(capsys):
    assert not check_write_up("Results: the losses are in the table.", ROWS)
    assert "no sentence compares the variants" in capsys.readouterr().out


def test_sentences_are_cut_at_full_stops_but_not_at_decimal_points():
    assert sentences("Loss 2.203 at 4N. Rope is 2.391.\n- a bullet") == ["Loss 2.203 at 4N.", "Rope is 2.391.",
                                                                         "a bullet"]


def test_questions_and_the_quoted_hypothesis_are_not_claims(capsys):
    text = ("Question: FoPE clips the frequencies below 2*pi/N. Is clip-only lower than rope past N?\n"
            "Hypothesis (written before the run): clip-only will be lower than rope at 8N.\n"
            "Results: rope has a higher loss than clip-only at 8N, +0.331 [+0.019, +0.643].")
    assert check_write_up(text, ROWS)
    assert "1 sentence(s) compare variants" in capsys.readouterr().out


def test_a_claim_after_the_hypothesis_is_checked(capsys):
    text = ("Hypothesis: clip-only will be lower than rope at 8N.\n\n"
            "The hypothesis: it held, clip-only is lower than rope.")
    assert not check_write_up(text, ROWS)
    assert "compares variants without an interval" in capsys.readouterr().out
