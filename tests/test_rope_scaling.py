"""PI, NTK-aware and YaRN frequencies (fope-spec section 5) against hand-computed values."""

import math

import autograd
import numpy as np
import pytest

from minifope import GPT, GPTConfig
from minifope import reference as R
from minifope import rope, rope_scaling
from minifope.gradcheck import check_gradients
from minifope.rope import rope_frequencies
from minifope.rope_scaling import (ntk_frequencies, pi_frequencies, scaled_rope_frequencies,
                                   yarn_attention_factor, yarn_correction_index, yarn_frequencies,
                                   yarn_index_ramp, yarn_ramp)


@pytest.mark.parametrize("head_dim, theta", [(2, 10000.0), (16, 10000.0), (64, 500000.0)])
def test_the_base_frequencies_here_are_ropes(head_dim, theta):
    np.testing.assert_array_equal(rope_scaling.rope_frequencies(head_dim, theta),
                                  rope.rope_frequencies(head_dim, theta))


def test_pi_divides_every_frequency_by_s():
    np.testing.assert_allclose(pi_frequencies([1.0, 0.1, 0.01], 4.0), [0.25, 0.025, 0.0025])


def test_ntk_stretches_the_lowest_frequency_by_s_and_keeps_the_highest():
    # d = 8, theta = 10000, s = 4: theta' = 10000 * 4^(8/6) = 63496.04...
    w = ntk_frequencies(8, 10000.0, 4.0)
    theta_prime = 10000.0 * 4.0 ** (4.0 / 3.0)
    assert theta_prime == pytest.approx(63496.0421, rel=1e-9)
    np.testing.assert_allclose(w, [1.0, theta_prime ** -0.25, theta_prime ** -0.5, theta_prime ** -0.75])
    assert w[-1] == pytest.approx(10000.0 ** -0.75 / 4.0, rel=1e-12)  # 0.001 / 4


def test_paper_ramp_by_hand_at_n_128_and_256():
    # gamma_j = clip((r_j - 1) / 31, 0, 1), r_j = N * w_j / (2 pi).
    w = np.array([1.0, 0.1, 0.001])
    r0 = 128 / (2 * math.pi)                                     # 20.3718 turns within N
    gamma = yarn_ramp(w, 128)
    assert gamma[0] == pytest.approx((r0 - 1.0) / 31.0)          # 0.62490
    assert gamma[1] == pytest.approx((0.1 * r0 - 1.0) / 31.0)    # r = 2.037 -> 0.03345
    assert gamma[2] == 0.0                                        # r = 0.02 < beta_slow
    scaled = yarn_frequencies(w, 4.0, gamma)
    assert scaled[0] == pytest.approx(0.718674, abs=1e-6)        # (1 - g) * 0.25 + g
    assert scaled[2] == pytest.approx(0.001 / 4.0)               # fully interpolated
    # N = 256: r_0 = 40.74 > beta_fast, so w_0 is kept; w_1 = 10000^(-1/16) turns 22.91 times
    gamma = yarn_ramp(rope_frequencies(32, 10000.0), 256)
    assert gamma[0] == 1.0
    assert gamma[1] == pytest.approx((256 * 10000 ** (-1 / 16) / (2 * math.pi) - 1) / 31)  # 0.70676
    np.testing.assert_allclose(gamma[1:7], [0.7068, 0.3834, 0.2015, 0.0992, 0.0417, 0.0093], atol=1e-4)


