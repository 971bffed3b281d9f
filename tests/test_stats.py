"""The lab's intervals on cases with known answers (stats.py)."""

import math

import numpy as np
import pytest

from minifope import stats


def test_t_interval_by_hand_and_with_one_value():
    r = stats.t_interval([2.0, 4.0, 6.0, 8.0])  # mean 5, sd sqrt(20/3) = 2.58199, t(0.975, 3) = 3.182446
    assert r["mean"] == 5.0 and r["sd"] == pytest.approx(math.sqrt(20 / 3))
    half = 3.182446305284263 * math.sqrt(20 / 3) / 2
    assert (r["low"], r["high"]) == (pytest.approx(5 - half), pytest.approx(5 + half))
    assert stats.t_interval([1.7]) == dict(n=1, mean=1.7, sd=None, low=None, high=None)


def test_wilson_interval_by_hand():
    # k = 8, n = 10, z = 1.959964: centre (0.8 + z^2/20) / (1 + z^2/10), half-width
    # z / (1 + z^2/10) * sqrt(0.8 * 0.2 / 10 + z^2 / 400)
    z = 1.959963984540054
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z / (1 + z * z / 10) * math.sqrt(0.016 + z * z / 400)
    assert stats.wilson_interval(8, 10) == (pytest.approx(centre - half), pytest.approx(centre + half))


def test_an_all_correct_cell_has_an_interval_inside_zero_one_that_is_not_a_point():
    r = stats.accuracy_interval(np.ones((3, 32)))
    assert r["mean"] == 1.0 and r["sd"] == 0.0 and r["high"] == 1.0
    # the Wilson lower bound of 96 of 96: 1 / (1 + z^2 / 96)
    assert r["low"] == pytest.approx(1 / (1 + 1.959963984540054 ** 2 / 96))
    r = stats.accuracy_interval(np.zeros((1, 32)))
    assert r["low"] == 0.0 and 0 < r["high"] < 0.15 and r["sd"] is None


def test_the_accuracy_interval_widens_with_disagreement_between_seeds():
    # the same pooled accuracy 0.5: seeds that agree, and seeds at 0 and 1
    agree = stats.accuracy_interval(np.tile([0, 1], (4, 16)))
    disagree = stats.accuracy_interval(np.repeat([[0], [1], [0], [1]], 32, axis=1))
    assert agree["mean"] == disagree["mean"] == 0.5
    assert disagree["sd"] == pytest.approx(math.sqrt(1 / 3)) and agree["sd"] == 0.0
    assert disagree["high"] - disagree["low"] > 2 * (agree["high"] - agree["low"])
    assert 0 <= disagree["low"] and disagree["high"] <= 1


def test_paired_differences_separate_only_what_they_should():
    d = stats.paired_difference([1.0, 2.0, 3.0], [0.5, 1.6, 2.4])  # differences 0.5, 0.4, 0.6
    assert d["mean"] == pytest.approx(0.5) and d["separated"]
    assert (d["low"], d["high"]) == (pytest.approx(0.5 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-6),
                                     pytest.approx(0.5 + 4.302653 * 0.1 / math.sqrt(3), abs=1e-6))
    assert not stats.paired_difference([1.0, 2.0, 3.0], [1.1, 1.9, 3.05])["separated"]
    a = np.ones((3, 40))
    assert stats.paired_accuracy_difference(a, a) == dict(mean=0.0, low=0.0, high=0.0, separated=False)
    assert stats.paired_accuracy_difference(a, np.zeros((3, 40)))["separated"]
    # pairs are kept: b is a with one prompt per seed flipped, so the difference is small and sure
    b = a.copy()
    b[:, 0] = 0
    d = stats.paired_accuracy_difference(a, b)
    assert d["mean"] == pytest.approx(1 / 40) and 0 <= d["low"] and d["high"] <= 0.1
    with pytest.raises(ValueError):
        stats.paired_accuracy_difference(a, np.ones((2, 40)))


def test_accuracy_by_group_splits_the_prompts_and_reads_zero_when_the_groups_agree():
    # 3 seeds x 10 prompts: the group (4 prompts a seed) all right, the others all wrong
    correct = np.tile([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], (3, 1))
    r = stats.accuracy_by_group(correct, correct.astype(bool))
    assert (r["repeated"]["n"], r["repeated"]["mean"], r["distinct"]["n"], r["distinct"]["mean"]) == (12, 1.0, 18, 0.0)
    assert r["repeated"]["sd"] == 0.0 and r["repeated"]["high"] == 1.0
    assert r["repeated"]["low"] == pytest.approx(stats.wilson_interval(12, 12)[0])  # the hull's Wilson side
    assert r["difference"] == dict(mean=1.0, low=1.0, high=1.0, separated=True)  # every resample: 1 - 0
    # both groups at 0.5 in every seed: the difference interval holds zero
    same = stats.accuracy_by_group(np.tile([0, 1], (3, 40)), np.tile(np.repeat([True, False], 40), (3, 1)))
    assert same["difference"]["mean"] == 0.0 and not same["difference"]["separated"]
    assert same["difference"]["low"] < 0 < same["difference"]["high"]
    # seeds that disagree widen the group's interval: the bootstrap resamples seeds too
    agree = stats.accuracy_by_group(np.tile([0, 1], (4, 16)), np.ones((4, 32), bool))["repeated"]
    disagree = stats.accuracy_by_group(np.repeat([[0], [1], [0], [1]], 32, axis=1), np.ones((4, 32), bool))["repeated"]
    assert agree["mean"] == disagree["mean"] == 0.5 and disagree["sd"] == pytest.approx(math.sqrt(1 / 3))
    assert disagree["high"] - disagree["low"] > 2 * (agree["high"] - agree["low"])
    # an empty group: its accuracy is None and there is no difference
    empty = stats.accuracy_by_group(correct, np.zeros((3, 10), bool), names=("a", "b"))
    assert empty["a"] == dict(n=0, mean=None, sd=None, low=None, high=None) and "difference" not in empty
    with pytest.raises(ValueError):
        stats.accuracy_by_group(correct.ravel(), correct.ravel().astype(bool))
