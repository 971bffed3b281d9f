"""Spectral analysis (fope-spec 1-3): the score as a NUDFT sum, leakage, distortion, undertrained w."""

import math

import matplotlib
import numpy as np
import pytest

from minifope import GPT, GPTConfig, rope_frequencies
from minifope.fope import fope_frequencies
from minifope.rope import nudft_scores
from minifope.spectrum import (clean_sinusoids, energy_spectrum, head_spectrum, model_leakage,
                               off_frequency_energy, pair_frequencies, pair_leakage,
                               plot_head_spectrum, plot_pair_spectra, plot_periods,
                               rotated_pair_signals, score_vs_distance, through_activation,
                               through_linear, undertrained)

matplotlib.use("Agg")

M = 64
m = np.arange(M)


def silu(x):
    return x / (1.0 + np.exp(-x))


def tiny_model(**overrides):
    base = dict(vocab_size=13, n_layer=2, n_head=2, d_model=32, train_len=64, dtype="float64",
                seed=3, init_std=0.2)
    return GPT(GPTConfig(**{**base, **overrides}))


# --- the measure on tones with known answers ---------------------------------------------


def test_pure_tone_has_no_energy_off_its_own_frequency_on_or_off_the_fft_grid():
    on_grid = 2 * math.pi * 5 / M
    off_grid = 2 * math.pi * 5.5 / M  # half way between two FFT bins
    for w in (on_grid, off_grid, 1.0, 0.01):
        assert off_frequency_energy((0.7 - 0.2j) * np.exp(1j * w * m), w) < 1e-12


def test_an_fft_bin_loses_an_off_grid_tone_that_the_projection_keeps():
    w = 2 * math.pi * 5.5 / M
    _, share = energy_spectrum(np.exp(1j * w * m)[:, None], hann=False)
    assert share.max() < 0.45  # (2/pi)^2 = 0.405 in each of the two nearest bins
    assert off_frequency_energy(np.exp(1j * w * m), w) < 1e-12


def test_off_frequency_energy_on_the_fft_grid_is_the_energy_outside_that_bin():
    rng = np.random.default_rng(0)
    z = rng.standard_normal(M) + 1j * rng.standard_normal(M)
    omega, share = energy_spectrum(z[:, None], hann=False)
    k = 7
    bin_k = np.argmin(np.abs(omega - 2 * math.pi * k / M))
    assert off_frequency_energy(z, 2 * math.pi * k / M) == pytest.approx(1 - share[bin_k, 0], abs=1e-12)


def test_tone_at_another_frequency_is_almost_all_off_frequency():
    other_bin = np.exp(1j * 2 * math.pi * 9 / M * m)
    assert off_frequency_energy(other_bin, 2 * math.pi * 3 / M) == pytest.approx(1.0, abs=1e-12)
    # off the grid the Dirichlet kernel's sidelobe remains: 1 - |D(1.3)|^2 / M^2
    assert off_frequency_energy(np.exp(1j * 2.3 * m), 1.0) > 0.999


def test_tone_closer_than_the_resolution_2pi_over_M_counts_as_on_frequency():
    assert off_frequency_energy(np.exp(1j * 0.001 * m), 0.0) < 1e-3


def test_two_tone_mix_leaks_the_second_tones_energy_share():
    a, b = 1.0, 0.5  # share of the second tone: b^2 / (a^2 + b^2) = 0.2
    w1, w2 = 2 * math.pi * 4 / M, 2 * math.pi * 11 / M
    on_grid = a * np.exp(1j * w1 * m) + b * np.exp(1j * w2 * m)
    assert off_frequency_energy(on_grid, w1) == pytest.approx(0.2, abs=1e-12)
    # off the grid cross terms of order b/a * |D(w2 - w1)| / M remain
    n = np.arange(1024)
    off_grid = a * np.exp(1j * 1.0 * n) + b * np.exp(-1j * 0.7 * n)
    assert off_frequency_energy(off_grid, 1.0) == pytest.approx(0.2, abs=2e-3)


def test_pair_leakage_is_the_mean_over_sequences_of_each_pairs_leakage():
    w = np.array([1.0, 0.5])
    clean = clean_sinusoids(w, M)
    elsewhere = clean_sinusoids(w + 2 * math.pi * 8 / M, M)
    leak = pair_leakage(np.stack([clean, elsewhere]), w)
    assert leak.shape == (2,)
    np.testing.assert_allclose(leak, [0.5, 0.5], atol=1e-12)


# --- the three damages on synthetic signals ------------------------------------------------


def test_clean_sinusoids_carry_exactly_their_own_frequency():
    w = rope_frequencies(16)
    z = clean_sinusoids(w, M)
    assert z.shape == (M, 8)
    assert pair_leakage(z, w).max() < 1e-12


