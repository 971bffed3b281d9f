"""RoPE as a torch module, with the NumPy engine's frequencies (minifope/rope.py, rope_scaling.py).

    w_j = theta^(-2j/d),   j = 0 .. d/2 - 1      (then PI, NTK or YaRN, and rope_clip)
    COS[m, j] = a * cos(w_j * m),   SIN[m, j] = a * sin(w_j * m)
    x' = x * [COS, COS] + rotate_half(x) * [SIN, SIN],   rotate_half([a, b]) = [-b, a]

a is YaRN's attention factor sqrt(1/t) = 0.1 * ln(s) + 1 (1 without YaRN). The frequencies
and a come from minifope.rope.rope_frequencies_of, so they are the NumPy GPT's own; the
angles are computed in float64 and the tables cast to the dtype of q and k.
"""

import torch

from ..config import GPTConfig
from ..rope import rope_frequencies_of
from .embedding import PositionEmbedding


def as_positions(positions, T, device):
    """An int start (pos_offset) or a (T,) tensor of positions -> a (T,) int64 tensor."""
    if isinstance(positions, int):
        return torch.arange(positions, positions + T, device=device)
    return torch.as_tensor(positions, device=device)


def apply_rotary(x, cos, sin):
    # x (..., T, d), cos/sin (T, d/2) or (H, T, d/2) -> x' (..., T, d)
    # per pair (a, b) = (x[j], x[j + d/2]):  a' = a*COS - b*SIN,  b' = b*COS + a*SIN
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class RoPE(PositionEmbedding):
    """Rotary position embedding for queries and keys of head size `head_dim`.

    forward(q, k, positions) -> (q', k'): q and k (B,H,T,d) (any leading dims), positions an
    int (the first position; the others follow) or a (T,) integer tensor. Arguments other
    than head_dim are GPTConfig's rope_* fields; train_len is N for rope_clip's floor 2*pi/N
    and for YaRN's ramp (rope_original_len overrides it there, as in GPTConfig).
    """

    def __init__(self, head_dim, theta=10000.0, train_len=128, scaling="none", scale=1.0,
                 original_len=0, clip=False, yarn_ramp="index", yarn_temperature=True):
        super().__init__()
        config = GPTConfig(n_head=1, d_model=head_dim, train_len=train_len, rope_theta=theta,
                           rope_scaling=scaling, rope_scale=scale, rope_original_len=original_len,
                           rope_clip=clip, rope_yarn_ramp=yarn_ramp,
                           rope_yarn_temperature=yarn_temperature)
        w, self.factor = rope_frequencies_of(config)
        self.register_buffer("w", torch.tensor(w, dtype=torch.float64), persistent=False)

    @classmethod
    def from_config(cls, config):
        return cls(config.head_dim, config.rope_theta, config.train_len, config.rope_scaling,
                   config.rope_scale, config.rope_original_len, config.rope_clip, config.rope_yarn_ramp,
                   config.rope_yarn_temperature)

    def tables(self, positions):
        # positions (T,) -> COS, SIN (T, d/2) in float64
        angles = positions.to(torch.float64)[:, None] * self.w[None, :]
        return torch.cos(angles) * self.factor, torch.sin(angles) * self.factor

    def forward(self, q, k, positions=0):
        cos, sin = self.tables(as_positions(positions, q.shape[-2], q.device))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

    def rotary(self, block):
        return self  # every block rotates by the same tables
