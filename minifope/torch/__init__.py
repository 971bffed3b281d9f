"""minifope.torch: the same GPT in PyTorch, weight for weight, for training at GPU scale.

The NumPy engine (minifope/) stays the spec; this subpackage is the only place in minifope
that imports torch, and `import minifope` never does. Everything here takes its numbers
from the NumPy side: RoPE's frequencies (with PI / NTK / YaRN and rope_clip), FoPE's
frequency set and coefficients, ALiBi's slopes, and the initial weights, so a torch GPT
built from a config equals the NumPy GPT built from it.

    RoPE, FoPE, NoPE   forward(q, k, positions) -> (q', k'), q and k (B,H,T,d)
    Sinusoidal         embed(x, positions) -> sqrt(C) * x + PE[positions], x (B,T,C)
    ALiBi              forward(q_positions, k_positions) -> additive mask (H,Tq,Tk)
    GPT                forward(idx, targets=None, pos_offset=0, kv_cache=None) -> (logits, loss)
    to_torch, from_torch          NumPy GPT <-> torch GPT, same parameters
    save_checkpoint, load_checkpoint   the NumPy checkpoint format (DIR/ckpt.npz), both ways
    NumpyView          a torch GPT with the NumPy GPT's forward, for minifope.lengthgen,
                       minifope.passkey and minifope.sample

Training: `python -m minifope.torch.train` (see minifope/torch/train.py).
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("minifope.torch needs PyTorch: pip install -r requirements-torch.txt") from e

from .alibi import ALiBi
from .checkpoint import load_checkpoint, save_checkpoint
from .convert import from_torch, to_torch
from .fope import FoPE
from .model import GPT
from .nope import NoPE
from .numpy_view import NumpyView
from .rope import RoPE, apply_rotary
from .sinusoidal import Sinusoidal

__all__ = ["ALiBi", "FoPE", "GPT", "NoPE", "NumpyView", "RoPE", "Sinusoidal", "apply_rotary", "from_torch",
           "load_checkpoint", "save_checkpoint", "to_torch"]
