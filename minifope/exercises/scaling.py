"""Checkers for lesson 6: extending RoPE past the training length N to L = s * N.

    check_ntk_theta(fn)          fn(theta, head_dim, s) -> theta' (a float)
        the base whose frequencies keep w_0 = 1 and divide the lowest, w_{d/2-1}, by s:
        theta' = theta * s^(d / (d - 2))
    check_yarn_ramp(fn)          fn(head_dim, theta, N, s) -> gamma (d/2,), w' (d/2,)
        the index ramp: j(b) = d * ln(N / (2*pi*b)) / (2 * ln theta),
        low = max(floor(j(32)), 0), high = min(ceil(j(1)), d - 1),
        gamma_j = 1 - clip((j - low) / (high - low), 0, 1),  w'_j = (1 - gamma_j) * w_j / s + gamma_j * w_j
    check_unseen_prediction(fn)  fn(scaling) -> the pairs j that meet angles never seen in training,
        at d = 16, theta = 10000, N = 256, L = 4N, for scaling 'none' | 'pi' | 'ntk' | 'yarn':
        the pairs that turn less than once within N (N * w_j < 2*pi) and reach further at L than
        in training (L * w'_j > N * w_j)

References: minifope.rope_scaling (ntk_frequencies, yarn_index_ramp, yarn_frequencies,
scaled_rope_frequencies) and minifope.rope.rope_frequencies.
"""

import math

import numpy as np

from .. import rope_scaling
from ..rope import rope_frequencies
from .grading import grade_cases

# --- NTK-aware scaling: the new base -----------------------------------------------------------

NTK_CASES = ((10000.0, 8, 4.0), (10000.0, 64, 4.0), (10000.0, 16, 16.0), (500000.0, 128, 8.0))


def check_ntk_theta(fn):
    """Graded on (theta, d, s) = (1e4, 8, 4), (1e4, 64, 4), (1e4, 16, 16), (5e5, 128, 8): theta'
    itself, and the frequencies it gives against minifope.rope_scaling.ntk_frequencies."""

    def answer(theta, head_dim, s):
        theta_prime = np.asarray(fn(theta, head_dim, s), dtype=np.float64).item()
        return theta_prime, rope_frequencies(head_dim, theta_prime)

    cases = []
    for theta, d, s in NTK_CASES:
        ref = (theta * s ** (d / (d - 2)), rope_scaling.ntk_frequencies(d, theta, s))

        def wrong(theta_prime):
            return [theta_prime, rope_frequencies(d, theta_prime)]

        mistakes = {
            "the lowest frequency is w_{d/2-1} = theta^(-(d-2)/d), the last pair; its exponent is not -1 "
            "(there is no pair j = d/2): theta * s divides it by s^((d-2)/d), not by s":
                wrong(theta * s),
            "solve theta'^(-(d-2)/d) = theta^(-(d-2)/d) / s for theta': raise both sides to the power "
            "-d/(d-2), which gives the exponent d/(d-2) on s, not (d-2)/d":
                wrong(theta * s ** ((d - 2) / d)),
            "a larger base gives lower frequencies: to divide the lowest frequency by s, multiply "
            "theta by a power of s (you divided)":
                wrong(theta / s ** (d / (d - 2))),
        }
        cases.append((f"d={d}, s={s:g}", (theta, d, s), ref, mistakes))
    return grade_cases("ntk_theta", answer, cases, tol=1e-10, outputs=["theta'", "w'"])


# --- YaRN: the ramp and the scaled frequencies --------------------------------------------------

YARN_CASES = ((64, 10000.0, 512, 4.0), (16, 10000.0, 256, 4.0), (16, 10000.0, 64, 16.0),
              (128, 500000.0, 8192, 8.0))


