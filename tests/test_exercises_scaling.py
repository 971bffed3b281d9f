"""The checkers of lesson 6 (extending RoPE) accept the right answer and reject realistic wrong ones.

A right answer is derived here by hand (or read off minifope.rope_scaling); a wrong answer is a
mistake a student makes. Each test asserts the checker's verdict and that its hint names the mistake.
"""

import math

import numpy as np
import pytest

from minifope import rope_scaling
from minifope.exercises import scaling
from minifope.rope import rope_frequencies


def not_done(*args):
    raise NotImplementedError


# --- right answers ----------------------------------------------------------------------------

def ntk_theta_right(theta, head_dim, s):
    # w'_{d/2-1} = theta'^(-(d-2)/d) = theta^(-(d-2)/d) / s, solved for theta'
    return theta * s ** (head_dim / (head_dim - 2))


def yarn_right(head_dim, theta, N, s, turn=2 * math.pi, rounded=True, clamped=True, keep_low=True):
    def j_of(b):  # N * theta^(-2j/d) = turn * b, solved for j
        return head_dim * math.log(N / (turn * b)) / (2 * math.log(theta))

    low, high = j_of(32), j_of(1)
    if rounded:
        low, high = math.floor(low), math.ceil(high)
    if clamped:
        low, high = max(low, 0), min(high, head_dim - 1)
    gamma = 1 - np.clip((np.arange(head_dim // 2) - low) / (high - low), 0, 1)
    if not keep_low:
        gamma = 1 - gamma
    w = rope_frequencies(head_dim, theta)
    return gamma, (1 - gamma) * w / s + gamma * w


def yarn_from_the_library(head_dim, theta, N, s):
    gamma = rope_scaling.yarn_index_ramp(head_dim, theta, N)
    return gamma, rope_scaling.scaled_rope_frequencies(head_dim, theta, "yarn", s, N)


def prediction_right(kind):
    # d = 16, N = 256: pair j turns less than once within N for j > d ln(N / 2 pi) / (2 ln theta) = 3.22
    short = list(range(4, 8))
    return {"none": short, "pi": [], "ntk": short[:-1], "yarn": []}[kind]


def prediction_as_mask(kind):
    return np.isin(np.arange(8), prediction_right(kind))


RIGHT = [
    (scaling.check_ntk_theta, ntk_theta_right),
    (scaling.check_ntk_theta, lambda theta, d, s: np.array([ntk_theta_right(theta, d, s)])),
    (scaling.check_yarn_ramp, yarn_right),
    (scaling.check_yarn_ramp, yarn_from_the_library),
    (scaling.check_unseen_prediction, prediction_right),
    (scaling.check_unseen_prediction, prediction_as_mask),
]


@pytest.mark.parametrize("check, answer", RIGHT, ids=lambda x: getattr(x, "__name__", ""))
def test_checker_accepts_the_right_answer(check, answer, capsys):
    assert check(answer) is True
    out = capsys.readouterr().out
    assert "all ok" in out and "FAIL" not in out


def test_the_prediction_checker_grades_what_the_library_computes():
    d, theta, N, s = 16, 10000.0, 256, 4.0
    w = rope_frequencies(d, theta)
    for kind in ("none", "pi", "ntk", "yarn"):
        unseen = scaling.unseen_pairs(w, rope_scaling.scaled_rope_frequencies(d, theta, kind, s, N), N, 4 * N)
        assert list(np.flatnonzero(unseen)) == prediction_right(kind), kind


# --- wrong answers: (checker, wrong answer, words the output must contain) -----------------------

def yarn_blend_swapped(head_dim, theta, N, s):
    gamma, _ = yarn_right(head_dim, theta, N, s)
    w = rope_frequencies(head_dim, theta)
    return gamma, gamma * w / s + (1 - gamma) * w


def yarn_papers_ramp(head_dim, theta, N, s):
    w = rope_frequencies(head_dim, theta)
    gamma = np.clip((N * w / (2 * math.pi) - 1) / 31, 0, 1)
    return gamma, (1 - gamma) * w / s + gamma * w


def prediction(**answers):
    return lambda kind: answers.get(kind, prediction_right(kind))


WRONG = [
    (scaling.check_ntk_theta, lambda theta, d, s: theta * s, "there is no pair j = d/2"),
    (scaling.check_ntk_theta, lambda theta, d, s: theta * s ** ((d - 2) / d), "-d/(d-2)"),
    (scaling.check_ntk_theta, lambda theta, d, s: theta / s ** (d / (d - 2)), "you divided"),
    (scaling.check_ntk_theta, lambda theta, d, s: [theta, theta], "size 1"),
    (scaling.check_ntk_theta, not_done, "not done yet"),
    (scaling.check_yarn_ramp, lambda *a: yarn_right(*a, keep_low=False), "share of w_j KEPT"),
    (scaling.check_yarn_ramp, yarn_blend_swapped, "gamma_j multiplies the kept w_j"),
    (scaling.check_yarn_ramp, yarn_papers_ramp, "the YaRN paper's ramp"),
    (scaling.check_yarn_ramp, lambda *a: yarn_right(*a, rounded=False), "round the boundaries outward"),
    (scaling.check_yarn_ramp, lambda *a: yarn_right(*a, clamped=False), "max(floor(j(32)), 0)"),
    (scaling.check_yarn_ramp, lambda *a: yarn_right(*a, turn=1.0), "the 2 pi included"),
    (scaling.check_yarn_ramp, lambda *a: yarn_right(*a)[0], "must return 2 arrays"),
    (scaling.check_unseen_prediction, prediction(none=[5, 6, 7]), "not with 1"),
    (scaling.check_unseen_prediction, prediction(none=list(range(8))), "repeats them"),
    (scaling.check_unseen_prediction, prediction(pi=[4, 5, 6, 7]), "exactly the training range"),
    (scaling.check_unseen_prediction, prediction(ntk=[]), "s^(1 - 2j/(d-2))"),
    (scaling.check_unseen_prediction, prediction(ntk=[4, 5, 6, 7]), "divided by exactly s"),
    (scaling.check_unseen_prediction, prediction(yarn=[0, 1, 2, 3]), "in full or in part"),
    (scaling.check_unseen_prediction, prediction(yarn=[1, 2, 3]), "on YaRN's ramp"),
    (scaling.check_unseen_prediction, prediction(yarn=[4, 5, 6, 7]), "interpolated like PI"),
    (scaling.check_unseen_prediction, prediction(none=[4, 5, 6, 8]), "run from 0 to 7"),
    (scaling.check_unseen_prediction, not_done, "not done yet"),
]


@pytest.mark.parametrize("check, answer, words", WRONG, ids=[f"{c.__name__}-{w}" for c, _, w in WRONG])
def test_checker_rejects_a_wrong_answer_and_says_why(check, answer, words, capsys):
    assert check(answer) is False
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert words in out, out


def test_an_unwritten_answer_is_reported_once_without_an_empty_table(capsys):
    for check in (scaling.check_ntk_theta, scaling.check_yarn_ramp, scaling.check_unseen_prediction):
        assert check(not_done) is False
        out = capsys.readouterr().out
        assert out.count("not done yet") == 1 and "tensor" not in out
