"""GPTConfig: every size and switch of the model in one dataclass."""

import math
from dataclasses import dataclass, fields, asdict

from .alibi import ALiBi
from .fope import FoPE
from .nope import NoPE
from .rope import RoPE
from .rope_scaling import ROPE_SCALINGS, YARN_RAMPS
from .sinusoidal import Sinusoidal

# GPTConfig.pe -> the class that says what that embedding does to the model (embedding.py)
EMBEDDINGS = {"rope": RoPE, "fope": FoPE, "alibi": ALiBi, "nope": NoPE, "sinusoidal": Sinusoidal}
POSITION_EMBEDDINGS = tuple(EMBEDDINGS)
ATTENTION_IMPLS = ("auto", "full", "chunked")
FOPE_ZERO_FREQ = ("identity", "authors")
DTYPES = ("float32", "float64")

# Bounds on sizes, checked by arithmetic before anything is allocated, so that a config
# from a hand-edited or hostile checkpoint is refused in one line instead of exhausting memory.
# Parameters + buffers: ~40 GB of float32, far beyond any run of this project.
MAX_WEIGHTS = 10**10
# Each layer is also Python objects (arrays, dict entries, loop steps), so a deep, narrow
# model within MAX_WEIGHTS could still be billions of them.
MAX_LAYERS = 10_000
# D = max(fope_dim, head_dim): fope_frequencies builds D/2 float64s, at most 4 MiB.
MAX_FOPE_DIM = 2**20
# train_len, rope_original_len, attn_chunk: one row of scores over this many keys is already
# 8 GiB; larger ints would also overflow the float arithmetic on N.
MAX_LENGTH = 2**31


