"""minifope: RoPE, FoPE and ALiBi in a small NumPy GPT whose every layer has a hand-written backward."""

from . import malloc  # noqa: F401  (sets the C allocator for NumPy's temporaries: malloc.py)
from .alibi import alibi_slopes
from .config import GPTConfig
from .gradcheck import check_backward, check_gradients, cmp
from .model import GPT, KVCache
from .rope import rope_frequencies

__all__ = ["GPT", "GPTConfig", "KVCache", "alibi_slopes", "rope_frequencies",
           "check_backward", "check_gradients", "cmp"]
__version__ = "0.1.0"
