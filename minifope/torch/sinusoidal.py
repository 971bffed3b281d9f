"""The sinusoidal absolute position embedding as a torch module (minifope/sinusoidal.py).

    x = sqrt(C) * wte[idx] + PE[positions],   PE = minifope.sinusoidal.sinusoidal_table

PE is computed in float64 from the NumPy side's frequencies, then cast to the dtype of x.
"""

import math

import torch

from ..sinusoidal import sinusoidal_frequencies
from .embedding import PositionEmbedding


class Sinusoidal(PositionEmbedding):
    def __init__(self, d_model):
        super().__init__()
        self.scale = math.sqrt(d_model)
        self.register_buffer("w", torch.tensor(sinusoidal_frequencies(d_model)), persistent=False)

    @classmethod
    def from_config(cls, config):
        return cls(config.d_model)

    def embed(self, x, positions):
        # x (B,T,C), positions (T,) -> (B,T,C)
        angles = positions.to(torch.float64)[:, None] * self.w[None, :]
        table = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1).flatten(-2)  # 2i: sin, 2i+1: cos
        return self.scale * x + table.to(x.dtype)
