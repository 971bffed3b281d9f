"""Sampling: incremental decoding through the key/value cache.

The prompt goes through the model once, filling a KVCache; then each new character costs
one forward of a single position that attends to everything cached. The logits are the
same as recomputing the whole sequence (tested for every position embedding).

When the context reaches `window` positions (default: the training length) the oldest
entries of the cache are dropped, so attention always looks back at most `window`
characters. For RoPE and ALiBi the scores depend only on m - n, so this is exactly a
sliding window; positions keep counting up, so FoPE with sigma > 0 sees positions
past the training length (as it would in one long sequence).
"""

import math

import numpy as np

from .errors import UserError
from .model import KVCache


def sample_next(logits, rng, temperature=1.0, top_k=None):
    """One token id per row from logits (B,V): softmax(logits / temperature) over the top_k
    largest logits; temperature 0 means greedy (the argmax)."""
    if temperature == 0:
        return np.argmax(logits, axis=-1)
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    return np.minimum((np.cumsum(p, axis=-1) < u).sum(axis=-1), p.shape[-1] - 1)


def generate(model, idx, n_new, temperature=1.0, top_k=None, seed=0, window=None, on_token=None):
    """Continue idx (B,T) by n_new tokens -> (B, T + n_new). on_token(ids (B,)) is called per step."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"temperature must be a finite number >= 0, got {temperature}")
    if n_new < 0:
        raise UserError(f"the number of new tokens must be >= 0, got {n_new}")
    if top_k is not None and top_k <= 0:
        raise UserError(f"top_k must be a positive integer, got {top_k}")
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[1] == 0:
        raise UserError("the prompt must hold at least one character")
    window = window or model.config.train_len
    rng = np.random.default_rng(seed)
    cache = KVCache(model.config.n_layer)
    context = idx[:, -window:]
    logits, _ = model.forward(context, pos_offset=idx.shape[1] - context.shape[1], kv_cache=cache)
    out = [idx]
    position = idx.shape[1]
    for i in range(n_new):
        nxt = sample_next(logits[:, -1], rng, temperature, top_k)
        out.append(nxt[:, None])
        if on_token is not None:
            on_token(nxt)
        if i == n_new - 1:
            break
        cache.crop(window - 1)
        logits, _ = model.forward(nxt[:, None], pos_offset=position - cache.length, kv_cache=cache)
        position += 1
    return np.concatenate(out, axis=1)
