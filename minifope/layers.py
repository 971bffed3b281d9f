"""The layers of the GPT outside attention, each forward with its backward beside it.

Shapes: B batch, T time, C model width, V vocabulary, F SwiGLU hidden width.
Every `*_forward` returns `(out, cache)`; the matching `*_backward(dout, cache)`
returns the gradients of its inputs, in the order the forward takes them.
No state lives anywhere but in the cache.
"""

import numpy as np

RMSNORM_EPS = 1e-6
IGNORE_INDEX = -1


# --- token embedding -------------------------------------------------------------------

def embedding_forward(idx, wte):
    # idx (B,T) int, wte (V,C) -> out (B,T,C)
    return wte[idx], (idx, wte.shape)


def embedding_backward(dout, cache):
    # dout (B,T,C) -> dwte (V,C)
    # A token that occurs several times gets the sum of its rows. Sorting the positions
    # by token and summing runs with reduceat does that in one pass, without np.add.at.
    idx, wte_shape = cache
    flat_idx = idx.reshape(-1)
    flat_dout = dout.reshape(-1, wte_shape[1])
    order = np.argsort(flat_idx, kind="stable")
    tokens, starts = np.unique(flat_idx[order], return_index=True)
    dwte = np.zeros(wte_shape, dtype=dout.dtype)
    if tokens.size:
        dwte[tokens] = np.add.reduceat(flat_dout[order], starts, axis=0)
    return (dwte,)


# --- linear (no bias) ------------------------------------------------------------------

def linear_forward(x, w):
    # x (..., Cin), w (Cin, Cout) -> out (..., Cout);  out = x @ w
    return x @ w, (x, w)


def linear_backward(dout, cache):
    # dout (..., Cout) -> dx (..., Cin), dw (Cin, Cout)
    x, w = cache
    dx = dout @ w.T
    dw = x.reshape(-1, x.shape[-1]).T @ dout.reshape(-1, dout.shape[-1])
    return dx, dw


# --- RMSNorm with a learned scale -------------------------------------------------------

def rmsnorm_forward(x, g, eps=RMSNORM_EPS):
    # x (..., C), g (C,) -> out (..., C)
    # out = g * x / sqrt(mean(x^2) + eps)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    xhat = x * rstd
    return xhat * g, (xhat, rstd, g)


def rmsnorm_backward(dout, cache):
    # dout (..., C) -> dx (..., C), dg (C,)
    # With xhat = x * rstd:  dx = rstd * (dxhat - xhat * mean(dxhat * xhat)).
    xhat, rstd, g = cache
    dg = np.sum(dout * xhat, axis=tuple(range(dout.ndim - 1)))
    dxhat = dout * g
    dx = rstd * (dxhat - xhat * np.mean(dxhat * xhat, axis=-1, keepdims=True))
    return dx, dg


# --- SwiGLU MLP -------------------------------------------------------------------------

def swiglu_forward(x, w_in, w_out):
    # x (..., C), w_in (C, 2F) = [W_gate | W_up], w_out (F, C) -> out (..., C)
    # out = (silu(x W_gate) * (x W_up)) W_out,  silu(a) = a * sigmoid(a)
    # Computed feature-major, a^T = W_in^T x^T of shape (2F, N) for the N = B*T rows: its
    # gate and up halves are then contiguous blocks, which the elementwise passes walk in
    # one run each (row-major, they would be interleaved strided halves, walked slower).
    F = w_out.shape[0]
    rows = x.reshape(-1, x.shape[-1])
    a_t = w_in.T @ rows.T
    gate, up = a_t[:F], a_t[F:]
    sig = np.negative(gate)
    np.exp(sig, out=sig)
    sig += 1.0
    np.reciprocal(sig, out=sig)  # sigmoid(gate) = 1 / (1 + exp(-gate)), in one buffer
    act = gate * sig
    h_t = act * up
    out = h_t.T @ w_out
    return out.reshape(x.shape[:-1] + (w_out.shape[1],)), (rows, w_in, w_out, gate, up, sig, act, h_t)


def swiglu_backward(dout, cache):
    # dout (..., C) -> dx (..., C), dw_in (C, 2F), dw_out (F, C); feature-major like the forward
    rows, w_in, w_out, gate, up, sig, act, h_t = cache
    F = w_out.shape[0]
    drows = dout.reshape(-1, dout.shape[-1])
    dw_out = h_t @ drows
    dh_t = w_out @ drows.T
    da_t = np.empty((2 * F, dh_t.shape[1]), dtype=dh_t.dtype)  # [dgate; dup]
    dgate, dup = da_t[:F], da_t[F:]
    np.multiply(dh_t, act, out=dup)
    # d silu(a)/da = sigmoid(a) * (1 + a * (1 - sigmoid(a))), written straight into dgate
    np.subtract(1.0, sig, out=dgate)
    dgate *= gate
    dgate += 1.0
    dgate *= sig
    dgate *= up
    dgate *= dh_t
    dx = da_t.T @ w_in.T
    dw_in = rows.T @ da_t.T
    return dx.reshape(dout.shape[:-1] + (rows.shape[1],)), dw_in, dw_out


# --- softmax cross-entropy --------------------------------------------------------------

def cross_entropy_forward(logits, targets):
    # logits (B,T,V), targets (B,T) int with IGNORE_INDEX for positions without loss
    # loss = mean over counted positions of  logsumexp(logits) - logits[target]
    # The max is subtracted before exp, so no logit overflows.
    valid = targets != IGNORE_INDEX
    count = max(int(valid.sum()), 1)
    safe_targets = np.where(valid, targets, 0)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    logsumexp = np.log(np.sum(np.exp(shifted), axis=-1))
    target_logit = np.take_along_axis(shifted, safe_targets[..., None], axis=-1)[..., 0]
    nll = (logsumexp - target_logit) * valid
    loss = float(nll.sum() / count)
    return loss, (shifted, logsumexp, safe_targets, valid, count)


def cross_entropy_backward(dloss, cache):
    # dloss scalar -> dlogits (B,T,V) = dloss * (softmax(logits) - onehot(target)) / count
    shifted, logsumexp, safe_targets, valid, count = cache
    dlogits = np.exp(shifted - logsumexp[..., None])
    np.put_along_axis(dlogits, safe_targets[..., None],
                      np.take_along_axis(dlogits, safe_targets[..., None], axis=-1) - 1.0, axis=-1)
    dlogits *= (dloss / count) * valid[..., None]
    return (dlogits,)
