"""Every exercise checker accepts the right answer and rejects realistic wrong ones, with feedback.

A right answer here is written from the library (or the textbook formula); a wrong answer is
a mistake a student makes. Each test asserts the checker's verdict and, where the checker
knows the mistake, that its hint names it.
"""

import math

import numpy as np
import pytest

from minifope import alibi, fope, spectrum
from minifope.attention import attention_backward, attention_forward
from minifope.exercises import alibi as ex_alibi
from minifope.exercises import backprop, grading
from minifope.exercises import fope as ex_fope
from minifope.exercises import rope as ex_rope
from minifope.exercises import spectrum as ex_spectrum
from minifope.layers import linear_backward, linear_forward, rmsnorm_backward, rmsnorm_forward
from minifope.rope import apply_rotary, apply_rotary_backward, as_complex, nudft_scores, rope_tables


# --- right answers ----------------------------------------------------------------------------

def linear_right(dout, x, w):
    return linear_backward(dout, linear_forward(x, w)[1])


def softmax_right(dp, p):
    return p * (dp - np.sum(p * dp, axis=-1, keepdims=True))


def rmsnorm_right(dout, x, g, eps):
    return rmsnorm_backward(dout, rmsnorm_forward(x, g, eps)[1])


def attention_right(dout, q, k, v):
    return attention_backward(dout, attention_forward(q, k, v, impl="full")[1])


def rotate_right(x, positions, w):
    cos, sin = rope_tables(positions, w)
    return apply_rotary(x, cos, sin)


def fourier_right(q, k, w, m, n):
    h = as_complex(q)[:, None, :] * np.conj(as_complex(k))[None, :, :]
    return np.real(np.sum(h * np.exp(1j * (m[:, None] - n[None, :])[..., None] * w), axis=-1))


def rotary_backward_right(dout, cos, sin):
    return apply_rotary(dout, cos, -sin)


def clipped_right(w, N):
    return np.where(2 * math.pi / w > N, 0.0, w)


def undertrained_right(w, N):
    return 2 * math.pi / w > N


def fope_frequencies_right(head_dim, theta, N):
    return fope.fope_frequencies(head_dim, theta, N)


RIGHT = [
    (backprop.check_linear_backward, linear_right),
    (backprop.check_softmax_backward, softmax_right),
    (backprop.check_rmsnorm_backward, rmsnorm_right),
    (backprop.check_attention_backward, attention_right),
    (ex_rope.check_rotate, rotate_right),
    (ex_rope.check_rotary_backward, rotary_backward_right),
    (ex_rope.check_rotary_backward, apply_rotary_backward),
    (ex_rope.check_fourier_score, fourier_right),
    (ex_rope.check_fourier_score, lambda q, k, w, m, n: nudft_scores(q, k, w, m, n)),
    (ex_spectrum.check_off_frequency_energy, spectrum.off_frequency_energy),
    (ex_spectrum.check_undertrained, undertrained_right),
    (ex_fope.check_clipped_frequencies, clipped_right),
    (ex_fope.check_clipped_frequencies, lambda w, N: np.where(w < 2 * math.pi / N, 0.0, w)),
    (ex_fope.check_fope_frequencies, fope_frequencies_right),
    (ex_fope.check_fope_tables, fope.fope_tables),
    (ex_alibi.check_alibi_slopes, alibi.alibi_slopes),
    (ex_alibi.check_alibi_bias, alibi.alibi_bias),
]


@pytest.mark.parametrize("check, answer", RIGHT, ids=lambda x: getattr(x, "__name__", ""))
def test_checker_accepts_the_right_answer(check, answer, capsys):
    assert check(answer) is True
    out = capsys.readouterr().out
    assert "all ok" in out and "FAIL" not in out


# --- wrong answers: (checker, wrong answer, words the output must contain) -----------------------

def rmsnorm_rstd_constant(dout, x, g, eps):
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return g * dout * rstd, rmsnorm_right(dout, x, g, eps)[1]


def rmsnorm_dg_not_summed(dout, x, g, eps):
    rstd = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return rmsnorm_right(dout, x, g, eps)[0], dout * x * rstd


