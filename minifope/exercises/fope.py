"""Checkers for lesson 4: FoPE's clipped frequency set and its Fourier-series tables.

    check_fope_frequencies(fn)   fn(head_dim, theta, N) -> w (F,), the series input
        w_f = theta^(-2f/D) for f < D/2 (D = head_dim here), keeping only w_f >= 2*pi/N
    check_fope_tables(fn)        fn(positions, w, ccos, csin, head_dim) -> COS, SIN (H, T, d/2)
        COS[h, m, j] = sum_f cos(w_f * m) * Ccos[h, f, j]   for j < J, and 1 for j >= J
        SIN[h, m, j] = sum_f sin(w_f * m) * Csin[h, f, j]   for j < J, and 0 for j >= J

References: minifope.fope.fope_frequencies and minifope.fope.fope_tables (zero_freq='identity').
"""

import math

import numpy as np

from .. import fope
from .grading import grade, grade_cases


def check_fope_frequencies(fn):
    """Graded at head_dim 32, theta 10000, N = 64 and N = 512."""
    cases = []
    d, theta = 32, 10000.0
    full = theta ** (-2.0 * np.arange(d // 2) / d)
    for N in (64, 512):
        ref = fope.fope_frequencies(d, theta, N)
        mistakes = {
            "the clipped frequencies are dropped from the series input, not kept as zeros: "
            "return only the F frequencies with w_f >= 2*pi/N":
                [np.where(full < 2 * math.pi / N, 0.0, full)],
            "the floor is 2*pi/N (a period of exactly N positions), not 1/N": [full[full >= 1.0 / N]],
            "w_f = theta^(-2f/D) for f = 0 .. D/2 - 1, starting at 1": [full[1:][full[1:] >= 2 * math.pi / N]],
        }
        cases.append((f"w N={N}", (d, theta, N), ref, mistakes))
    return grade_cases("fope_frequencies", fn, cases, tol=1e-12)


def check_fope_tables(fn, seed=0):
    """Graded on H = 2 heads, T = 10 positions, head_dim 16, the frequencies of N = 64 and
    coefficients drawn by minifope.fope.fope_coefficients with sigma = 0.5."""
    rng = np.random.default_rng(seed)
    head_dim, H, N = 16, 2, 64
    w = fope.fope_frequencies(head_dim, 10000.0, N)
    J = fope.fope_num_rotating_pairs(head_dim, len(w))
    ccos, csin = fope.fope_coefficients(rng, H, len(w), J, sigma=0.5)
    positions = np.arange(3, 13, dtype=np.float64)
    cos, sin = fope.fope_tables(positions, w, ccos, csin, head_dim)
    swapped = fope.fope_tables(positions, w, csin, ccos, head_dim)
    angles = positions[:, None] * w[None, :]
    mistakes = {
        "the pairs j >= J do not rotate; minifope gives them the identity, COS = 1 and SIN = 0 "
        "(padding SIN with 1 is the authors' choice, zero_freq='authors')":
            [None, fope.fope_tables(positions, w, ccos, csin, head_dim, zero_freq="authors")[1]],
        "COS uses Ccos and SIN uses Csin: two separate coefficient matrices": list(swapped),
        "the tables have d/2 pairs: pad the J series pairs with the head_dim/2 - J pairs that "
        "do not rotate (COS = 1, SIN = 0)":
            [np.einsum("mf,hfj->hmj", np.cos(angles), ccos), np.einsum("mf,hfj->hmj", np.sin(angles), csin)],
    }
    return grade("fope_tables", fn, (positions, w, ccos, csin, head_dim), ["COS", "SIN"],
                 [cos, sin], tol=1e-10, mistakes=mistakes)
