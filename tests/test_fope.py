"""FoPE (fope-spec section 3): clipping, the series tables, the authors' init, and its two properties."""

import math

import numpy as np
import pytest

from minifope import GPT, GPTConfig, rope_frequencies
from minifope.fope import (fope_coefficients, fope_frequencies, fope_num_rotating_pairs,
                           fope_tables, step_identity)
from minifope.rope import apply_rotary, rope_tables


def test_frequencies_below_the_floor_2pi_over_N_are_dropped():
    w = fope_frequencies(head_dim=16, theta=10000.0, train_len=64)
    # 10000^(-2f/16) = 1, 0.316, 0.1, 0.0316, ...; floor = 2*pi/64 = 0.098
    np.testing.assert_allclose(w, [1.0, 10000 ** -0.125, 10000 ** -0.25], rtol=1e-15)
    assert np.all(w >= 2 * math.pi / 64)


def test_frequency_set_is_computed_over_D_dims_when_fope_dim_is_larger():
    w = fope_frequencies(head_dim=16, theta=10000.0, train_len=64, fope_dim=64)
    full = 10000.0 ** (-2.0 * np.arange(32) / 64)
    np.testing.assert_allclose(w, full[full >= 2 * math.pi / 64])
    assert len(w) == 9


def test_rotating_pairs_are_min_of_F_and_a_quarter_of_head_dim():
    assert fope_num_rotating_pairs(16, 3) == 3
    assert fope_num_rotating_pairs(16, 9) == 4
    assert fope_num_rotating_pairs(64, 16) == 16


def test_step_identity_puts_a_one_at_i_times_ceil_F_over_J():
    eye = step_identity(9, 4)  # step 3: rows 0, 3, 6; column 3 would need row 9 >= F
    expected = np.zeros((9, 4))
    expected[0, 0] = expected[3, 1] = expected[6, 2] = 1.0
    np.testing.assert_array_equal(eye, expected)
    np.testing.assert_array_equal(step_identity(3, 3), np.eye(3))


def test_coefficient_noise_has_the_xavier_normal_std():
    H, F, J, sigma = 8, 16, 16, 0.3
    ccos, csin = fope_coefficients(np.random.default_rng(0), H, F, J, sigma)
    assert ccos.shape == csin.shape == (H, F, J)
    noise = np.concatenate([(ccos - step_identity(F, J)).ravel(), (csin - step_identity(F, J)).ravel()])
    expected = sigma * math.sqrt(2.0 / (J * (F + H)))
    assert abs(noise.std() / expected - 1.0) < 0.05
    assert abs(noise.mean()) < 0.1 * expected


def test_tables_are_the_fourier_series_of_the_coefficients():
    rng = np.random.default_rng(1)
    w = np.array([1.0, 0.3, 0.1])
    ccos, csin = fope_coefficients(rng, 2, 3, 2, 0.5)
    cos, sin = fope_tables(np.arange(4), w, ccos, csin, head_dim=10)
    assert cos.shape == sin.shape == (2, 4, 5)
    h, m, j = 1, 3, 1
    assert cos[h, m, j] == pytest.approx(sum(math.cos(w[f] * m) * ccos[h, f, j] for f in range(3)))
    assert sin[h, m, j] == pytest.approx(sum(math.sin(w[f] * m) * csin[h, f, j] for f in range(3)))
    np.testing.assert_array_equal(cos[:, :, 2:], 1.0)  # zero-frequency pairs: the identity
    np.testing.assert_array_equal(sin[:, :, 2:], 0.0)


def test_fope_tables_with_zero_sigma_are_clipped_rope_tables():
    head_dim, N = 16, 64
    w = fope_frequencies(head_dim, 10000.0, N)
    J = fope_num_rotating_pairs(head_dim, len(w))
    ccos, csin = fope_coefficients(np.random.default_rng(2), 4, len(w), J, sigma=0.0)
    positions = np.arange(100) + 3
    cos, sin = fope_tables(positions, w, ccos, csin, head_dim)
    clipped = rope_frequencies(head_dim).copy()
    clipped[clipped < 2 * math.pi / N] = 0.0
    rope_cos, rope_sin = rope_tables(positions, clipped)
    np.testing.assert_allclose(cos, np.broadcast_to(rope_cos, cos.shape), atol=1e-15)
    np.testing.assert_allclose(sin, np.broadcast_to(rope_sin, sin.shape), atol=1e-15)


def test_fope_with_zero_sigma_is_clipped_rope():
    config = dict(vocab_size=11, n_layer=2, n_head=2, d_model=32, train_len=64, dtype="float64",
                  init_std=0.2)
    fope = GPT(GPTConfig(pe="fope", fope_sigma=0.0, **config))
    rope = GPT(GPTConfig(pe="rope", **config))
    rope.params = fope.params
    rope.pe.w = np.where(rope.pe.w < 2 * math.pi / 64, 0.0, rope.pe.w)
    idx = np.random.default_rng(3).integers(0, 11, (2, 40))
    a, b = fope.forward(idx, pos_offset=9)[0], rope.forward(idx, pos_offset=9)[0]
    assert np.max(np.abs(a - b)) / np.max(np.abs(b)) < 1e-12


def _pair_score(cos, sin, q, k, m, n):
    """The logit between one query at m and one key at n with per-head tables (head 0)."""
    qr = apply_rotary(q[None, None, None], cos[:, m:m + 1], sin[:, m:m + 1])
    kr = apply_rotary(k[None, None, None], cos[:, n:n + 1], sin[:, n:n + 1])
    return float(np.sum(qr[0, 0] * kr[0, 0]))


def test_fope_with_noise_is_not_translation_invariant():
    rng = np.random.default_rng(4)
    w = fope_frequencies(16, 10000.0, 64)
    J = fope_num_rotating_pairs(16, len(w))
    q, k = rng.standard_normal(16), rng.standard_normal(16)
    cos, sin = fope_tables(np.arange(200), w, *fope_coefficients(rng, 1, len(w), J, 0.3), 16)
    assert abs(_pair_score(cos, sin, q, k, 10, 4) - _pair_score(cos, sin, q, k, 150, 144)) > 1e-3
    cos0, sin0 = fope_tables(np.arange(200), w, *fope_coefficients(rng, 1, len(w), J, 0.0), 16)
    assert _pair_score(cos0, sin0, q, k, 10, 4) == pytest.approx(
        _pair_score(cos0, sin0, q, k, 150, 144), rel=1e-12)


def test_authors_padding_doubles_the_zero_frequency_dot_product():
    # A zero-frequency pair padded with COS = SIN = 1 maps (a, b) to (a - b, a + b):
    # the dot product of two such pairs is 2 (a c + b d), twice the identity's.
    rng = np.random.default_rng(5)
    w = np.array([1.0])
    ccos, csin = fope_coefficients(rng, 1, 1, 1, 0.0)
    q, k = rng.standard_normal(8), rng.standard_normal(8)
    zero_pairs = np.r_[1:4, 5:8]   # head_dim 8: pair 0 rotates, pairs 1..3 do not
    qz, kz = np.zeros(8), np.zeros(8)
    qz[zero_pairs], kz[zero_pairs] = q[zero_pairs], k[zero_pairs]
    identity = _pair_score(*fope_tables(np.arange(5), w, ccos, csin, 8, "identity"), qz, kz, 4, 1)
    authors = _pair_score(*fope_tables(np.arange(5), w, ccos, csin, 8, "authors"), qz, kz, 4, 1)
    assert identity == pytest.approx(qz @ kz, rel=1e-12)
    assert authors == pytest.approx(2 * identity, rel=1e-12)
