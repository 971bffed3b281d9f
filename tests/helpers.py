"""What several test files share: the repository root, a tiny play, a tiny model and a batch."""

from pathlib import Path

import numpy as np

from minifope.config import GPTConfig

ROOT = Path(__file__).resolve().parents[1]
TEXT = "KING:\nWhat news, my lord? Speak, and be brief.\n\nLORD:\nThe day is ours.\n\n" * 30


def tiny_config(**overrides):
    """A 2-layer float64 GPT small enough for autograd and central differences."""
    base = dict(vocab_size=13, n_layer=2, n_head=2, d_model=32, train_len=64, dtype="float64",
                seed=7, init_std=0.2)
    return GPTConfig(**{**base, **overrides})


def batch(config, B=2, T=9, seed=0):
    """(idx, targets), each (B, T), random tokens; one target is -1, a position without loss."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, (B, T))
    targets = rng.integers(0, config.vocab_size, (B, T))
    targets[0, 2] = -1
    return idx, targets
