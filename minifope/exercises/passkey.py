"""Checkers for lesson 9: build a passkey prompt, and score a model's continuation.

    from minifope.exercises.passkey import check_passkey_prompt, check_passkey_score
    check_passkey_prompt(build_prompt)    # against minifope.passkey.make_prompt
    check_passkey_score(is_correct)       # against minifope.passkey.score

Each prints one line per case, saying what differs, then a hint when the answers are those
of a known mistake on every case, then the verdict of grading.py, and returns True only if
every case passes. A stub is reported as not done yet; no checker raises.
"""

import math
import re

import numpy as np

from ..passkey import FILLER, NEEDLE, QUESTION, TASK, first_number, make_prompt, min_prompt_length, score
from .grading import AnswerError, call, verdict

PROMPT_CASES = [(124, 0.0, "12345"), (128, 0.0, "90210"), (128, 1.0, "31415"),
                (160, 0.5, "27182"), (256, 0.25, "16180"), (256, 0.7, "11235")]

SCORE_CASES = [(" 12345.", "12345"), ("12345", "12345"), (" 1234.", "12345"),
               (" 123456.", "12345"), (" is 12345", "12345"), (" 54321 12345", "12345"),
               (" 12a345", "12345"), ("", "12345"), (" 012345.", "12345"), ("\n\n\n", "12345")]


def _grade_each(name, fn, cases, judge, mistakes=None):
    """Call fn(*args) for each (label, args) in cases and print "label ok" or "label FAIL: ...";
    judge(args, answer) -> (ok, what to print). A call that fails is reported and the others
    are still graded, except a failure that would repeat on every case (no function, not
    written yet), which is said once. mistakes: {hint: wrong(*args), a known wrong answer};
    the first hint whose answers equal fn's on every case is printed. Ends with the verdict;
    True if every case passes."""
    ok, answers = True, []
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
        answers.append(answer)
    if not ok and len(answers) == len(cases):
        for hint, wrong in (mistakes or {}).items():
            # one wrong bool says little; the same answers as a known mistake on every case do
            if all(_same(a, wrong(*args)) for a, (_, args) in zip(answers, cases)):
                print(f"  hint: {hint}")
                break
    return verdict(name, ok)


def _same(answer, wrong):
    """Whether the answer is the known wrong one: the same string, or the same bool."""
    if isinstance(wrong, str):
        return isinstance(answer, str) and answer == wrong
    return isinstance(answer, (bool, np.bool_)) and bool(answer) == wrong


def _prompt(length, depth, key, newlines=True, place=round, from_end=False, restart=True, joiner=" ",
            empty_lines=True, format_key=True):
    """make_prompt's string with one step done wrong, for the hints: newlines=False leaves the
    4 newlines out of F, place rounds depth * F, from_end counts a from the question,
    restart=False continues the stream after the needle, joiner joins the sentences,
    empty_lines=False drops the empty parts, format_key=False leaves {key} in the needle."""
    F = length - min_prompt_length(len(key)) + (0 if newlines else 4)
    a = place(depth * F)
    if from_end:
        a = F - a
    stream = joiner.join([FILLER] * (F // len(FILLER) + 1))
    parts = [TASK, stream[:a], NEEDLE.format(key=key) if format_key else NEEDLE,
             stream[:F - a] if restart else stream[a:F], QUESTION]
    return "\n".join(part for part in parts if part or empty_lines)


PROMPT_MISTAKES = {
    "a = round(depth * F): int() and math.floor round down, 21.5 to 21 and 34.75 to 34":
        lambda *args: _prompt(*args, place=math.floor),
    "depth 0 puts the needle right after the task line: a = round(depth * F) filler characters go "
    "before the needle, b = F - a after it":
        lambda *args: _prompt(*args, from_end=True),
    "both filler parts start at the beginning of the sentence stream: the part after the needle is "
    "filler[:b], not the continuation filler[a:a + b]":
        lambda *args: _prompt(*args, restart=False),
    "the filler repeats FILLER joined by a space: ' '.join([FILLER] * n), cut to length":
        lambda *args: _prompt(*args, joiner=""),
    "a filler part of length 0 still has its line: at depth 0 (or 1) an empty line stands between "
    "the task line and the needle (or the needle and the question)":
        lambda *args: _prompt(*args, empty_lines=False),
    "the 4 newlines between the five parts take room too: F = length - min_prompt_length(len(key))":
        lambda *args: _prompt(*args, newlines=False),
    "fill in the key: NEEDLE.format(key=key)":
        lambda *args: _prompt(*args, format_key=False),
}


def check_passkey_prompt(build_prompt):
    """Grade build_prompt(length, depth, key) -> str: a passkey prompt of exactly `length`
    characters with the needle at `depth`, the same string minifope.passkey.make_prompt
    builds (with its default task line), with a hint when the prompts are those of a known
    mistake (a floored depth, the filler restarted or not, the newlines forgotten, ...)."""
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
    return _grade_each("build_prompt", build_prompt, cases, judge, PROMPT_MISTAKES)


def _numbers(text):
    return re.findall(r"[0-9]+", text)


SCORE_MISTAKES = {
    "the first number must be the whole key: ' 123456.' starts with 12345, but its first number is 123456":
        lambda text, key: text.strip().startswith(key),
    "the first number written counts, not any later one: ' 54321 12345' answers 54321":
        lambda text, key: key in text,
    "the first number written counts, not the last: ' 54321 12345' answers 54321":
        lambda text, key: _numbers(text)[-1:] == [key],
    "the first number counts wherever it starts and however long it is: a fixed slice such as "
    "text[1:6] rejects '12345' and ' is 12345', and accepts ' 123456.'":
        lambda text, key: text[1:1 + len(key)] == key,
    "read the first number, and compare only it with the key: '12345' and ' is 12345' are right too":
        lambda text, key: text == f" {key}.",
    "read the first number, and compare only it with the key: the dot in ' 12345.' is not part of it":
        lambda text, key: text.strip() == key,
    "a number is a run of digits: ' 12a345' writes 12, then 345, and its first number is 12":
        lambda text, key: "".join(c for c in text if c.isdigit()) == key,
    "compare the strings, not their values: '012345' is not the key '12345', though int('012345') == 12345":
        lambda text, key: first_number(text) is not None and int(first_number(text)) == int(key),
    "count digits only as part of the first number: [0-9]{5} reads 12345 at the start of ' 123456.'":
        lambda text, key: re.findall("[0-9]{%d}" % len(key), text)[:1] == [key],
    "the whole key must be written: ' 1234.' stops a digit short, and ' 12a345' writes 12":
        lambda text, key: first_number(text) is not None and key.startswith(first_number(text)),
}


def check_passkey_score(is_correct):
    """Grade is_correct(continuation, key) -> bool: True when the first number written in
    the continuation is the key, the rule minifope.passkey.score applies, with a hint when
    the answers are those of a known mistake (startswith, the key anywhere, int(), ...)."""
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
    return _grade_each("is_correct", is_correct, cases, judge, SCORE_MISTAKES)