def test_index_ramp_by_hand_at_n_128_and_256():
    # j(b) = d ln(N / (2 pi b)) / (2 ln theta); d = 32, theta = 10000:
    # N = 256: j(32) = 0.4196 -> floor 0, j(1) = 6.4402 -> ceil 7: gamma_j = 1 - j / 7
    assert yarn_correction_index(32, 32, 10000.0, 256) == pytest.approx(
        32 * math.log(256 / (64 * math.pi)) / (2 * math.log(10000)))
    assert yarn_correction_index(32, 32, 10000.0, 256) == pytest.approx(0.41964, abs=1e-5)
    assert yarn_correction_index(1, 32, 10000.0, 256) == pytest.approx(6.44024, abs=1e-5)
    np.testing.assert_allclose(yarn_index_ramp(32, 10000.0, 256),
                               [1, 6 / 7, 5 / 7, 4 / 7, 3 / 7, 2 / 7, 1 / 7] + [0] * 9)
    # N = 128: j(32) = -0.7845 -> floor -1, clamped to 0; j(1) = 5.2361 -> ceil 6: 1 - j / 6
    assert yarn_correction_index(32, 32, 10000.0, 128) == pytest.approx(-0.78448, abs=1e-5)
    np.testing.assert_allclose(yarn_index_ramp(32, 10000.0, 128),
                               [1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6] + [0] * 10)
    # the scaled frequencies: w'_j = (1 - gamma_j) w_j / 4 + gamma_j w_j
    w = rope_frequencies(32, 10000.0)
    scaled = scaled_rope_frequencies(32, 10000.0, "yarn", 4.0, 256)
    assert scaled[0] == 1.0
    assert scaled[3] == pytest.approx((3 / 7) * w[3] / 4 + (4 / 7) * w[3])
    np.testing.assert_allclose(scaled[7:], w[7:] / 4)
    paper = scaled_rope_frequencies(32, 10000.0, "yarn", 4.0, 256, "rotations")
    np.testing.assert_allclose(paper, yarn_frequencies(w, 4.0, yarn_ramp(w, 256)))


def test_the_models_yarn_ramp_is_the_index_ramp_unless_asked_for_the_papers():
    base = dict(vocab_size=7, n_layer=1, n_head=1, d_model=32, train_len=256,
                rope_scaling="yarn", rope_scale=4.0)
    w = rope_frequencies(32, 10000.0)
    np.testing.assert_allclose(GPT(GPTConfig(**base)).pe.w,
                               yarn_frequencies(w, 4.0, yarn_index_ramp(32, 10000.0, 256)))
    np.testing.assert_allclose(GPT(GPTConfig(**base, rope_yarn_ramp="rotations")).pe.w,
                               yarn_frequencies(w, 4.0, yarn_ramp(w, 256)))
    with pytest.raises(ValueError, match="rope_yarn_ramp must be one of index, rotations"):
        GPTConfig(**base, rope_yarn_ramp="linear")


def test_index_ramp_whose_bounds_meet_is_a_step():
    # beta_fast = beta_slow = 32 with j(32) = 1.5: low = floor(1.5) = 1, high = ceil(1.5) = 2,
    # a ramp from pair 1 to pair 2; with j(32) = 1.0 (+ rounding) low and high can meet, and then
    # high = low + 0.001, as in the reference code: gamma is 1 up to low and 0 after it
    d, theta = 8, 10000.0
    N = 2 * math.pi * 32 * 10000 ** (2 * 1.5 / 8)
    assert yarn_correction_index(32, d, theta, N) == pytest.approx(1.5)
    np.testing.assert_allclose(yarn_index_ramp(d, theta, N, beta_fast=32.0, beta_slow=32.0), [1, 1, 0, 0])
    N = 2 * math.pi * 32 * 10000 ** (2 * 2 / 8) * (1 + 1e-9)  # j(32) a hair above 2: floor 2, ceil 3
    gamma = yarn_index_ramp(d, theta, N, beta_fast=32.0, beta_slow=32.0)
    np.testing.assert_allclose(gamma, [1, 1, 1, 0])
    gamma = yarn_index_ramp(d, theta, 2 * math.pi * 32, beta_fast=32.0, beta_slow=32.0)  # j(32) = 0
    np.testing.assert_allclose(gamma, [1, 0, 0, 0])


def test_yarn_temperature_is_point_one_log_s_plus_one():
    assert yarn_attention_factor(4.0) == pytest.approx(0.1 * math.log(4.0) + 1.0)  # 1.13863
    assert yarn_attention_factor(1.0) == 1.0


def test_no_scaling_or_s_of_one_keeps_rope():
    base = scaled_rope_frequencies(16, 10000.0, "none", 1.0, 128)
    for kind in ("pi", "ntk", "yarn"):
        np.testing.assert_array_equal(scaled_rope_frequencies(16, 10000.0, kind, 1.0, 128), base)


