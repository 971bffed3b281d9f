"""The same model written plainly with autograd.numpy: the reference the backward is checked against.

Nothing here is fast or clever: each function is the textbook formula, differentiated by
autograd (HIPS). The tests and the lessons' exercises compare the hand-written backward
of every layer, and of the whole GPT, with `autograd.grad` of these functions.
"""

import math

import autograd.numpy as anp
import numpy as np

from .alibi import alibi_slopes
from .fope import fope_frequencies
from .layers import IGNORE_INDEX, RMSNORM_EPS
from .rope import rope_frequencies_of


def embedding(idx, wte):
    return wte[idx]


def linear(x, w):
    return anp.dot(x, w)


def rmsnorm(x, g, eps=RMSNORM_EPS):
    return g * x / anp.sqrt(anp.mean(x ** 2, axis=-1, keepdims=True) + eps)


def silu(a):
    return a / (1.0 + anp.exp(-a))


def swiglu(x, w_in, w_out):
    F = w_out.shape[0]
    a = anp.dot(x, w_in)
    return anp.dot(silu(a[..., :F]) * a[..., F:], w_out)


def log_softmax(s):
    m = anp.max(s, axis=-1, keepdims=True)
    return s - m - anp.log(anp.sum(anp.exp(s - m), axis=-1, keepdims=True))


def cross_entropy(logits, targets):
    valid = targets != IGNORE_INDEX
    onehot = (np.where(valid, targets, 0)[..., None] == np.arange(logits.shape[-1])) * valid[..., None]
    return -anp.sum(log_softmax(logits) * onehot) / max(int(valid.sum()), 1)


def rotary(x, cos, sin):
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return anp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def attention(q, k, v, slopes=None, q_start=0):
    Tq, Tk, d = q.shape[-2], k.shape[-2], q.shape[-1]
    m = q_start + np.arange(Tq)[:, None]
    n = np.arange(Tk)[None, :]
    s = anp.einsum("bhmd,bhnd->bhmn", q, k) / math.sqrt(d)
    if slopes is not None:
        s = s - slopes[:, None, None] * (m - n)
    s = anp.where(n <= m, s, -anp.inf)
    return anp.einsum("bhmn,bhnd->bhmd", anp.exp(log_softmax(s)), v)


def self_attention(x, wqkv, wo, n_head, cos=None, sin=None, slopes=None):
    B, T, C = x.shape
    d = C // n_head
    qkv = anp.dot(x, wqkv)
    q, k, v = (anp.transpose(anp.reshape(qkv[..., i * C:(i + 1) * C], (B, T, n_head, d)), (0, 2, 1, 3))
               for i in range(3))
    if cos is not None:
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
    y = attention(q, k, v, slopes)
    return anp.dot(anp.reshape(anp.transpose(y, (0, 2, 1, 3)), (B, T, C)), wo)


def fope_tables(positions, w, ccos, csin, head_dim, zero_freq="identity"):
    angles = positions[:, None] * w[None, :]
    cos = anp.einsum("mf,hfj->hmj", anp.cos(angles), ccos)
    sin = anp.einsum("mf,hfj->hmj", anp.sin(angles), csin)
    H, T, J = cos.shape
    ones = anp.ones((H, T, head_dim // 2 - J))
    pad_sin = ones if zero_freq == "authors" else 0.0 * ones
    return anp.concatenate([cos, ones], axis=-1), anp.concatenate([sin, pad_sin], axis=-1)


def gpt_logits(params, buffers, config, idx, pos_offset=0):
    """logits (B,T,V) of the GPT in minifope.model, from the same params and buffers dicts."""
    H, d = config.n_head, config.head_dim
    positions = pos_offset + np.arange(idx.shape[1], dtype=np.float64)
    slopes = alibi_slopes(H) if config.pe == "alibi" else None
    x = embedding(idx, params["wte"])
    if config.pe == "sinusoidal":  # x = sqrt(C) wte[idx] + PE, PE[m, 2i] = sin(m w_i), PE[m, 2i+1] = cos(m w_i)
        C = config.d_model
        dims = np.arange(C)
        w = 10000.0 ** (-(dims - dims % 2) / C)  # w_i for both dims 2i and 2i+1
        angles = positions[:, None] * w[None, :]
        x = math.sqrt(C) * x + np.where(dims % 2 == 0, np.sin(angles), np.cos(angles))
    for l in range(config.n_layer):
        p = f"blocks.{l}."
        cos = sin = None
        if config.pe == "rope":
            w, factor = rope_frequencies_of(config)
            angles = positions[:, None] * w[None, :]
            cos, sin = factor * np.cos(angles), factor * np.sin(angles)
        elif config.pe == "fope":
            w = fope_frequencies(d, config.rope_theta, config.train_len, config.fope_dim,
                                 config.fope_clip)
            coef = {**buffers, **params}
            cos, sin = fope_tables(positions, w, coef[p + "fope.ccos"], coef[p + "fope.csin"], d,
                                   config.fope_zero_freq)
        x = x + self_attention(rmsnorm(x, params[p + "norm1"]), params[p + "attn.wqkv"],
                               params[p + "attn.wo"], H, cos, sin, slopes)
        x = x + swiglu(rmsnorm(x, params[p + "norm2"]), params[p + "mlp.w_in"],
                       params[p + "mlp.w_out"])
    return anp.dot(rmsnorm(x, params["norm_f"]), params["lm_head"])


def gpt_loss(params, buffers, config, idx, targets, pos_offset=0):
    """The mean cross-entropy of the GPT; autograd.grad(gpt_loss)(params, ...) is the reference."""
    return cross_entropy(gpt_logits(params, buffers, config, idx, pos_offset), targets)
