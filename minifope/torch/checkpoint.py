"""Checkpoints of torch GPTs in the NumPy format (minifope/checkpoint.py): DIR/ckpt.npz.

Both functions go through the NumPy GPT (from_torch, to_torch), so either side's
checkpoints load on the other, and writing stays atomic and loading pickle-free.
"""

from .. import checkpoint
from .convert import from_torch, to_torch


def save_checkpoint(path, module, tokenizer, state=None, optim_state=None, into=None):
    """Write the torch GPT (and the trainer's state) to `path` in the NumPy format.
    `into`: a NumPy GPT of the same config to stage the weights in (see from_torch)."""
    checkpoint.save_checkpoint(path, from_torch(module, into), tokenizer, state, optim_state)


def load_checkpoint(path, device=None, dtype=None):
    """DIR/ckpt.npz (or a .npz path) -> (torch GPT, tokenizer, state, optim_state)."""
    model, tokenizer, state, optim_state = checkpoint.load_checkpoint(path)
    return to_torch(model, device, dtype), tokenizer, state, optim_state
