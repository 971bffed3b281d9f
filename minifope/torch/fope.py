"""FoPE as a torch module, with the NumPy engine's frequencies and coefficients (minifope/fope.py).

    COS[h, m, j] = sum_f cos(w_f * m) * Ccos[h, f, j]     for j < J
    SIN[h, m, j] = sum_f sin(w_f * m) * Csin[h, f, j]     for j < J
    COS = 1, SIN = 0 ('identity') or 1 ('authors')        for j >= J (pairs that do not rotate)
    x' = x * [COS, COS] + rotate_half(x) * [SIN, SIN]     per head h

w_f are the F frequencies of fope_frequencies (clipped below 2*pi/N), J = min(F, d // 4).
The coefficients are drawn by fope_coefficients from NumPy's default_rng(seed); inside the
GPT they are the NumPy GPT's own (see model.py), so the same seed gives the same numbers.
The tables are summed in float64, as on the NumPy side, then cast to the dtype of q and k;
learnable coefficients get their gradients through that sum.
"""

import numpy as np
import torch
from torch import nn

from ..fope import fope_coefficients, fope_frequencies, fope_num_rotating_pairs
from .embedding import PositionEmbedding
from .float64_buffers import Float64Buffers
from .rope import apply_rotary, as_positions


class FoPE(Float64Buffers):
    """Fourier position embedding for n_head heads of size head_dim, N = train_len.

    forward(q, k, positions) -> (q', k'): q and k (B,H,T,d), positions an int (the first
    position) or a (T,) integer tensor. Ccos and Csin (H, F, J) are parameters when
    learnable, buffers otherwise; both are saved in the state_dict as `ccos` and `csin`.
    """

    def __init__(self, n_head, head_dim, train_len, theta=10000.0, sigma=0.3, fope_dim=0,
                 clip=True, learnable=False, zero_freq="identity", seed=0, dtype=torch.float32):
        super().__init__()
        if zero_freq not in ("identity", "authors"):
            raise ValueError(f"zero_freq must be 'identity' or 'authors', got {zero_freq!r}")
        w = fope_frequencies(head_dim, theta, train_len, fope_dim, clip)
        J = fope_num_rotating_pairs(head_dim, len(w))
        ccos, csin = fope_coefficients(np.random.default_rng(seed), n_head, len(w), J, sigma)
        self.head_dim, self.zero_freq = head_dim, zero_freq
        self.register_buffer("w", torch.tensor(w, dtype=torch.float64), persistent=False)
        for name, value in (("ccos", ccos), ("csin", csin)):
            value = torch.tensor(value, dtype=dtype)
            if learnable:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    @classmethod
    def from_config(cls, config, seed=None):
        return cls(config.n_head, config.head_dim, config.train_len, config.rope_theta,
                   config.fope_sigma, config.fope_dim, config.fope_clip, config.fope_learnable,
                   config.fope_zero_freq, config.seed if seed is None else seed,
                   getattr(torch, config.dtype))

    def tables(self, positions):
        # positions (T,) -> COS, SIN (H, T, d/2) in float64
        angles = positions.to(torch.float64)[:, None] * self.w[None, :]
        cos = torch.einsum("mf,hfj->hmj", torch.cos(angles), self.ccos.to(torch.float64))
        sin = torch.einsum("mf,hfj->hmj", torch.sin(angles), self.csin.to(torch.float64))
        H, T, J = cos.shape
        pad = cos.new_ones(H, T, self.head_dim // 2 - J)
        cos = torch.cat([cos, pad], dim=-1)
        sin = torch.cat([sin, pad if self.zero_freq == "authors" else torch.zeros_like(pad)], dim=-1)
        return cos, sin

    def forward(self, q, k, positions=0):
        cos, sin = self.tables(as_positions(positions, q.shape[-2], q.device))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)


class FoPEBlocks(PositionEmbedding):
    """pe='fope' in the GPT: every block holds a FoPE of its own, as `fope` (so its coefficients
    are blocks.{l}.fope.ccos, .csin, the NumPy names), and rotates q and k with it."""

    def __init__(self, config):
        super().__init__()
        self.config = config

    @classmethod
    def from_config(cls, config):
        return cls(config)

    def block_module(self):
        return "fope", FoPE.from_config(self.config)

    def rotary(self, block):
        return block.fope