def _index_ramp(d, theta, N, fast, slow, rounded=True, clamped=True, turn=2.0 * math.pi):
    # the ramp with one of its steps left out, for the hints
    def j_of(b):
        return d * math.log(N / (turn * b)) / (2.0 * math.log(theta))

    low, high = j_of(fast), j_of(slow)
    if rounded:
        low, high = math.floor(low), math.ceil(high)
    if clamped:
        low, high = max(low, 0), min(high, d - 1)
    if high == low:
        high += 0.001
    return 1.0 - np.clip((np.arange(d // 2) - low) / (high - low), 0.0, 1.0)


def check_yarn_ramp(fn):
    """Graded on (d, theta, N, s) = (64, 1e4, 512, 4), (16, 1e4, 256, 4), (16, 1e4, 64, 16),
    (128, 5e5, 8192, 8): gamma against minifope.rope_scaling.yarn_index_ramp and w' against
    scaled_rope_frequencies(..., 'yarn', ...)."""
    fast, slow = rope_scaling.YARN_BETA_FAST, rope_scaling.YARN_BETA_SLOW
    cases = []
    for d, theta, N, s in YARN_CASES:
        w = rope_frequencies(d, theta)
        ref = (rope_scaling.yarn_index_ramp(d, theta, N),
               rope_scaling.scaled_rope_frequencies(d, theta, "yarn", s, N))

        def wrong(gamma):
            return [gamma, rope_scaling.yarn_frequencies(w, s, gamma)]

        mistakes = {
            "w'_j = (1 - gamma_j) * w_j / s + gamma_j * w_j: gamma_j multiplies the kept w_j, "
            "1 - gamma_j the interpolated w_j / s":
                [ref[0], rope_scaling.yarn_frequencies(w, s, 1.0 - ref[0])],
            "gamma_j is the share of w_j KEPT: 1 for the fast pairs (small j, many turns within N), "
            "0 for the slow ones: gamma_j = 1 - clip((j - low) / (high - low), 0, 1)":
                wrong(1.0 - ref[0]),
            "that is the YaRN paper's ramp, linear in the turns r_j = N w_j / (2 pi); this one is "
            "linear in the pair index j, between the indices where r_j = 32 and r_j = 1":
                wrong(rope_scaling.yarn_ramp(w, N)),
            "round the boundaries outward before ramping: low = floor(j(32)), high = ceil(j(1))":
                wrong(_index_ramp(d, theta, N, fast, slow, rounded=False)),
            "low = max(floor(j(32)), 0): when even w_0 turns fewer than 32 times within N, j(32) is "
            "negative and the ramp starts at pair 0":
                wrong(_index_ramp(d, theta, N, fast, slow, clamped=False)),
            "a pair turns r_j = N w_j / (2 pi) times within N (one turn every 2 pi / w_j positions): "
            "solve N w_j = 2 pi b for j, the 2 pi included":
                wrong(_index_ramp(d, theta, N, fast, slow, turn=1.0)),
            "beta_fast = 32 turns is the fast end, at the smaller j: low = floor(j(32)), high = ceil(j(1))":
                wrong(_index_ramp(d, theta, N, slow, fast)),
        }
        cases.append((f"d={d}, N={N}", (d, theta, N, s), ref, mistakes))
    return grade_cases("yarn_ramp", fn, cases, tol=1e-10, outputs=["gamma", "w'"])


# --- which pairs meet angles never seen in training ---------------------------------------------

PREDICTION = dict(head_dim=16, theta=10000.0, N=256, s=4.0)


def unseen_pairs(w, w_scaled, N, L):
    """True for the pairs that turn less than once within N and reach a larger angle at L:
    N * w_j < 2*pi and L * w'_j > N * w_j (PI's equality, up to rounding, is not larger)."""
    w, w_scaled = np.asarray(w), np.asarray(w_scaled)
    return (N * w < 2.0 * math.pi) & (L * w_scaled > N * w * (1.0 + 1e-9))


def _as_mask(pairs, n_pairs):
    pairs = np.asarray(pairs)
    if pairs.dtype == bool and pairs.shape == (n_pairs,):
        return pairs.astype(float)
    pairs = pairs.ravel()
    if pairs.size and not np.issubdtype(pairs.dtype, np.integer):
        if not np.all(pairs == np.round(pairs)):
            raise ValueError(f"expected pair indices (integers 0 .. {n_pairs - 1}), got {pairs.tolist()}")
        pairs = pairs.astype(int)
    if np.any((pairs < 0) | (pairs >= n_pairs)):
        raise ValueError(f"pair indices run from 0 to {n_pairs - 1}, got {pairs.tolist()}")
    mask = np.zeros(n_pairs)
    mask[pairs.astype(int)] = 1.0
    return mask


def check_unseen_prediction(fn):
    """fn(scaling) -> the list of pairs j that meet angles never seen in training at L = 4N,
    for d = 16, theta = 10000, N = 256; graded as 0/1 masks over j = 0 .. 7 for 'none', 'pi',
    'ntk' and 'yarn' (the index ramp)."""
    d, theta, N, s = PREDICTION["head_dim"], PREDICTION["theta"], PREDICTION["N"], PREDICTION["s"]
    L = int(s * N)
    w = rope_frequencies(d, theta)
    short = N * w < 2.0 * math.pi  # less than one turn within N
    all_pairs = np.ones(d // 2)
    gamma = rope_scaling.yarn_index_ramp(d, theta, N)

    def answer(scaling):
        return _as_mask(fn(scaling), d // 2)

    turn_hint = ("a pair has seen every angle iff it turns at least once within N: N w_j >= 2 pi "
                 f"(here j <= {int(np.sum(~short)) - 1}); past N it only repeats them")
    mistakes = {
        "none": {
            "compare N w_j with 2 pi (one full turn), not with 1": [(N * w < 1.0).astype(float)],
            turn_hint: [all_pairs],
        },
        "pi": {
            "PI divides every w_j by s, and L = s N: (w_j / s) * s N = w_j N, exactly the training range":
                [short.astype(float)],
            turn_hint: [all_pairs],
        },
        "ntk": {
            "NTK divides w_j by s^(2j/(d-2)), less than s for every pair but the last: at L = s N pair j "
            "reaches s^(1 - 2j/(d-2)) times its training range":
                [np.zeros(d // 2)],
            "the lowest pair, j = d/2 - 1, is divided by exactly s: at L = s N it reaches exactly its "
            "training range":
                [short.astype(float)],
        },
        "yarn": {
            "the pairs YaRN keeps in full or in part (gamma_j > 0) all turn at least once within N, so "
            "they have seen every angle":
                [(gamma > 0).astype(float)],
            "the pairs on YaRN's ramp (0 < gamma_j < 1) all turn at least once within N, so they have "
            "seen every angle, however far they reach at L":
                [((gamma > 0) & (gamma < 1)).astype(float)],
            "YaRN's ramp is 0 from high = ceil(j(1)) on, and j(1) is where a pair turns once: every pair "
            "that turns less than once within N is interpolated like PI":
                [short.astype(float)],
        },
    }
    cases = []
    for scaling in ("none", "pi", "ntk", "yarn"):
        ref = unseen_pairs(w, rope_scaling.scaled_rope_frequencies(d, theta, scaling, s, N), N, L)
        cases.append((f"unseen ({scaling})", (scaling,), ref.astype(float), mistakes[scaling]))
    return grade_cases("unseen_prediction", answer, cases, tol=0.0)
