"""Causal multi-head self-attention: the core (in blocks of query rows) and the layer around it.

Shapes: B batch, H heads, T time, d head_dim, C = H*d model width. Queries are the last
Tq of the Tk key positions: query i sits at key index q_start + i (q_start = Tk - Tq, and
0 without a key/value cache), and may attend to keys n <= q_start + i.

The core, for every batch row and head at once:

    S = q k^T / sqrt(d)  [- slope_h * (m - n) for ALiBi]   masked to n <= m
    P = softmax(S) over n
    out = P v

Backward, with D_m = sum_n P[m,n] dP[m,n] = dout_m . out_m:

    dv = P^T dout,  dP = dout v^T,  dS = P * (dP - D),  dq = dS k / sqrt(d),  dk = dS^T q / sqrt(d)

The rows are taken in blocks of `chunk` query rows. A block of rows never looks at keys
past its last row, so a causal sequence costs about half the square, and only the last
`chunk` keys of a block can be masked: the mask (and the -inf that exp handles slowly)
touches a chunk x chunk corner, not the whole block. Each block's P is kept for the
backward while all of them fit in AUTO_CHUNK_BYTES ('auto'); past that, and always with
'chunked', only the row log-sum-exp (B,H,Tq) is kept and each block's P is recomputed in
the backward, so the score memory is bounded by B*H*chunk*Tk. 'full' is one block of all
rows, with P kept.

Outside a micro-batch of the model (parallel.py), the core runs its batch rows (or, for a
single sequence, its heads) in parts on parallel threads: every (row, head) is independent.
"""

import math

import numpy as np

from .alibi import alibi_bias
from .layers import linear_forward, linear_backward
from .parallel import map_parts, parts_for, split
from .rope import apply_rotary, apply_rotary_backward, rotary_table_grads

# 'auto' keeps each block's P for the backward while they take no more than this in all.
AUTO_CHUNK_BYTES = 64 * 2**20
MIN_PART_SCORES = 2**16  # the core is split into parts of at least this many scores (q.k pairs)


def kept_bytes(B, H, Tq, Tk, itemsize, chunk):
    # the size of every block's P: rows r0..r1-1 see keys 0..Tk-Tq+r1-1
    return B * H * itemsize * sum((min(r0 + chunk, Tq) - r0) * (Tk - Tq + min(r0 + chunk, Tq))
                                  for r0 in range(0, Tq, chunk))


def keeps_weights(impl, B, H, Tq, Tk, itemsize, chunk=64):
    """Whether the forward keeps P for the backward (else it keeps the log-sum-exp only)."""
    if impl not in ("auto", "full", "chunked"):
        raise ValueError(f"attention impl must be 'auto', 'full' or 'chunked', got {impl!r}")
    if impl == "auto":
        return kept_bytes(B, H, Tq, Tk, itemsize, chunk) <= AUTO_CHUNK_BYTES
    return impl == "full"


def _scores(q, k, slopes, q_start, row0):
    # q (B,H,R,d) rows row0..row0+R-1 of the queries, k (B,H,K,d) keys 0..K-1, K = q_start+row0+R
    # -> S (B,H,R,K) masked. Scaling q (R*d numbers) instead of S (R*K) keeps S to one pass.
    d = q.shape[-1]
    R, K = q.shape[-2], k.shape[-2]
    s = (q * (1.0 / math.sqrt(d))) @ np.swapaxes(k, -1, -2)
    if slopes is not None:
        s += alibi_bias(slopes, q_start + row0 + np.arange(R), np.arange(K)).astype(s.dtype)
    # causal mask: row i (query q_start+row0+i) sees keys n <= q_start+row0+i, so only the
    # last R keys can be masked, above the diagonal of that R x R corner
    corner = s[..., K - R:]
    corner += np.triu(np.full((R, R), -np.inf, dtype=s.dtype), 1)
    return s


def _softmax(s):
    # s (..., K) -> P (computed in place in s), log-sum-exp (...)
    m = np.max(s, axis=-1, keepdims=True)
    s -= m
    np.exp(s, out=s)
    total = s.sum(axis=-1, keepdims=True)
    s /= total
    return s, (m + np.log(total))[..., 0]


def attention_weights(q, k, slopes=None, q_start=0):
    """P (B,H,Tq,Tk) = softmax over n of the masked scores S: where each query looks.

    For looking inside a model (q, k from GPT.attention_inputs' q_rot, k_rot; slopes from
    GPT.slopes for ALiBi); row m sums to 1 and is zero past key q_start + m.
    """
    p, _ = _softmax(_scores(q, k, slopes, q_start, 0))
    return p


def _parts(B, H, Tq, Tk, slopes):
    # [(index into (B,H,...) arrays, the slopes of those heads)]: the batch rows in parts, or
    # the heads of a single sequence
    threads = parts_for(B * H * Tq * Tk, MIN_PART_SCORES)
    if B > 1 or H == 1:
        return [((slice(a, b),), slopes) for a, b in split(B, threads)]
    return [((slice(None), slice(a, b)), None if slopes is None else slopes[a:b])
            for a, b in split(H, threads)]


