"""The sinusoidal absolute position embedding (Vaswani et al. 2017, "Attention Is All You Need", 3.5).

Position m is a fixed vector of C = d_model numbers added to the token embedding, once,
before the first block; attention itself sees no position:

    PE[m, 2i]     = sin(m * w_i)
    PE[m, 2i + 1] = cos(m * w_i),      w_i = 10000^(-2i/C),   i = 0 .. C/2 - 1
    x = sqrt(C) * wte[idx] + PE[positions]

The frequencies are RoPE's (rope.py) with d = C; the sqrt(C) on the token embedding is the
paper's ("we multiply those weights by sqrt(d_model)", 3.4), which keeps the token term from
vanishing beside PE, whose entries have mean square 1/2: with this project's init std 0.02 at
C = 128 the token term starts with std 0.23.

Why it is a baseline: every block reads position only through what PE wrote into the
residual stream, and past the training length N the rows PE[m] for m >= N are vectors the
model never saw, at every frequency at once; RoPE's and ALiBi's scores depend on the
distance m - n instead (fope-spec sections 1 and 4).
"""

import math

import numpy as np

from .embedding import PositionEmbedding

SINUSOIDAL_BASE = 10000.0  # the paper's 10000 in w_i = 10000^(-2i/C)


def sinusoidal_frequencies(d_model):
    """w_i = 10000^(-2i/C), i = 0 .. C/2 - 1, in float64."""
    if d_model <= 0 or d_model % 2:
        raise ValueError(f"d_model must be a positive even integer, got {d_model}")
    return SINUSOIDAL_BASE ** (-2.0 * np.arange(d_model // 2, dtype=np.float64) / d_model)


def sinusoidal_table(positions, d_model):
    """PE (T, C) in float64 for positions (T,): PE[m, 2i] = sin(m w_i), PE[m, 2i+1] = cos(m w_i)."""
    w = sinusoidal_frequencies(d_model)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * w[None, :]
    table = np.empty((len(angles), d_model))
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles)
    return table


class Sinusoidal(PositionEmbedding):
    """pe='sinusoidal': x = sqrt(C) * x + PE[positions] on the token embeddings; no rotation,
    no bias, no weights of its own."""

    def __init__(self, config):
        super().__init__(config)
        self.scale = math.sqrt(config.d_model)

    def embed(self, x, positions):
        # x (B,T,C), positions (T,) -> (B,T,C)
        return self.scale * x + sinusoidal_table(positions, x.shape[-1]).astype(x.dtype)

    def embed_backward(self, dx):
        # dx (B,T,C) -> (B,T,C): PE does not depend on x, so only the scale remains
        return self.scale * dx
