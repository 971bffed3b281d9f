"""Checkers for lesson 4: FoPE's clip floor, its frequency set and its Fourier-series tables.

    check_clipped_frequencies(fn)   fn(w, N) -> w with the clipped frequencies set to 0, same shape
        clipped: the w whose period 2*pi/w is longer than N, i.e. w < 2*pi/N (a period of
        exactly N is kept, as minifope.fope.fope_frequencies keeps w >= 2*pi/N)
    check_fope_frequencies(fn)   fn(head_dim, theta, N) -> w (F,), the series input
        w_f = theta^(-2f/D) for f < D/2 (D = head_dim here), keeping only w_f >= 2*pi/N
    check_fope_tables(fn)        fn(positions, w, ccos, csin, head_dim) -> COS, SIN (H, T, d/2)
        COS[h, m, j] = sum_f cos(w_f * m) * Ccos[h, f, j]   for j < J, and 1 for j >= J
        SIN[h, m, j] = sum_f sin(w_f * m) * Csin[h, f, j]   for j < J, and 0 for j >= J

References: minifope.fope.fope_frequencies (the zeros put back in place of the dropped
frequencies) and minifope.fope.fope_tables (zero_freq='identity').
"""

import math

import numpy as np

from .. import fope
from .grading import grade, grade_cases


def _clip_as_fope(w, N):
    # w zeroed below the floor with fope.fope_frequencies' own comparison, w >= 2*pi/N kept
    return np.where(w >= 2.0 * math.pi / N, w, 0.0)


def check_clipped_frequencies(fn):
    """Graded on RoPE's frequencies (head_dim 16 at N = 64, head_dim 64 at N = 512, theta 10000),
    against minifope.fope.fope_frequencies with zeros in place of the dropped frequencies, and on
    a hand-made set around the floor of N = 256, one of them exactly 2*pi/N (a period of exactly N).

    N = 256 is a power of two, so 2*pi/N, N*w and 2*pi/w are exact there: w < 2*pi/N and the
    period 2*pi/w > N give the same answer on the boundary.
    """
    cases = []
    theta = 10000.0
    for d, N in ((16, 64), (64, 512)):
        w = theta ** (-2.0 * np.arange(d // 2) / d)
        kept = fope.fope_frequencies(d, theta, N)
        cases.append((f"w N={N} d={d}", (w, N), np.concatenate([kept, np.zeros(d // 2 - len(kept))])))
    N = 256
    w = 2 * math.pi / N * np.array([8.0, 2.0, 1.5, 1.0, 0.75, 0.5, 0.25])
    cases.append((f"w N={N} around the floor", (w, N), _clip_as_fope(w, N)))

    def mistakes(w, N):
        floor = 2 * math.pi / N
        return {
            "the floor is 2*pi/N, from a period 2*pi/w longer than N; N/2 would clip the "
            "frequencies that complete one period but not two": [np.where(w < 2 * floor, 0.0, w)],
            "a period 2*pi/w longer than N means w < 2*pi/N, not w < 1/N: the period of w is "
            "2*pi/w positions, not 1/w": [np.where(w < 1.0 / N, 0.0, w)],
            "a period of exactly N is kept: w = 2*pi/N goes round once in N positions, so the "
            "floor is strict (w < 2*pi/N is clipped, <= is one too many)": [np.where(w <= floor, 0.0, w)],
            "FoPE clips the slow frequencies, the ones below the floor (long periods); you "
            "zeroed the fast ones above it": [np.where(w >= floor, 0.0, w)],
            "keep every pair: set the clipped frequencies to 0 in place (a pair that does not "
            "rotate), do not drop them": [w[w >= floor]],
            "return the frequencies, with 0 where they are clipped, not the mask of the clipped ones":
                [w < floor],
        }

    cases = [(label, args, ref, mistakes(*args)) for label, args, ref in cases]
    return grade_cases("clipped_frequencies", fn, cases, tol=1e-12)


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
