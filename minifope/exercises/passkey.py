"""Checkers for lesson 9: build a passkey prompt, and score a model's continuation.

    from minifope.exercises.passkey import check_passkey_prompt, check_passkey_score
    check_passkey_prompt(build_prompt)    # against minifope.passkey.make_prompt
    check_passkey_score(is_correct)       # against minifope.passkey.score

Each prints one line per case, saying what differs, then the verdict of grading.py, and
returns True only if every case passes. A stub is reported as not done yet; no checker raises.
"""

import numpy as np

from ..passkey import make_prompt, score
from .grading import AnswerError, call, verdict

PROMPT_CASES = [(124, 0.0, "12345"), (128, 0.0, "90210"), (128, 1.0, "31415"),
                (160, 0.5, "27182"), (256, 0.25, "16180"), (256, 0.7, "11235")]

SCORE_CASES = [(" 12345.", "12345"), ("12345", "12345"), (" 1234.", "12345"),
               (" 123456.", "12345"), (" is 12345", "12345"), (" 54321 12345", "12345"),
               (" 12a345", "12345"), ("", "12345"), (" 012345.", "12345"), ("\n\n\n", "12345")]


def _grade_each(name, fn, cases, judge):
    """Call fn(*args) for each (label, args) in cases and print "label ok" or "label FAIL: ...";
    judge(args, answer) -> (ok, what to print). A call that fails is reported and the others
    are still graded, except a failure that would repeat on every case (no function, not
    written yet), which is said once. Ends with the verdict; True if every case passes."""
    ok = True
    for label, args in cases:
        try:
            answer = call(name, fn, *args)
        except AnswerError as e:
            ok = False
            if e.final:
                print(f"FAIL  {e}")
                break
            print(f"{label} FAIL: {e}")
            continue
        passed, message = judge(args, answer)
        print(f"{label} {message}")
        ok &= passed
    return verdict(name, ok)


def check_passkey_prompt(build_prompt):
    """Grade build_prompt(length, depth, key) -> str: a passkey prompt of exactly `length`
    characters with the needle at `depth`, the same string minifope.passkey.make_prompt
    builds (with its default task line)."""
    def judge(args, mine):
        ref, _ = make_prompt(*args)
        if not isinstance(mine, str):
            return False, f"FAIL: expected a str, got {type(mine).__name__}"
        if mine == ref:
            return True, "ok"
        at = next((i for i, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
        where = f"first difference at character {at}: yours {mine[at:at + 12]!r}, expected {ref[at:at + 12]!r}"
        size = "" if len(mine) == len(ref) else f"; {len(mine)} characters, expected {len(ref)}"
        return False, f"FAIL: {where}{size}"

    cases = [(f"length {length}, depth {depth}, key {key}:", (length, depth, key))
             for length, depth, key in PROMPT_CASES]
    return _grade_each("build_prompt", build_prompt, cases, judge)


def check_passkey_score(is_correct):
    """Grade is_correct(continuation, key) -> bool: True when the first number written in
    the continuation is the key, the rule minifope.passkey.score applies."""
    def judge(args, mine):
        continuation, key = args
        ref = score([continuation], [key]) == 1.0
        if not isinstance(mine, (bool, np.bool_)):
            return False, f"FAIL: expected True or False, got {type(mine).__name__} {mine!r}"
        if bool(mine) == ref:
            return True, f"{bool(mine)}  ok"
        return False, f"{mine}, expected {ref}  FAIL"

    cases = [(f"is_correct({continuation!r}, {key!r}):", (continuation, key))
             for continuation, key in SCORE_CASES]
    return _grade_each("is_correct", is_correct, cases, judge)
