"""Checkers for lesson 5: ALiBi's slopes and its bias.

    check_alibi_slopes(fn)   fn(n_head) -> slopes (H,)
        H a power of two: 2^(-8/H), 2^(-16/H), ..., 2^(-8);  otherwise the c = 2^floor(log2 H)
        slopes of the power-of-two case, then slopes(2c)[0::2][:H - c]
    check_alibi_bias(fn)     fn(slopes, q_positions, k_positions) -> bias (H, Tq, Tk)
        bias[h, m, n] = -slope_h * (m - n)

References: minifope.alibi.alibi_slopes and minifope.alibi.alibi_bias.
"""

import numpy as np

from .. import alibi
from .grading import grade, grade_cases

HEADS = (1, 2, 4, 8, 16, 3, 6, 12)


def check_alibi_slopes(fn):
    """Graded for H in 1, 2, 4, 8, 16 (powers of two) and 3, 6, 12 (the interleaving rule)."""
    cases = []
    for H in HEADS:
        ref = alibi.alibi_slopes(H)
        mistakes = {
            f"H = {H} is not a power of two: take the {2 ** int(np.log2(H))} slopes of that power "
            "of two, then every second slope of twice that, slopes(2c)[0::2], for the rest":
                [2.0 ** (-8.0 / H * np.arange(1, H + 1))],
            "the sequence starts at 2^(-8/H) (not at 1): slope_h = 2^(-8(h+1)/H)":
                [2.0 ** (-8.0 / H * np.arange(H))] if H & (H - 1) == 0 else [None],
        }
        cases.append((f"slopes H={H}", (H,), ref, mistakes))
    return grade_cases("alibi_slopes", fn, cases, tol=1e-12)


def check_alibi_bias(fn, seed=0):
    """Graded on the slopes of 4 heads, queries at 5 positions and keys at 8 (from 0 and 40)."""
    slopes = alibi.alibi_slopes(4)
    m = 40 + np.arange(5, dtype=np.float64)
    n = 37 + np.arange(8, dtype=np.float64)
    ref = alibi.alibi_bias(slopes, m, n)
    mistakes = {
        "the bias is a penalty: -slope_h * (m - n) is negative for keys in the past (n < m)": [-ref],
        "the distance is m - n (query minus key): you have n - m, and the sign of the slope flipped "
        "too, or the other way round": [np.abs(ref)],
    }
    return grade("alibi_bias", fn, (slopes, m, n), ["bias"], [ref], tol=1e-12, mistakes=mistakes)