def attention_forward(q, k, v, slopes=None, q_start=0, impl="auto", chunk=64):
    # q (B,H,Tq,d), k (B,H,Tk,d), v (B,H,Tk,d), slopes (H,) for ALiBi or None -> out (B,H,Tq,d)
    B, H, Tq, _ = q.shape
    Tk = k.shape[-2]
    keep = keeps_weights(impl, B, H, Tq, Tk, q.itemsize, chunk)
    chunk = Tq if impl == "full" else chunk
    out = np.empty_like(q)
    lse = np.empty(q.shape[:-1], dtype=q.dtype)

    def forward_part(part):
        i, sl = part
        kept = []
        for r0 in range(0, Tq, chunk):
            r1 = min(r0 + chunk, Tq)
            keys = q_start + r1  # rows r0..r1-1 see keys 0..q_start+r1-1 only
            p, lse[i][..., r0:r1] = _softmax(_scores(q[i][..., r0:r1, :], k[i][..., :keys, :], sl, q_start, r0))
            out[i][..., r0:r1, :] = p @ v[i][..., :keys, :]
            if keep:
                kept.append(p)
        return kept

    parts = _parts(B, H, Tq, Tk, slopes)
    kept = map_parts(forward_part, parts)
    # p: each part's list of blocks of P, or None where the backward recomputes them from lse
    return out, dict(parts=parts, q=q, k=k, v=v, p=kept if keep else None, lse=lse, out=out,
                     q_start=q_start, chunk=chunk)


def attention_backward(dout, cache):
    # dout (B,H,Tq,d) -> dq (B,H,Tq,d), dk (B,H,Tk,d), dv (B,H,Tk,d)
    parts, q, k, v, out = cache["parts"], cache["q"], cache["k"], cache["v"], cache["out"]
    kept, lse, q_start, chunk = cache["p"], cache["lse"], cache["q_start"], cache["chunk"]
    Tq = q.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1])
    D = np.sum(dout * out, axis=-1, keepdims=True)
    dq = np.empty_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)

    def backward_part(n):
        i, sl = parts[n]
        q_scaled, k_scaled = q[i] * scale, k[i] * scale  # dq and dk both carry 1/sqrt(d)
        for b, r0 in enumerate(range(0, Tq, chunk)):
            r1 = min(r0 + chunk, Tq)
            keys = q_start + r1
            doc = dout[i][..., r0:r1, :]
            if kept is not None:
                p = kept[n][b]
            else:  # recompute P = exp(S - lse) from the log-sum-exp
                p = _scores(q[i][..., r0:r1, :], k[i][..., :keys, :], sl, q_start, r0)
                p -= lse[i][..., r0:r1, None]
                np.exp(p, out=p)
            dv[i][..., :keys, :] += np.swapaxes(p, -1, -2) @ doc
            ds = doc @ np.swapaxes(v[i][..., :keys, :], -1, -2)  # dP, turned into dS = P * (dP - D)
            ds -= D[i][..., r0:r1, :]
            ds *= p
            dq[i][..., r0:r1, :] = ds @ k_scaled[..., :keys, :]
            dk[i][..., :keys, :] += np.swapaxes(ds, -1, -2) @ q_scaled[..., r0:r1, :]

    map_parts(backward_part, range(len(parts)))
    return dq, dk, dv


# --- the layer: fused QKV projection, position embedding, core, output projection ----------

def split_heads(x, n_head):
    # (B,T,C) -> (B,H,T,d)
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)


def merge_heads(x):
    # (B,H,T,d) -> (B,T,C)
    B, H, T, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * d)


def self_attention_forward(x, wqkv, wo, n_head, cos=None, sin=None, slopes=None,
                           past=None, impl="auto", chunk=64):
    # x (B,T,C), wqkv (C,3C), wo (C,C); cos/sin (T,d/2) or (H,T,d/2) rotate q and k (RoPE, FoPE);
    # slopes (H,) bias the scores (ALiBi); past = (k, v) each (B,H,Tp,d) already rotated, or None
    # -> out (B,T,C), cache; cache["present"] = (k, v) (B,H,Tp+T,d) for the next decoding step
    qkv, qkv_cache = linear_forward(x, wqkv)
    q, k, v = (split_heads(t, n_head) for t in np.split(qkv, 3, axis=-1))
    if cos is not None:
        q_rot, k_rot = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    else:
        q_rot, k_rot = q, k
    q_start = 0
    if past is not None:
        q_start = past[0].shape[-2]
        k_rot = np.concatenate([past[0], k_rot], axis=-2)
        v = np.concatenate([past[1], v], axis=-2)
    y, core_cache = attention_forward(q_rot, k_rot, v, slopes, q_start, impl, chunk)
    out, out_cache = linear_forward(merge_heads(y), wo)
    cache = dict(qkv=qkv_cache, core=core_cache, out=out_cache, q=q, k=k, q_rot=q_rot, cos=cos, sin=sin,
                 n_head=n_head, q_start=q_start, present=(k_rot, v))
    return out, cache


def self_attention_backward(dout, cache, table_grads=False):
    # dout (B,T,C) -> dx (B,T,C), dwqkv (C,3C), dwo (C,C), dcos, dsin (H,T,d/2) or None
    # (dcos, dsin are returned when table_grads: learnable FoPE needs them; q and k share the
    # tables, so their two contributions add up.)
    if cache["q_start"]:
        raise RuntimeError("backward through a key/value cache is not supported")
    dy, dwo = linear_backward(dout, cache["out"])
    dq_rot, dk_rot, dv = attention_backward(split_heads(dy, cache["n_head"]), cache["core"])
    cos, sin = cache["cos"], cache["sin"]
    dcos = dsin = None
    if cos is not None:
        if table_grads:
            dcos_q, dsin_q = rotary_table_grads(cache["q"], dq_rot)
            dcos_k, dsin_k = rotary_table_grads(cache["k"], dk_rot)
            dcos, dsin = dcos_q + dcos_k, dsin_q + dsin_k
        dq, dk = apply_rotary_backward(dq_rot, cos, sin), apply_rotary_backward(dk_rot, cos, sin)
    else:
        dq, dk = dq_rot, dk_rot
    dqkv = np.concatenate([merge_heads(dq), merge_heads(dk), merge_heads(dv)], axis=-1)
    dx, dwqkv = linear_backward(dqkv, cache["qkv"])
    return dx, dwqkv, dwo, dcos, dsin
