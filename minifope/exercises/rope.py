"""Checkers for lesson 2: RoPE as rotations, its backward, and the score as a non-uniform Fourier sum.

    check_rotate(fn)            fn(x, positions, w) -> x'      the half-split rotation, x (T, d)
    check_rotary_backward(fn)   fn(dout, cos, sin) -> dx       for x' = apply_rotary(x, cos, sin),
                                                               dout = dL/dx' and dx (B, H, T, d)
    check_fourier_score(fn)     fn(q, k, w, q_positions, k_positions) -> s (Tq, Tk)
                                s(m, n) = Re( sum_j q_j conj(k_j) exp(i w_j (m - n)) )

The reference for the rotation and the Fourier sum is the rotation of minifope.rope
(apply_rotary with rope_tables): the Fourier sum is graded against rotate-then-dot-product,
which is what lesson 2 asks the student to show equal. The backward is graded against
autograd of minifope.reference.rotary and against minifope.rope.apply_rotary_backward.
"""

import numpy as np

from .. import reference
from ..gradcheck import autograd_gradients
from ..rope import apply_rotary, apply_rotary_backward, as_complex, rope_frequencies, rope_tables
from .grading import grade, grade_cases


def _rotated(x, positions, w):
    cos, sin = rope_tables(positions, w)
    return apply_rotary(x[None, None], cos, sin)[0, 0]


def _interleaved(x):
    # pair j = dims (2j, 2j+1) read as the half-split pair (j, j + d/2)
    return np.concatenate([x[..., 0::2], x[..., 1::2]], axis=-1)


def _from_interleaved(x):
    out = np.empty_like(x)
    half = x.shape[-1] // 2
    out[..., 0::2], out[..., 1::2] = x[..., :half], x[..., half:]
    return out


def check_rotate(fn, seed=0):
    """fn(x, positions, w) -> x' (T, d): pair j = (x[j], x[j + d/2]) of row t rotated by w_j * positions[t]."""
    rng = np.random.default_rng(seed)
    d, T = 8, 6
    x = rng.standard_normal((T, d))
    positions = rng.integers(0, 200, T).astype(np.float64)
    w = rope_frequencies(d)
    ref = _rotated(x, positions, w)
    mistakes = {
        "the rotation goes the wrong way: a' = a cos - b sin, b' = b cos + a sin "
        "(rotate_half([a, b]) = [-b, a])": [_rotated(x, -positions, w)],
        "that is the interleaved layout (pairs 2j, 2j+1, the RoFormer paper); minifope pairs "
        "dimension j with j + d/2 (half-split, as GPT-NeoX and Llama)":
            [_from_interleaved(_rotated(_interleaved(x), positions, w))],
        "only the first half is rotated right: the second half of the pair is b' = b cos + a sin":
            [np.concatenate([ref[:, :d // 2], x[:, d // 2:] * np.cos(positions[:, None] * w)], axis=-1)],
    }
    return grade("rotate", fn, (x, positions, w), ["x_rot"], [ref], tol=1e-10, mistakes=mistakes)


def check_rotary_backward(fn, seed=0):
    """fn(dout, cos, sin) -> dx (B, H, T, d), the gradient of x for x' = apply_rotary(x, cos, sin).

    RoPE's tables of d = 8 at T = 6 random positions, B = 1, H = 2; graded against autograd of
    minifope.reference.rotary, then against minifope.rope.apply_rotary_backward at positions
    up to 10^5.
    """
    rng = np.random.default_rng(seed)
    B, H, T, d = 1, 2, 6, 8
    half = d // 2
    w = rope_frequencies(d)

    def autograd_dx(x, dout, cos, sin):
        return autograd_gradients(reference.rotary, dict(x=x, cos=cos, sin=sin), dout)["x"]

    cases = []
    for label, top, reference_dx in (("dx vs autograd", 200, autograd_dx),
                                     ("dx vs apply_rotary_backward", 100_000,
                                      lambda x, dout, cos, sin: apply_rotary_backward(dout, cos, sin))):
        cos, sin = rope_tables(rng.integers(0, top, T).astype(np.float64), w)
        x, dout = rng.standard_normal((B, H, T, d)), rng.standard_normal((B, H, T, d))
        ref = reference_dx(x, dout, cos, sin)
        ga, gb = dout[..., :half], dout[..., half:]
        mistakes = {
            "that rotates dout by +w_j m, as the forward does: the backward of the linear map "
            "x' = R x is dx = R^T dout, and R^T is not R": [apply_rotary(dout, cos, sin)],
            "the halves are swapped: dx[..., :d/2] is the gradient of the first members a_j of "
            "the pairs, dx[..., d/2:] that of the second members b_j":
                [np.concatenate([ref[..., half:], ref[..., :half]], axis=-1)],
            "the sign of sin flips in both rows of R^T = [[cos, sin], [-sin, cos]]; your second "
            "half still has the forward's sign (b' = b cos + a sin)":
                [np.concatenate([ga * cos + gb * sin, gb * cos + ga * sin], axis=-1)],
            "the sign of sin flips in both rows of R^T = [[cos, sin], [-sin, cos]]; your first "
            "half still has the forward's sign (a' = a cos - b sin)":
                [np.concatenate([ga * cos - gb * sin, gb * cos - ga * sin], axis=-1)],
            "dx has the shape of x, (B, H, T, d): you returned it with the last two axes swapped":
                [np.swapaxes(ref, -1, -2)],
        }
        cases.append((label, (dout, cos, sin), ref, mistakes))
    return grade_cases("rotary_backward", fn, cases, tol=1e-10)


def check_fourier_score(fn, seed=0):
    """fn(q, k, w, q_positions, k_positions) -> s (Tq, Tk), the Fourier sum; graded against
    rotate(q) @ rotate(k)^T computed with minifope.rope.apply_rotary."""
    rng = np.random.default_rng(seed)
    d = 16
    q, k = rng.standard_normal((5, d)), rng.standard_normal((7, d))
    m = rng.integers(0, 500, 5).astype(np.float64)
    n = rng.integers(0, 500, 7).astype(np.float64)
    w = rope_frequencies(d)
    ref = _rotated(q, m, w) @ _rotated(k, n, w).T
    zq, zk = as_complex(q), as_complex(k)
    dist = m[:, None] - n[None, :]

    def fourier(h, sign):
        return np.real(np.einsum("mnj,mnj->mn", h, np.exp(sign * 1j * dist[..., None] * w)))

    mistakes = {
        "the spectrum is h_j = q_j * conj(k_j): without the conjugate the phases of k add "
        "instead of cancelling": [fourier(zq[:, None] * zk[None], 1)],
        "the phase is exp(+i w_j (m - n)), with m the query's position: you have n - m":
            [fourier(zq[:, None] * np.conj(zk)[None], -1)],
        "the sum over pairs counts each pair once; a real dot product of the rotated vectors "
        "equals Re(sum_j ...), not 2 Re(...) or |...|": [2 * ref],
    }
    return grade("fourier_score", fn, (q, k, w, m, n), ["s"], [ref], tol=1e-10, mistakes=mistakes)
