"""RoPE, the rotary position embedding, and its reading as a non-uniform DFT (fope-spec section 1).

Layout: half-split (GPT-NeoX / OLMo / Llama). A head vector x of size d is read as d/2
pairs, pair j = (x[j], x[j + d/2]). At position m, pair j is rotated by the angle w_j * m,

    w_j = theta^(-2j/d),   j = 0 .. d/2 - 1
    x' = x * [COS, COS] + rotate_half(x) * [SIN, SIN],   rotate_half([a, b]) = [-b, a]
    COS[m, j] = cos(w_j * m),   SIN[m, j] = sin(w_j * m)

The interleaved layout of the RoFormer paper (pair j = dims 2j, 2j+1) is the same map
after a permutation of the dimensions of q and k.

Read pair j as the complex number z_j = x[j] + i x[j + d/2]: the rotation is
z_j' = z_j * exp(i w_j m), so the attention logit between a query at m and a key at n is

    s(m, n) = Re( sum_j  h_j * exp(i * w_j * (m - n)) ),   h_j = q_j * conj(k_j)

a Fourier sum over the non-uniformly spaced frequencies w_j with spectrum h_j:
a non-uniform DFT. `nudft_scores` computes exactly this sum.

`apply_rotary` and its backward take any tables COS, SIN, not only RoPE's: FoPE
(fope.py) reuses them with its Fourier-series tables.

In the GPT (class RoPE): every block rotates its queries and keys by the same tables, from
the frequencies w_j above, clipped (rope_clip) and/or scaled past N (rope_scaling.py).
"""

import math

import numpy as np

from .embedding import PositionEmbedding
from .rope_scaling import scaled_rope_frequencies, yarn_attention_factor


def rope_frequencies(head_dim, theta=10000.0):
    """w_j = theta^(-2j/d) for j = 0 .. d/2 - 1 (d = head_dim), in float64, decreasing."""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"head_dim must be a positive even integer, got {head_dim}")
    j = np.arange(head_dim // 2, dtype=np.float64)
    return theta ** (-2.0 * j / head_dim)


def rope_tables(positions, w):
    """COS[m, j] = cos(w_j * m), SIN[m, j] = sin(w_j * m): positions (T,), w (d/2,) -> (T, d/2) each.

    The angles are computed in float64 so that large positions keep their precision.
    """
    angles = np.asarray(positions, dtype=np.float64)[:, None] * np.asarray(w, dtype=np.float64)[None, :]
    return np.cos(angles), np.sin(angles)


def rotate_half(x):
    """rotate_half([a, b]) = [-b, a] on the last axis (the half-split pairing)."""
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x, cos, sin):
    # x (B,H,T,d), cos/sin (T,d/2) or (H,T,d/2) -> out (B,H,T,d)
    # x' = x * [COS, COS] + rotate_half(x) * [SIN, SIN]; per pair (a, b):
    # a' = a*COS - b*SIN,  b' = b*COS + a*SIN
    # Whole rows of d numbers at a time: the halves x[..., :d/2] alone are short strided
    # runs, which NumPy walks several times slower.
    cos2, sin2 = np.concatenate([cos, cos], axis=-1), np.concatenate([sin, sin], axis=-1)
    out = x * cos2
    out += rotate_half(x) * sin2
    return out


def apply_rotary_backward(dout, cos, sin):
    # dout (B,H,T,d) -> dx (B,H,T,d)
    # Each pair's map is the matrix [[COS, -SIN], [SIN, COS]]; its transpose is the same
    # map with SIN negated, so the backward is apply_rotary with -SIN.
    return apply_rotary(dout, cos, -sin)


def rotary_table_grads(x, dout):
    # x (B,H,T,d) the input of apply_rotary, dout (B,H,T,d) -> dcos, dsin (H,T,d/2), summed over B
    # From a' = a*COS - b*SIN, b' = b*COS + a*SIN:
    # dCOS = da'*a + db'*b,  dSIN = -da'*b + db'*a
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    da, db = dout[..., :half], dout[..., half:]
    dcos = np.sum(da * a + db * b, axis=0)
    dsin = np.sum(db * a - da * b, axis=0)
    return dcos, dsin


def as_complex(x):
    """z_j = x[j] + i x[j + d/2]: a head vector (..., d) as d/2 complex numbers (..., d/2)."""
    half = x.shape[-1] // 2
    return x[..., :half] + 1j * x[..., half:]


def nudft_spectrum(q, k):
    """h_j(m, n) = q_j * conj(k_j): q (..., Tq, d), k (..., Tk, d) -> (..., Tq, Tk, d/2) complex."""
    return as_complex(q)[..., :, None, :] * np.conj(as_complex(k))[..., None, :, :]


def nudft_scores(q, k, w, q_positions, k_positions):
    """RoPE logits as the Fourier sum  s(m, n) = Re( sum_j h_j * exp(i * w_j * (m - n)) ).

    q (..., Tq, d) and k (..., Tk, d) are the query and key before rotation, at positions
    q_positions (Tq,) and k_positions (Tk,). Returns (..., Tq, Tk), the unscaled dot
    products of the rotated vectors: equal to apply_rotary(q) @ apply_rotary(k)^T.
    """
    h = nudft_spectrum(q, k)
    distance = (np.asarray(q_positions, dtype=np.float64)[:, None]
                - np.asarray(k_positions, dtype=np.float64)[None, :])
    phase = np.exp(1j * distance[..., None] * np.asarray(w)[None, None, :])
    return np.real(np.sum(h * phase, axis=-1))


def rope_frequencies_of(config):
    """RoPE's w_j for a GPTConfig (clipped and/or scaled as asked) and the factor on q and k.

    rope_clip zeroes every w_j < 2*pi/N (N = train_len); rope_scaling applies PI, NTK or
    YaRN with s = rope_scale; the factor is YaRN's sqrt(1/t) (unless rope_yarn_temperature is
    False), 1 otherwise (rope_scaling.py).
    """
    N = config.rope_original_len or config.train_len
    w = scaled_rope_frequencies(config.head_dim, config.rope_theta, config.rope_scaling,
                                config.rope_scale, N, config.rope_yarn_ramp)
    if config.rope_clip:
        w = np.where(rope_frequencies(config.head_dim, config.rope_theta) < 2 * math.pi / N, 0.0, w)
    yarn_t = config.rope_scaling == "yarn" and config.rope_yarn_temperature
    factor = yarn_attention_factor(config.rope_scale) if yarn_t else 1.0
    return w, factor


class RoPE(PositionEmbedding):
    """pe='rope': queries and keys of every block rotated by COS, SIN = a * cos(w_j m), a * sin(w_j m),
    w and a = rope_frequencies_of(config). No weights of its own."""

    def __init__(self, config):
        super().__init__(config)
        self.w, self.factor = rope_frequencies_of(config)

    def tables(self, weights, positions):
        cos, sin = rope_tables(positions, self.w)
        return cos * self.factor, sin * self.factor  # YaRN's sqrt(1/t), else 1
