"""The torch twin of minifope/embedding.py: the hooks torch/model.py calls, each a no-op here.

    x = pe.embed(wte[idx], positions)                  absolute embeddings (sinusoidal)
    mask = pe.mask(q_positions, k_positions)           an additive (1,H,Tq,Tk) mask with the
                                                       causal mask folded in (ALiBi), or None
    q, k = pe.rotary(block)(q, k, positions)           rotary embeddings (RoPE, FoPE); None
                                                       for no rotation
    pe.block_module()                                  (name, module) each block holds (FoPE's
                                                       coefficients, blocks.{l}.fope.*), or None

One object per model, built by from_config; each embedding's class lives in its own module
beside the NumPy one, and torch/model.py lists them by GPTConfig.pe.
"""

from .float64_buffers import Float64Buffers


class PositionEmbedding(Float64Buffers):
    @classmethod
    def from_config(cls, config):
        return cls()

    def block_module(self):
        return None

    def embed(self, x, positions):
        return x

    def mask(self, q_positions, k_positions):
        return None

    def rotary(self, block):
        return None
