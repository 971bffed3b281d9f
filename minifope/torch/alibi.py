"""ALiBi as a torch module: the additive attention mask, slopes from minifope/alibi.py.

    s(m, n) = q_m . k_n / sqrt(d)  -  slope_h * (m - n)   for n <= m,   -inf for n > m

forward(q_positions, k_positions) -> mask (H, Tq, Tk) in float64, the causal mask folded
in, ready for torch.nn.functional.scaled_dot_product_attention(q, k, v,
attn_mask=mask[None].to(q.dtype)). The bias is computed in float64 and cast once, as on the
NumPy side. Pass it 4-D, (1, H, Tq, Tk), as mask() gives it to torch/model.py: with a 3-D mask
a CPU leaves its flash kernel for the "math" one, which holds every score at once and runs
about 20x slower.
"""

import torch

from ..alibi import alibi_slopes
from .embedding import PositionEmbedding


class ALiBi(PositionEmbedding):
    def __init__(self, n_head):
        super().__init__()
        self.register_buffer("slopes", torch.tensor(alibi_slopes(n_head), dtype=torch.float64),
                             persistent=False)

    @classmethod
    def from_config(cls, config):
        return cls(config.n_head)

    def mask(self, q_positions, k_positions):
        # (1,H,Tq,Tk): 4-D keeps a CPU on its flash kernel (the module docstring); a 3-D mask would
        # make it hold every (B,H,Tq,Tk) score at once (32 x 4096 tokens, 4 heads: 8.6 GB a copy)
        return self(q_positions, k_positions)[None]

    def forward(self, q_positions, k_positions):
        q_positions = torch.as_tensor(q_positions, device=self.slopes.device)
        k_positions = torch.as_tensor(k_positions, device=self.slopes.device)
        distance = (q_positions[:, None] - k_positions[None, :]).to(torch.float64)  # m - n
        mask = -self.slopes[:, None, None] * distance
        return mask.masked_fill(distance < 0, float("-inf"))
