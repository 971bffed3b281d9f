"""Checkers for lessons 0 and 1: backward passes written by hand, graded against autograd.

Each `check_*` takes the student's function, builds its inputs with a fixed seed (float64),
pulls a random upstream gradient back through the student's code and through autograd of
the plain formula in `minifope.reference`, prints one row per tensor and returns True/False.

    check_linear_backward(fn)      fn(dout, x, w) -> dx, dw          out = x @ w
    check_softmax_backward(fn)     fn(dp, p) -> ds                   p = softmax(s) over the last axis
    check_rmsnorm_backward(fn)     fn(dout, x, g, eps) -> dx, dg     out = g * x / sqrt(mean(x^2) + eps)
    check_attention_backward(fn)   fn(dout, q, k, v) -> dq, dk, dv   causal softmax(q k^T / sqrt(d)) v
"""

import math

import autograd.numpy as anp
import numpy as np

from .. import reference
from ..gradcheck import autograd_gradients
from ..layers import RMSNORM_EPS
from .grading import grade


def _inputs(seed, **shapes):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


def check_linear_backward(fn, seed=0):
    """fn(dout, x, w) -> (dx, dw) for out = x @ w, x (B,T,Cin), w (Cin,Cout)."""
    a = _inputs(seed, x=(2, 3, 4), w=(4, 5), dout=(2, 3, 5))
    ref = autograd_gradients(reference.linear, dict(x=a["x"], w=a["w"]), a["dout"])
    x2, dout2 = a["x"].reshape(-1, 4), a["dout"].reshape(-1, 5)
    mistakes = {
        "dw summed the batch and time axes away too early? dw = sum over every (b, t) of "
        "outer(x[b, t], dout[b, t]), i.e. x.reshape(-1, Cin).T @ dout.reshape(-1, Cout)":
            [None, a["x"][0].T @ a["dout"][0]],
        "dw has the shape of w transposed: dw = x^T dout, not dout^T x":
            [None, dout2.T @ x2],
    }
    return grade("linear_backward", fn, (a["dout"], a["x"], a["w"]), ["dx", "dw"],
                 [ref["x"], ref["w"]], mistakes=mistakes)


def _softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_softmax_backward(fn, seed=0):
    """fn(dp, p) -> ds, the gradient of the scores s given p = softmax(s) over the last axis.

    Inputs: s (B,H,T,T) random, p = softmax(s), dp an upstream gradient, all float64.
    """
    a = _inputs(seed, s=(2, 2, 5, 5), dp=(2, 2, 5, 5))
    s, dp = a["s"], a["dp"]
    p = _softmax(s)
    ref = autograd_gradients(lambda s: anp.exp(reference.log_softmax(s)), dict(s=s), dp)["s"]
    mistakes = {
        "ds = P * dP is only the diagonal of the Jacobian: every p_n depends on every s_n' "
        "through the normaliser, which adds the term -P * sum_n(P * dP)": [p * dp],
        "the sum sum_n P[m,n] dP[m,n] runs over the last axis (the keys n), with keepdims=True":
            [p * (dp - np.sum(p * dp, axis=-2, keepdims=True))],
        "the row sum is sum_n P[m,n] * dP[m,n], weighted by P, not sum_n dP[m,n]":
            [p * (dp - np.sum(dp, axis=-1, keepdims=True))],
        "the sign is flipped: ds = P * (dP - sum_n P dP)": [-ref],
    }
    return grade("softmax_backward", fn, (dp, p), ["ds"], [ref], mistakes=mistakes)


def check_rmsnorm_backward(fn, seed=0):
    """fn(dout, x, g, eps) -> (dx, dg) for out = g * x / sqrt(mean(x^2, last axis) + eps).

    Inputs: x (B,T,C), g (C,), dout (B,T,C) float64; eps = minifope.layers.RMSNORM_EPS.
    """
    a = _inputs(seed, x=(2, 3, 8), g=(8,), dout=(2, 3, 8))
    x, g, dout = a["x"], a["g"], a["dout"]
    ref = autograd_gradients(reference.rmsnorm, dict(x=x, g=g), dout)
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + RMSNORM_EPS)
    xhat = x * rstd
    mistakes = {
        "dx = g * dout * rstd treats rstd as a constant, but rstd depends on x as well: "
        "add the term -xhat * mean(dxhat * xhat) (with dxhat = g * dout) inside rstd * (...)":
            [g * dout * rstd, None],
        "dg must be summed over every axis but the last (g is shared by all (b, t))":
            [None, dout * xhat],
        "dg = sum(dout * xhat): the normalised x, not x itself": [None, np.sum(dout * x, axis=(0, 1))],
        "the mean in dx runs over the last axis (the C features of one vector)":
            [rstd * (g * dout - xhat * np.mean(g * dout * xhat, axis=0, keepdims=True)), None],
    }
    return grade("rmsnorm_backward", fn, (dout, x, g, RMSNORM_EPS), ["dx", "dg"],
                 [ref["x"], ref["g"]], mistakes=mistakes)


def check_attention_backward(fn, seed=0):
    """fn(dout, q, k, v) -> (dq, dk, dv) for the causal core out = softmax(q k^T / sqrt(d)) v.

    Inputs: q, k, v, dout (B,H,T,d) float64; key n is visible from query m when n <= m.
    """
    a = _inputs(seed, q=(2, 2, 5, 4), k=(2, 2, 5, 4), v=(2, 2, 5, 4), dout=(2, 2, 5, 4))
    q, k, v, dout = a["q"], a["k"], a["v"], a["dout"]
    ref = autograd_gradients(reference.attention, dict(q=q, k=k, v=v), dout)
    root = math.sqrt(q.shape[-1])
    mistakes = {
        "dq and dk are off by sqrt(d): the scores are q k^T / sqrt(d), so dq = dS k / sqrt(d) "
        "and dk = dS^T q / sqrt(d)": [ref["q"] * root, ref["k"] * root, None],
        "dq and dk are off by 1/sqrt(d): the 1/sqrt(d) appears once, not twice":
            [ref["q"] / root, ref["k"] / root, None],
    }
    return grade("attention_backward", fn, (dout, q, k, v), ["dq", "dk", "dv"],
                 [ref["q"], ref["k"], ref["v"]], mistakes=mistakes)