def test_a_dense_linear_layer_spreads_each_pair_over_the_other_frequencies():
    w = np.array([2.5, 1.7, 1.1, 0.6])  # all periods shorter than M, far apart
    W = np.random.default_rng(1).standard_normal((8, 8)) / math.sqrt(8)
    leak = pair_leakage(through_linear(clean_sinusoids(w, M), W), w)
    assert leak.min() > 0.2
    # a rotation inside each pair keeps its single frequency: leakage needs mixing across pairs
    c, s = math.cos(0.4), math.sin(0.4)
    rotate = np.block([[c * np.eye(4), s * np.eye(4)], [-s * np.eye(4), c * np.eye(4)]])
    assert pair_leakage(through_linear(clean_sinusoids(w, M), rotate), w).max() < 1e-12


@pytest.mark.parametrize("fn", [silu, lambda x: np.maximum(x, 0.0)], ids=["silu", "relu"])
def test_an_activation_adds_harmonics(fn):
    w = 2 * math.pi * np.array([3, 5, 7]) / M
    z = clean_sinusoids(w, M)
    assert pair_leakage(z, w).max() < 1e-12
    assert pair_leakage(through_activation(z, fn), w).min() > 0.1


def test_silu_adds_only_even_harmonics_and_tanh_only_odd_ones():
    # silu(x) = x/2 + x tanh(x/2)/2, the second term even: on cos(w m) it keeps w and adds a
    # constant and 2w, 4w, ..., never 3w or 5w; tanh, odd, adds 3w, 5w and no constant or 2w.
    # On a bin-centred tone without a window each harmonic sits in one FFT bin.
    k = 5  # w = 2 pi k / M
    z = clean_sinusoids(np.array([2 * math.pi * k / M]), M)
    _, silu_share = energy_spectrum(through_activation(z, silu), hann=False)
    _, tanh_share = energy_spectrum(through_activation(z, np.tanh), hann=False)

    def at(share, h):  # the energy share in the bin of h * w (bins fftshifted: bin M/2 is 0)
        return share[M // 2 + h * k, 0]

    for h in (0, 2, -2, 4, -4):
        assert at(silu_share, h) > 1e-6 and at(tanh_share, h) < 1e-25
    for h in (3, -3, 5, -5):
        assert at(silu_share, h) < 1e-25
    assert at(tanh_share, -3) > 1e-4 and at(tanh_share, 5) > 1e-6  # the complex pair's odd images


def test_distortion_of_a_pair_whose_period_exceeds_the_window_is_invisible_in_it():
    w = np.array([1.0, 2 * math.pi / (8 * M)])
    leak = pair_leakage(through_activation(clean_sinusoids(w, M), silu), w)
    assert leak[0] > 0.1 and leak[1] < 0.01


def test_energy_spectrum_shares_sum_to_one_and_a_hann_window_keeps_a_tone_near_its_bin():
    w = 2 * math.pi * 5.5 / M
    omega, share = energy_spectrum(np.exp(1j * w * m)[None, :, None], n_fft=4 * M)
    assert omega.shape == (4 * M,) and share.shape == (1, 4 * M, 1)
    np.testing.assert_allclose(share.sum(axis=1), 1.0)
    near = np.abs(omega - w) < 3 * 2 * math.pi / M
    assert share[0, near, 0].sum() > 0.999


# --- (a) the score against distance --------------------------------------------------------


def test_score_vs_distance_is_the_nudft_sum():
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal(16), rng.standard_normal(16)
    w = rope_frequencies(16)
    distances = np.arange(-5, 300)
    expected = nudft_scores(q[None], k[None], w, distances + 11, [11])[:, 0]
    np.testing.assert_allclose(score_vs_distance(q, k, w, distances), expected, rtol=1e-12, atol=1e-12)


def test_score_vs_distance_is_a_rope_models_logit_for_one_query_key_pair():
    model = tiny_model()
    a = model.attention_inputs(np.random.default_rng(4).integers(0, 13, (1, 20)), layer=1)
    q, k = a["q"][0, 1, 17], a["k"][0, 1, 5]
    logit = a["q_rot"][0, 1, 17] @ a["k_rot"][0, 1, 5]
    assert score_vs_distance(q, k, model.pe.w, [12])[0] == pytest.approx(logit, rel=1e-12)


def test_head_spectrum_is_the_modulus_of_q_times_conj_k():
    q = np.array([3.0, 0.0, 4.0, 1.0])  # pairs 3+4i, 0+1i
    k = np.array([1.0, 2.0, 0.0, 0.0])  # pairs 1, 2
    np.testing.assert_allclose(head_spectrum(q, k), [5.0, 2.0])


# --- (c) undertrained frequencies ----------------------------------------------------------


@pytest.mark.parametrize("head_dim, fope_dim, N", [(16, 0, 64), (64, 0, 512), (16, 64, 64), (32, 0, 7)])
def test_undertrained_frequencies_are_exactly_those_fope_clips(head_dim, fope_dim, N):
    D = max(head_dim, fope_dim)
    w = rope_frequencies(D)
    mask = undertrained(w, N)
    np.testing.assert_array_equal(mask, w < 2 * math.pi / N)
    np.testing.assert_array_equal(w[~mask], fope_frequencies(head_dim, 10000.0, N, fope_dim))


def test_a_frequency_with_period_exactly_N_is_trained_and_zero_is_not():
    np.testing.assert_array_equal(undertrained([2 * math.pi / 100, 0.0, 0.06], 100), [False, True, True])


# --- trained models ------------------------------------------------------------------------


def test_pair_frequencies_follow_rope_and_fopes_step_identity():
    rope = tiny_model()
    np.testing.assert_array_equal(pair_frequencies(rope), rope_frequencies(16))
    # fope_dim 64 over head_dim 16: F = 9, J = 4, step 3 -> pairs start on w_0, w_3, w_6, none
    fope = tiny_model(pe="fope", fope_dim=64)
    w = pair_frequencies(fope)
    np.testing.assert_array_equal(w[:3], fope.pe.w[[0, 3, 6]])
    assert np.isnan(w[3])
    np.testing.assert_array_equal(w[4:], 0.0)
    np.testing.assert_array_equal(pair_frequencies(tiny_model(pe="nope")), np.zeros(8))


@pytest.mark.parametrize("overrides", [dict(pe="rope"), dict(pe="fope"), dict(pe="fope", fope_dim=64),
                                       dict(pe="nope")], ids=["rope", "fope", "fope-step3", "nope"])
def test_model_leakage_gives_one_share_in_0_1_per_pair(overrides):
    model = tiny_model(**overrides)
    idx = np.random.default_rng(5).integers(0, 13, (8, 24))
    zq, zk, w = rotated_pair_signals(model, idx, layer=1)
    assert zq.shape == zk.shape == (8, 2, 24, 8) and np.iscomplexobj(zq) and w.shape == (8,)
    for leak in model_leakage(model, idx, layer=1):
        assert leak.shape == (8,)
        np.testing.assert_array_equal(np.isnan(leak), np.isnan(w))
        finite = leak[~np.isnan(leak)]
        assert np.all((finite >= 0) & (finite <= 1 + 1e-12))


def test_rope_queries_without_positional_content_are_pure_tones_and_fope_noise_spreads_them():
    # each sequence repeats one token, so the unrotated mean query is the same at every position
    idx = np.repeat(np.arange(6)[:, None], 24, axis=1)
    for leak in model_leakage(tiny_model(), idx, layer=1):
        assert leak.max() < 1e-12
    clipped_rope = model_leakage(tiny_model(pe="fope", fope_sigma=0.0), idx, layer=1)[0]
    assert clipped_rope.max() < 1e-12
    fope = model_leakage(tiny_model(pe="fope", fope_sigma=2.0), idx, layer=1)[0]
    J = tiny_model(pe="fope").pe.J
    assert fope[:J].min() > 1e-3 and fope[J:].max() < 1e-12


# --- plots ---------------------------------------------------------------------------------


def test_plots_return_a_figure():
    from matplotlib.figure import Figure

    rng = np.random.default_rng(6)
    w = rope_frequencies(16)
    fig = plot_head_spectrum(rng.standard_normal(16), rng.standard_normal(16), w, train_len=32)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert isinstance(plot_periods(w, 32), Figure)
    assert isinstance(plot_pair_spectra(through_linear(clean_sinusoids(w, M), rng.standard_normal((16, 16))), w),
                      Figure)
    side_by_side = Figure()
    left, right = side_by_side.subplots(1, 2)
    assert plot_pair_spectra(clean_sinusoids(w, M), w, ax=left) is side_by_side
    assert plot_periods(np.r_[w, 0.0], 32, ax=right) is side_by_side


def test_model_leakages_in_one_pass_equal_model_leakage_layer_by_layer():
    from minifope import GPT, GPTConfig
    from minifope.spectrum import model_leakage, model_leakages

    model = GPT(GPTConfig(vocab_size=11, n_layer=3, n_head=2, d_model=16, train_len=16, pe="fope"))
    idx = np.random.default_rng(0).integers(0, 11, (6, 16))
    together = model_leakages(model, idx)
    assert len(together) == 3
    for layer, (q, k) in enumerate(together):
        q1, k1 = model_leakage(model, idx, layer)
        np.testing.assert_array_equal(q, q1)
        np.testing.assert_array_equal(k, k1)