def test_yarn_model_multiplies_the_logits_by_one_over_t():
    # With q = k (pair by pair) rotations cancel at m = n; the diagonal score grows by (0.1 ln s + 1)^2.
    config = dict(vocab_size=7, n_layer=1, n_head=1, d_model=8, train_len=16, dtype="float64")
    plain = GPT(GPTConfig(**config))
    yarn = GPT(GPTConfig(**config, rope_scaling="yarn", rope_scale=4.0))
    assert yarn.pe.factor ** 2 == pytest.approx((0.1 * math.log(4.0) + 1.0) ** 2)
    cos, _ = yarn.rotary_tables(0, np.arange(3))
    cos0, _ = plain.rotary_tables(0, np.arange(3))
    assert cos[0, 0] == pytest.approx(yarn.pe.factor * cos0[0, 0])


def test_yarn_without_its_temperature_keeps_the_frequencies_and_drops_the_factor():
    # the FoPE authors' YaRN baseline: the same ramp, no sqrt(1/t) on q and k
    config = dict(vocab_size=7, n_layer=1, n_head=1, d_model=8, train_len=16, rope_scaling="yarn",
                  rope_scale=16.0, rope_original_len=8)
    with_t, without_t = GPT(GPTConfig(**config)), GPT(GPTConfig(**config, rope_yarn_temperature=False))
    np.testing.assert_array_equal(with_t.pe.w, without_t.pe.w)
    assert without_t.pe.factor == 1.0 and with_t.pe.factor == pytest.approx(0.1 * math.log(16.0) + 1.0)


@pytest.mark.parametrize("extra", [dict(rope_scaling="yarn", rope_scale=2.0, rope_original_len=32),
                                   dict(rope_scaling="ntk", rope_scale=3.0), dict(rope_clip=True)])
def test_scaled_rope_gradients_match_autograd(extra):
    config = GPTConfig(vocab_size=11, n_layer=2, n_head=2, d_model=16, train_len=64, dtype="float64",
                       init_std=0.2, **extra)
    model = GPT(config)
    rng = np.random.default_rng(0)
    idx, targets = rng.integers(0, 11, (2, 7)), rng.integers(0, 11, (2, 7))
    model.forward(idx, targets)
    model.backward()
    ref = autograd.grad(R.gpt_loss)(model.params, model.buffers, config, idx, targets)
    assert check_gradients(model.grads, ref, tol=1e-8, verbose=False)


def test_rope_clip_is_fope_with_zero_sigma_when_every_kept_frequency_rotates():
    config = dict(vocab_size=11, n_layer=2, n_head=2, d_model=32, train_len=64, dtype="float64",
                  init_std=0.2)
    fope = GPT(GPTConfig(pe="fope", fope_sigma=0.0, **config))
    clipped = GPT(GPTConfig(pe="rope", rope_clip=True, **config))
    clipped.params = fope.params
    idx = np.random.default_rng(1).integers(0, 11, (1, 30))
    np.testing.assert_allclose(clipped.forward(idx)[0], fope.forward(idx)[0], rtol=1e-12, atol=1e-14)


def test_fope_without_the_clip_keeps_every_frequency():
    model = GPT(GPTConfig(vocab_size=5, n_head=2, d_model=32, train_len=64, pe="fope", fope_clip=False))
    assert len(model.pe.w) == 8 and model.pe.J == 4
    clipped = GPT(GPTConfig(vocab_size=5, n_head=2, d_model=32, train_len=64, pe="fope"))
    assert len(clipped.pe.w) == 3


@pytest.mark.parametrize("fields, words", [
    (dict(pe="fope", rope_scaling="yarn", rope_scale=2.0), "pe='rope' only"),
    (dict(rope_scaling="linear"), "rope_scaling"),
    (dict(rope_scaling="pi", rope_scale=0.5), "rope_scale"),
    (dict(pe="alibi", rope_clip=True), "pe='rope' only"),
    (dict(pe="rope", fope_clip=False), "pe='fope' only"),
])
def test_contradictory_scaling_options_are_refused(fields, words):
    with pytest.raises(ValueError, match=words):
        GPTConfig(**fields)
