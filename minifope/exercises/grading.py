"""What every checker shares: call the student's answer safely, compare it tensor by tensor, say why.

A checker never raises on a wrong answer, so a lesson keeps running: it prints the
makemore-style table of `minifope.gradcheck.cmp` (tensor, shape, max |diff|, rel error,
ok/FAIL), then a hint when the answer matches a mistake it knows, and returns True or False.

    ok = grade("softmax_backward", student_fn, (dp, p), names=["ds"], refs=[ds_ref],
               mistakes={"did you forget the -sum_n P dP term?": [p * dp]})
"""

import numpy as np

from ..gradcheck import cmp, relative_error


class AnswerError(Exception):
    """The answer could not be compared: it raised, or returned something of the wrong kind.

    final: the same would happen on any input (no function, or not written yet), so a
    checker that calls it several times stops at the first.
    """

    def __init__(self, message, final=False):
        super().__init__(message)
        self.final = final


def call(name, fn, *args):
    """fn(*args), or AnswerError with a message that says what went wrong and where."""
    if not callable(fn):
        raise AnswerError(f"{name}: expected a function, got {type(fn).__name__}", final=True)
    try:
        with np.errstate(all="ignore"):  # an overflow shows up as a FAIL row, not a warning
            return fn(*args)
    except NotImplementedError:
        raise AnswerError(f"{name}: not done yet (it raises NotImplementedError); "
                          "fill in the body and run the check again", final=True) from None
    except Exception as e:  # the student's bug: report it, keep the notebook running
        raise AnswerError(f"{name} raised {type(e).__name__}: {e}") from None


def as_arrays(name, result, names):
    """The answer as a list of float arrays, one per name in `names`; AnswerError otherwise."""
    if len(names) == 1:
        result = [result]
    elif not isinstance(result, (tuple, list)) or len(result) != len(names):
        got = f"{len(result)} values" if isinstance(result, (tuple, list)) else type(result).__name__
        raise AnswerError(f"{name} must return {len(names)} arrays ({', '.join(names)}), got {got}")
    arrays = []
    for n, r in zip(names, result):
        if r is None:
            raise AnswerError(f"{n} is None: did the function forget to return it?")
        a = np.asarray(r)
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise AnswerError(f"{n} must be a numeric array, got {type(r).__name__} of {a.dtype}")
        arrays.append(a)
    return arrays


def matches(mine, candidate, tol):
    """Same shape, non-finite in the same places (an overflow matches an overflow), the rest within tol."""
    mine, candidate = np.asarray(mine), np.asarray(candidate)
    if mine.shape != candidate.shape:
        return False
    finite = np.isfinite(candidate)
    return bool(np.array_equal(np.isfinite(mine), finite) and relative_error(mine[finite], candidate[finite]) <= tol)


def known_mistake(mine, refs, mistakes, tol):
    """The first hint of mistakes ({hint: [wrong array or None, one per output]}) whose arrays all
    match the outputs in `mine` that miss their ref; None if there is none.

    Matching is within 1e-6, or within 1% of the wrong array's own distance from the reference
    where that is tighter, so that two mistakes which both stay close to the reference (eps
    placed in two wrong ways) are told apart.
    """
    def near(m, w, r):
        gap = relative_error(w, r) if np.shape(w) == np.shape(r) else np.inf
        return matches(m, w, min(1e-6, 0.01 * gap) if np.isfinite(gap) else 1e-6)

    for hint, wrong in (mistakes or {}).items():
        triples = [(m, w, r) for m, w, r in zip(mine, wrong, refs) if w is not None and not matches(m, r, tol)]
        if triples and all(near(m, w, r) for m, w, r in triples):
            return hint
    return None


HEADER = f"{'tensor':<28} {'shape':<16} {'max |diff|':>12} {'rel error':>12}   status"


def rows(name, fn, args, names, refs, tol, mistakes=None, shown=None):
    """Run fn(*args) and print one row per output and a hint; True if all within tol.

    The table's header is printed before the first row, once per `shown` (a dict shared by
    the calls of one table), so an answer that could not be compared prints no empty table.
    """
    try:
        mine = as_arrays(name, call(name, fn, *args), names)
        for n, a, r in zip(names, mine, refs):
            if np.iscomplexobj(a) and not np.iscomplexobj(r):
                raise AnswerError(f"{n} is complex, but the answer is real: take its real part")
    except AnswerError as e:
        print(f"FAIL  {e}")
        if shown is not None:
            shown["stop"] = e.final
        return False
    shown = {} if shown is None else shown
    if not shown.get("header"):
        print(HEADER)
        shown["header"] = True
    ok = True
    for n, a, r in zip(names, mine, refs):
        ok &= cmp(n, a, r, tol)
    hint = None if ok else known_mistake(mine, refs, mistakes, tol)
    if hint:
        print(f"  hint: {hint}")
    return ok


def grade(name, fn, args, names, refs, tol=1e-8, mistakes=None):
    """Run fn(*args), compare its outputs `names` with `refs`, print the table and a verdict.

    mistakes: {hint: [arrays a known wrong answer would give, one per name, or None to skip]};
    the first hint whose arrays all match (within 1e-6) the wrong outputs is printed.
    Returns True only if every output is within tol.
    """
    return verdict(name, rows(name, fn, args, names, refs, tol, mistakes))


def grade_cases(name, fn, cases, tol=1e-8, outputs=None):
    """One table for several calls of fn: cases = [(label, args, ref, mistakes)].

    With one output per call, the row of each case is named by its label (e.g. "slopes H=6").
    With several, `outputs` names them, ref holds one array per output, and each row is named
    "output (label)" (e.g. "m (t=7)"). True if every case passes.
    """
    ok, shown = True, {}
    for label, args, ref, mistakes in cases:
        if outputs is None:
            names, refs = [label], [ref]
        else:
            names, refs = [f"{o} ({label})" for o in outputs], ref
        ok &= rows(name, fn, args, names, refs, tol, mistakes, shown)
        if shown.get("stop"):
            break
    return verdict(name, ok)


def verdict(name, ok):
    print(f"{name}: {'all ok' if ok else 'FAIL'}")
    return ok
