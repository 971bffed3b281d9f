"""Checkers for lesson 8: build a passkey prompt, and score a model's continuation.

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


def check_passkey_prompt(build_prompt):
    """Grade build_prompt(length, depth, key) -> str: a passkey prompt of exactly `length`
    characters with the needle at `depth`, the same string minifope.passkey.make_prompt
    builds (with its default task line)."""
    ok = True
    for length, depth, key in PROMPT_CASES:
        ref, _ = make_prompt(length, depth, key)
        label = f"length {length}, depth {depth}, key {key}:"
        try:
            mine = call("build_prompt", build_prompt, length, depth, key)
        except AnswerError as e:
            ok = False
            if e.final:  # the same on every case: said once
                print(f"FAIL  {e}")
                break
            print(f"{label} FAIL: {e}")
            continue
        if not isinstance(mine, str):
            print(f"{label} FAIL: expected a str, got {type(mine).__name__}")
            ok = False
        elif mine == ref:
            print(f"{label} ok")
        else:
            at = next((i for i, (a, b) in enumerate(zip(mine, ref)) if a != b), min(len(mine), len(ref)))
            where = f"first difference at character {at}: yours {mine[at:at + 12]!r}, expected {ref[at:at + 12]!r}"
            size = "" if len(mine) == len(ref) else f"; {len(mine)} characters, expected {len(ref)}"
            print(f"{label} FAIL: {where}{size}")
            ok = False
    return verdict("build_prompt", ok)


def check_passkey_score(is_correct):
    """Grade is_correct(continuation, key) -> bool: True when the first number written in
    the continuation is the key, the rule minifope.passkey.score applies."""
    ok = True
    for continuation, key in SCORE_CASES:
        ref = score([continuation], [key]) == 1.0
        label = f"is_correct({continuation!r}, {key!r}):"
        try:
            mine = call("is_correct", is_correct, continuation, key)
        except AnswerError as e:
            ok = False
            if e.final:  # the same on every case: said once
                print(f"FAIL  {e}")
                break
            print(f"{label} FAIL: {e}")
            continue
        if not isinstance(mine, (bool, np.bool_)):
            print(f"{label} FAIL: expected True or False, got {type(mine).__name__} {mine!r}")
            ok = False
        elif bool(mine) == ref:
            print(f"{label} {bool(mine)}  ok")
        else:
            print(f"{label} {mine}, expected {ref}  FAIL")
            ok = False
    return verdict("is_correct", ok)