@dataclass
class GPTConfig:
    """The model: an OLMo-style pre-norm decoder (RMSNorm, SwiGLU, no biases, untied head).

    pe              position embedding: 'rope' | 'fope' | 'alibi' | 'nope' | 'sinusoidal'
                    (EMBEDDINGS: one class per embedding, in its own module)
    train_len       N, the training length; FoPE's clip floor is 2*pi/N
    rope_theta      theta of w_j = theta^(-2j/d)
    rope_scaling    'none' | 'pi' | 'ntk' | 'yarn': extend RoPE past its training length
                    (rope_scaling.py), by the factor rope_scale = s
    rope_original_len  N for YaRN's ramp, the length the model was first trained at;
                    0 means train_len
    rope_yarn_ramp  YaRN's ramp: 'index' (linear in the pair index, as YaRN's code and
                    transformers compute it) or 'rotations' (linear in the turns within N,
                    the YaRN paper's equation); rope_scaling.py
    rope_yarn_temperature  YaRN's attention temperature sqrt(1/t) = 0.1 ln(s) + 1 on q and k
                    (True, as YaRN and transformers apply it); False leaves it out, as the
                    FoPE authors' YaRN baseline does (fope-spec section 5)
    rope_clip       zero RoPE's frequencies below 2*pi/train_len (FoPE's clip without its
                    Fourier series: the paper's "clip only" ablation)
    fope_sigma      sigma, the gain of FoPE's Gaussian coefficient noise (fope-spec section 3)
    fope_dim        D, the number of dims the FoPE frequency set is computed over; 0 means head_dim
    fope_learnable  train the FoPE coefficients instead of keeping them fixed at init
    fope_clip       FoPE's clip floor; False keeps every frequency (the "series only" ablation)
    fope_zero_freq  what the non-rotating pairs get: 'identity' (cos=1, sin=0, the paper's
                    zero frequency) or 'authors' (cos=1, sin=1, the authors' padding)
    d_ff            SwiGLU hidden size; 0 means 8/3 * d_model rounded up to a multiple of 8
    attn_impl       'auto' | 'full' | 'chunked': blocks of attn_chunk query rows whose
                    attention weights are kept for the backward while they fit (auto), one
                    block of all rows (full), or recomputed in the backward (chunked, for
                    long sequences); see attention.py
    attn_chunk      query rows per block

    validate() bounds the sizes before anything is allocated: the weights the model would
    hold (num_weights) by MAX_WEIGHTS, n_layer by MAX_LAYERS, FoPE's D by MAX_FOPE_DIM.
    train_len, rope_original_len and attn_chunk allocate nothing at construction (attention
    memory follows the length of the sequence given to forward); they are bounded by
    MAX_LENGTH only to refuse nonsense that would overflow the float arithmetic on them.
    """

    vocab_size: int = 65
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    train_len: int = 128
    pe: str = "rope"
    rope_theta: float = 10000.0
    rope_scaling: str = "none"
    rope_scale: float = 1.0
    rope_original_len: int = 0
    rope_yarn_ramp: str = "index"
    rope_yarn_temperature: bool = True
    rope_clip: bool = False
    fope_sigma: float = 0.3
    fope_dim: int = 0
    fope_learnable: bool = False
    fope_clip: bool = True
    fope_zero_freq: str = "identity"
    d_ff: int = 0
    attn_impl: str = "auto"
    attn_chunk: int = 64
    init_std: float = 0.02
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self):
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def hidden_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        return -(-(8 * self.d_model // 3) // 8) * 8

    def num_weights(self) -> int:
        """Every parameter and buffer element the GPT would hold, counted without allocating.

            wte V*C + n_layer * (norm1 C + wqkv 3C^2 + wo C^2 + norm2 C + w_in 2CF + w_out FC
            + the embedding's block weights) + norm_f C + lm_head C*V

        with F = hidden_dim; the embedding's block weights are FoPE's Ccos, Csin 2*H*F_w*J
        (fope.py), none for the others. Needs the other fields valid: validate() calls it last.
        """
        C, V, L, F = self.d_model, self.vocab_size, self.n_layer, self.hidden_dim
        per_layer = 2 * C + 4 * C * C + 3 * C * F
        per_layer += sum(math.prod(shape) for shape in self.embedding().block_shapes().values())
        return 2 * V * C + C + L * per_layer

    def embedding(self):
        """The position embedding this config asks for: EMBEDDINGS[pe](self) (embedding.py)."""
        return EMBEDDINGS[self.pe](self)

    def validate(self) -> None:
        """Raise ValueError naming the first field that is not allowed, and what is.

        Types are checked before values, so a config read from JSON with, say, a string
        where a number goes is refused with a ValueError too, never a TypeError.
        """
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "train_len", "attn_chunk"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("fope_dim", "d_ff", "rope_original_len"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 means the default), got {value!r}")
        if not is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("train_len", "rope_original_len", "attn_chunk"):
            if getattr(self, name) > MAX_LENGTH:
                raise ValueError(f"{name} must be at most MAX_LENGTH = {MAX_LENGTH:,}, got {getattr(self, name)}")
        if self.n_layer > MAX_LAYERS:
            raise ValueError(f"n_layer must be at most MAX_LAYERS = {MAX_LAYERS:,}, got {self.n_layer}")
        if self.fope_dim > MAX_FOPE_DIM:
            raise ValueError(f"fope_dim must be at most MAX_FOPE_DIM = {MAX_FOPE_DIM:,}, got {self.fope_dim}")
        for name in ("rope_clip", "rope_yarn_temperature", "fope_learnable", "fope_clip"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("rope_theta", "rope_scale", "fope_sigma", "init_std"):
            if not is_finite_number(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})")
        if self.head_dim % 2:
            raise ValueError(
                f"head_dim = d_model / n_head = {self.head_dim} must be even "
                "(rotations act on pairs of dimensions)")
        if self.pe not in POSITION_EMBEDDINGS:
            raise ValueError(f"pe must be one of {', '.join(POSITION_EMBEDDINGS)}; got {self.pe!r}")
        if self.attn_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"attn_impl must be one of {', '.join(ATTENTION_IMPLS)}; got {self.attn_impl!r}")
        if self.fope_zero_freq not in FOPE_ZERO_FREQ:
            raise ValueError(
                f"fope_zero_freq must be one of {', '.join(FOPE_ZERO_FREQ)}; got {self.fope_zero_freq!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if self.fope_dim and (self.fope_dim % 2 or self.fope_dim < self.head_dim):
            raise ValueError(
                f"fope_dim must be 0 (meaning head_dim = {self.head_dim}) or an even number "
                f">= head_dim, got {self.fope_dim}")
        if self.pe == "fope" and self.head_dim > MAX_FOPE_DIM:
            raise ValueError(f"with pe='fope', head_dim = d_model / n_head must be at most "
                             f"MAX_FOPE_DIM = {MAX_FOPE_DIM:,}, got {self.head_dim}")
        if not self.rope_theta > 1.0:
            raise ValueError(f"rope_theta must be > 1, got {self.rope_theta!r}")
        if self.rope_scaling not in ROPE_SCALINGS:
            raise ValueError(
                f"rope_scaling must be one of {', '.join(ROPE_SCALINGS)}; got {self.rope_scaling!r}")
        if self.rope_yarn_ramp not in YARN_RAMPS:
            raise ValueError(
                f"rope_yarn_ramp must be one of {', '.join(YARN_RAMPS)}; got {self.rope_yarn_ramp!r}")
        if not self.rope_scale >= 1.0:
            raise ValueError(f"rope_scale must be >= 1 (the factor L / N), got {self.rope_scale!r}")
        if self.pe != "rope" and (self.rope_scaling != "none" or self.rope_clip):
            raise ValueError(f"rope_scaling and rope_clip apply to pe='rope' only, not {self.pe!r}")
        if self.rope_scaling == "none" and self.rope_scale != 1.0:
            # it would be silently ignored: a run the user believes extended would not be
            raise ValueError(f"rope_scale only takes effect with rope_scaling pi, ntk or yarn; "
                             f"got rope_scale={self.rope_scale!r} with rope_scaling='none'")
        if self.pe != "fope" and (not self.fope_clip or self.fope_learnable):
            raise ValueError(f"fope_clip and fope_learnable apply to pe='fope' only, not {self.pe!r}")
        if not self.fope_sigma >= 0.0:
            raise ValueError(f"fope_sigma must be >= 0, got {self.fope_sigma!r}")
        if not self.init_std > 0.0:
            raise ValueError(f"init_std must be > 0, got {self.init_std!r}")
        weights = self.num_weights()
        if weights > MAX_WEIGHTS:
            raise ValueError(
                f"the model would hold {weights:,} weights, more than MAX_WEIGHTS = "
                f"{MAX_WEIGHTS:,} (~40 GB of float32); make d_model, n_layer, d_ff, vocab_size "
                "or fope_dim smaller")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """Build a config from a dict, refusing keys that are not fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        return cls(**d)


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    """An int or float (not a bool) that is neither nan nor infinite, nor too large for a float."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the largest float
        return False
