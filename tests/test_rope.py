"""RoPE: the frequencies, the rotation, and the rotation read as a non-uniform DFT (fope-spec 1)."""

import numpy as np
import pytest

from minifope import rope_frequencies
from minifope.rope import (apply_rotary, as_complex, nudft_scores, nudft_spectrum, rope_tables,
                           rotate_half)


def test_rope_frequencies_are_theta_to_minus_2j_over_d():
    w = rope_frequencies(8, theta=10000.0)
    np.testing.assert_allclose(w, [1.0, 10000 ** -0.25, 10000 ** -0.5, 10000 ** -0.75], rtol=1e-15)
    assert rope_frequencies(64, 500000.0)[-1] == pytest.approx(500000.0 ** (-62 / 64))


def test_rope_frequencies_refuse_an_odd_head_dim():
    with pytest.raises(ValueError):
        rope_frequencies(7)


def test_rotate_half_maps_a_b_to_minus_b_a():
    np.testing.assert_array_equal(rotate_half(np.array([1.0, 2.0, 3.0, 4.0])), [-3.0, -4.0, 1.0, 2.0])


def test_rotation_form_is_x_cos_plus_rotate_half_x_sin():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 1, 5, 8))
    cos, sin = rope_tables(np.arange(5), rope_frequencies(8))
    expected = x * np.concatenate([cos, cos], -1) + rotate_half(x) * np.concatenate([sin, sin], -1)
    np.testing.assert_allclose(apply_rotary(x, cos, sin), expected, rtol=1e-14)


def test_rotation_is_complex_multiplication_by_exp_i_w_m():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 1, 6, 8))
    m = np.arange(6) + 11
    w = rope_frequencies(8)
    rotated = apply_rotary(x, *rope_tables(m, w))
    np.testing.assert_allclose(as_complex(rotated), as_complex(x) * np.exp(1j * m[:, None] * w),
                               rtol=1e-12)


def test_rotation_preserves_the_norm_of_every_pair():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 16))
    rotated = apply_rotary(x, *rope_tables(np.arange(7) * 1000, rope_frequencies(16)))
    np.testing.assert_allclose(np.abs(as_complex(rotated)), np.abs(as_complex(x)), rtol=1e-12)


def test_rotation_form_equals_nudft_form():
    rng = np.random.default_rng(3)
    d, Tq, Tk = 16, 9, 13
    q, k = rng.standard_normal((2, 3, Tq, d)), rng.standard_normal((2, 3, Tk, d))
    w = rope_frequencies(d)
    q_pos, k_pos = np.arange(Tq) + 40, np.arange(Tk) + 7
    rotation = apply_rotary(q, *rope_tables(q_pos, w)) @ np.swapaxes(
        apply_rotary(k, *rope_tables(k_pos, w)), -1, -2)
    fourier = nudft_scores(q, k, w, q_pos, k_pos)
    assert np.max(np.abs(rotation - fourier)) / np.max(np.abs(rotation)) < 1e-12


def test_rope_score_depends_only_on_relative_distance():
    rng = np.random.default_rng(4)
    q, k = rng.standard_normal((1, 1, 1, 8)), rng.standard_normal((1, 1, 1, 8))
    w = rope_frequencies(8)
    near = nudft_scores(q, k, w, [5], [2])
    far = nudft_scores(q, k, w, [1005], [1002])
    np.testing.assert_allclose(near, far, rtol=1e-10)


def test_spectrum_is_q_times_conjugate_k_per_pair():
    q = np.array([[1.0, 2.0, 3.0, 4.0]])    # z = 1+3i, 2+4i
    k = np.array([[0.5, -1.0, 2.0, 1.0]])   # z = 0.5+2i, -1+1i
    h = nudft_spectrum(q, k)[0, 0]
    np.testing.assert_allclose(h, [(1 + 3j) * (0.5 - 2j), (2 + 4j) * (-1 - 1j)])


def test_interleaved_layout_is_half_split_up_to_a_permutation():
    # RoFormer pairs dims (2j, 2j+1); half-split pairs (j, j + d/2). Permuting q and k turns
    # one into the other, so the scores are the same.
    rng = np.random.default_rng(5)
    d, T = 8, 6
    q, k = rng.standard_normal((T, d)), rng.standard_normal((T, d))
    w = rope_frequencies(d)
    angles = np.arange(T)[:, None] * w

    def interleaved(x):
        a, b = x[:, 0::2], x[:, 1::2]
        out = np.empty_like(x)
        out[:, 0::2] = a * np.cos(angles) - b * np.sin(angles)
        out[:, 1::2] = b * np.cos(angles) + a * np.sin(angles)
        return out

    perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
    cos, sin = rope_tables(np.arange(T), w)
    half_split = apply_rotary(q[:, perm], cos, sin) @ apply_rotary(k[:, perm], cos, sin).T
    np.testing.assert_allclose(interleaved(q) @ interleaved(k).T, half_split, rtol=1e-12)


def test_rotation_broadcasts_one_vector_against_many_positions():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 1, 1, 8))
    cos, sin = rope_tables(np.arange(5), rope_frequencies(8))
    rotated = apply_rotary(x, cos, sin)
    assert rotated.shape == (1, 1, 5, 8)
    for m in range(5):
        np.testing.assert_allclose(rotated[0, 0, m], apply_rotary(x, cos[m:m + 1], sin[m:m + 1])[0, 0, 0])