def attention_no_scale(dout, q, k, v):
    dq, dk, dv = attention_right(dout, q, k, v)
    root = math.sqrt(q.shape[-1])
    return dq * root, dk * root, dv


def rotate_interleaved(x, positions, w):
    half = x.shape[-1] // 2
    pairs = x.reshape(*x.shape[:-1], half, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    angle = positions[:, None] * w
    out = np.stack([a * np.cos(angle) - b * np.sin(angle), b * np.cos(angle) + a * np.sin(angle)], -1)
    return out.reshape(x.shape)


def fourier_without_conj(q, k, w, m, n):
    h = as_complex(q)[:, None, :] * as_complex(k)[None, :, :]
    return np.real(np.sum(h * np.exp(1j * (m[:, None] - n[None, :])[..., None] * w), axis=-1))


def rotary_backward_halves(dout, cos, sin, sign_a, sign_b):
    # per pair: da = ga cos + sign_a gb sin, db = gb cos + sign_b ga sin (right: +1, -1)
    half = dout.shape[-1] // 2
    ga, gb = dout[..., :half], dout[..., half:]
    return np.concatenate([ga * cos + sign_a * gb * sin, gb * cos + sign_b * ga * sin], axis=-1)


def rotary_backward_swapped(dout, cos, sin):
    dx = rotary_backward_right(dout, cos, sin)
    half = dx.shape[-1] // 2
    return np.concatenate([dx[..., half:], dx[..., :half]], axis=-1)


def fope_tables_authors(positions, w, ccos, csin, head_dim):
    return fope.fope_tables(positions, w, ccos, csin, head_dim, zero_freq="authors")


def fope_tables_unpadded(positions, w, ccos, csin, head_dim):
    angles = positions[:, None] * w
    return (np.einsum("mf,hfj->hmj", np.cos(angles), ccos),
            np.einsum("mf,hfj->hmj", np.sin(angles), csin))


def fope_frequencies_zeroed(head_dim, theta, N):
    w = fope.fope_frequencies(head_dim, theta, N, clip=False)
    return np.where(w < 2 * math.pi / N, 0.0, w)


def slopes_geometric_for_every_H(H):
    return 2.0 ** (-8.0 / H * np.arange(1, H + 1))


def not_done(*args):
    raise NotImplementedError


WRONG = [
    (backprop.check_linear_backward, lambda dout, x, w: (dout @ w.T, x[0].T @ dout[0]), "too early"),
    (backprop.check_linear_backward, lambda dout, x, w: (dout @ w.T,), "must return 2 arrays"),
    (backprop.check_softmax_backward, lambda dp, p: p * dp, "diagonal of the Jacobian"),
    (backprop.check_softmax_backward,
     lambda dp, p: p * (dp - np.sum(p * dp, axis=-2, keepdims=True)), "last axis"),
    (backprop.check_softmax_backward, lambda dp, p: p * (dp - dp.sum(-1, keepdims=True)),
     "weighted by P"),
    (backprop.check_rmsnorm_backward, rmsnorm_rstd_constant, "rstd depends on x"),
    (backprop.check_rmsnorm_backward, rmsnorm_dg_not_summed, "summed over every axis"),
    (backprop.check_attention_backward, attention_no_scale, "sqrt(d)"),
    (backprop.check_attention_backward, not_done, "not done yet"),
    (ex_rope.check_rotate, lambda x, positions, w: rotate_right(x, -positions, w), "wrong way"),
    (ex_rope.check_rotate, rotate_interleaved, "interleaved"),
    (ex_rope.check_fourier_score, fourier_without_conj, "conj(k_j)"),
    (ex_rope.check_fourier_score, lambda q, k, w, m, n: fourier_right(q, k, w, -m, -n), "n - m"),
    (ex_rope.check_fourier_score, lambda *a: fourier_right(*a) + 0j, "real part"),
    (ex_rope.check_rotary_backward, apply_rotary, "R^T is not R"),
    (ex_rope.check_rotary_backward, rotary_backward_swapped, "halves are swapped"),
    (ex_rope.check_rotary_backward, lambda *a: rotary_backward_halves(*a, 1, 1), "second half still"),
    (ex_rope.check_rotary_backward, lambda *a: rotary_backward_halves(*a, -1, -1), "first half still"),
    (ex_rope.check_rotary_backward, lambda *a: np.swapaxes(rotary_backward_right(*a), -1, -2),
     "last two axes swapped"),
    (ex_spectrum.check_off_frequency_energy, lambda z, w: 1 - spectrum.off_frequency_energy(z, w),
     "1 minus it"),
    (ex_spectrum.check_off_frequency_energy,
     lambda z, w: 1 - np.abs(np.sum(z * np.exp(-1j * w[:, None] * np.arange(z.shape[-1])), -1)) ** 2
     / np.sum(np.abs(z) ** 2, -1), "factor M"),
    (ex_spectrum.check_undertrained, lambda w, N: w < 1.0 / N, "2*pi/N"),
    (ex_spectrum.check_undertrained, lambda w, N: 2 * math.pi / w < N, "inverted"),
    (ex_fope.check_clipped_frequencies, lambda w, N: np.where(w < 4 * math.pi / N, 0.0, w), "N/2"),
    (ex_fope.check_clipped_frequencies, lambda w, N: np.where(w < 1.0 / N, 0.0, w), "not w < 1/N"),
    (ex_fope.check_clipped_frequencies, lambda w, N: np.where(w <= 2 * math.pi / N, 0.0, w), "strict"),
    (ex_fope.check_clipped_frequencies, lambda w, N: np.where(w >= 2 * math.pi / N, 0.0, w),
     "zeroed the fast ones"),
    (ex_fope.check_clipped_frequencies, lambda w, N: w[w >= 2 * math.pi / N], "do not drop them"),
    (ex_fope.check_clipped_frequencies, lambda w, N: w < 2 * math.pi / N, "not the mask"),
    (ex_fope.check_fope_frequencies, fope_frequencies_zeroed, "dropped"),
    (ex_fope.check_fope_tables, fope_tables_authors, "zero_freq='authors'"),
    (ex_fope.check_fope_tables, fope_tables_unpadded, "pad the J series pairs"),
    (ex_fope.check_fope_tables,
     lambda positions, w, ccos, csin, head_dim: fope.fope_tables(positions, w, csin, ccos, head_dim),
     "two separate"),
    (ex_alibi.check_alibi_slopes, slopes_geometric_for_every_H, "slopes(2c)[0::2]"),
    (ex_alibi.check_alibi_slopes, lambda H: alibi.alibi_slopes(H)[:-1], "shape"),
    (ex_alibi.check_alibi_bias, lambda s, m, n: -alibi.alibi_bias(s, m, n), "penalty"),
    (ex_alibi.check_alibi_bias, lambda s, m, n: np.abs(alibi.alibi_bias(s, m, n)), "m - n"),
]


@pytest.mark.parametrize("check, answer, words", WRONG,
                         ids=[f"{c.__name__}-{w}" for c, _, w in WRONG])
def test_checker_rejects_a_wrong_answer_and_says_why(check, answer, words, capsys):
    assert check(answer) is False
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert words in out, out


def test_a_checker_given_no_function_says_so(capsys):
    assert backprop.check_softmax_backward(np.zeros(3)) is False
    assert "expected a function" in capsys.readouterr().out


def test_a_checker_reports_the_exception_of_a_broken_answer(capsys):
    assert backprop.check_softmax_backward(lambda dp, p: dp @ np.ones((3, 3))) is False
    assert "raised ValueError" in capsys.readouterr().out


def test_a_placeholder_answer_of_zeros_fails_with_its_error(capsys):
    assert backprop.check_softmax_backward(lambda dp, p: np.zeros_like(p)) is False
    out = capsys.readouterr().out
    assert "ds" in out and "1.000e+00" in out  # rel error of all zeros is exactly 1


def test_matches_needs_equal_shapes():
    assert grading.matches(np.ones(3), np.ones(3), 0.0)
    assert not grading.matches(np.ones(3), np.ones(4), 1.0)


def test_an_unwritten_answer_is_reported_once_without_an_empty_table(capsys):
    assert ex_alibi.check_alibi_slopes(not_done) is False
    out = capsys.readouterr().out
    assert out.count("not done yet") == 1
    assert "tensor" not in out
