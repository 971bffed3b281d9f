"""NoPE, no position embedding: the baseline with no position signal at all.

    s(m, n) = q_m . k_n / sqrt(d)   for n <= m

Queries and keys are not rotated and the scores get no bias. The causal mask is the only
source of order: a token can tell how many tokens precede it only through what attention
over a growing prefix computes. There is nothing to compute: NoPE keeps every hook of
PositionEmbedding as it is, so the model passes no tables and no slopes to attention.
"""

from .embedding import PositionEmbedding


class NoPE(PositionEmbedding):
    """pe='nope': every hook a no-op."""
