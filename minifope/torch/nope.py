"""NoPE as a torch module: no position embedding, queries and keys pass unchanged.

    s(m, n) = q_m . k_n / sqrt(d)   for n <= m

Every hook of PositionEmbedding stays a no-op; forward has RoPE's and FoPE's signature,
forward(q, k, positions) -> (q, k), for code that rotates with any of them.
"""

from .embedding import PositionEmbedding


class NoPE(PositionEmbedding):
    def forward(self, q, k, positions=0):
        return q, k
