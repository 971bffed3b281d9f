"""NoPE as a torch module: no position embedding, queries and keys pass unchanged.

    s(m, n) = q_m . k_n / sqrt(d)   for n <= m

It exists so that a model can swap position embeddings without an `if`: forward has
RoPE's and FoPE's signature, forward(q, k, positions) -> (q, k).
"""

from torch import nn


class NoPE(nn.Module):
    def forward(self, q, k, positions=0):
        return q, k
