"""ALiBi, attention with linear biases (Press et al., "Train Short, Test Long"; fope-spec section 4).

No rotation: head h adds a penalty linear in the distance to the logit of every key
n <= m it may attend to,

    s(m, n) = q_m . k_n / sqrt(d)  -  slope_h * (m - n)

Slopes for H heads, H a power of two: the geometric sequence that starts at 2^(-8/H) and
has ratio 2^(-8/H) (H = 8: 1/2, 1/4, ..., 1/256). For other H: the c = 2^floor(log2 H)
slopes of the power-of-two case, then the first H - c of every second slope of the 2c
case, slopes(2c)[0::2].
"""

import math

import numpy as np

from .embedding import PositionEmbedding


def _power_of_two_slopes(H):
    ratio = 2.0 ** (-8.0 / H)
    return ratio ** np.arange(1, H + 1, dtype=np.float64)


def alibi_slopes(n_head):
    """slope_h for h = 0 .. n_head-1, as in fope-spec section 4 (float64)."""
    if n_head <= 0:
        raise ValueError(f"n_head must be positive, got {n_head}")
    c = 2 ** int(math.floor(math.log2(n_head)))
    slopes = _power_of_two_slopes(c)
    if c < n_head:
        extra = _power_of_two_slopes(2 * c)[0::2][: n_head - c]
        slopes = np.concatenate([slopes, extra])
    return slopes


def alibi_bias(slopes, q_positions, k_positions):
    """bias[h, m, n] = -slope_h * (m - n): slopes (H,), positions (Tq,), (Tk,) -> (H, Tq, Tk).

    Only keys n <= m are ever attended to; the causal mask handles the rest.
    """
    distance = (np.asarray(q_positions, dtype=np.float64)[:, None]
                - np.asarray(k_positions, dtype=np.float64)[None, :])
    return -np.asarray(slopes)[:, None, None] * distance[None, :, :]


class ALiBi(PositionEmbedding):
    """pe='alibi': no rotation; attention adds alibi_bias(slopes, m, n) to the scores of every
    block (attention.py), slopes = alibi_slopes(n_head). No weights of its own."""

    def __init__(self, config):
        super().__init__(config)
        self.slopes = alibi_slopes(config.n_head)
