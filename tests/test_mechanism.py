"""Measures of spectrum damage that read zero where there is none (mechanism.py), on known answers."""

import math

import numpy as np
import pytest

from minifope import GPT, GPTConfig
from minifope.mechanism import (clip_surgery, distortion_frequencies, logit_kernel_drift,
                                model_positional_spectrum, pooled_shares, positional_spectrum,
                                surgery_loss, unbiased_power)
from minifope.lengthgen import loss_by_length
from minifope.spectrum import model_leakage, pair_leakage, through_activation, through_linear

M = 64
m = np.arange(M)
W5 = 2 * math.pi * 5 / M  # on the FFT grid: tones at other bins are orthogonal to it


def tiny_model(**overrides):
    base = dict(vocab_size=13, n_layer=2, n_head=2, d_model=32, train_len=16, dtype="float64",
                seed=3, init_std=0.2)
    return GPT(GPTConfig(**{**base, **overrides}))


def windows(signal, B):
    """B copies of one positional signal (M,) as (B, M, 1): no content at all."""
    return np.broadcast_to(signal[:, None], (B, M, 1))


def complex_noise(rng, shape):
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) / math.sqrt(2)


# --- the estimator ---------------------------------------------------------------------------


def test_unbiased_power_is_the_mean_cross_product_of_distinct_windows():
    rng = np.random.default_rng(0)
    c = complex_noise(rng, (5, 3))
    cross = [np.real(np.vdot(c[a], c[b])) for a in range(5) for b in range(5) if a != b]
    assert unbiased_power(c) == pytest.approx(np.mean(cross), rel=1e-12)
    # it is the split-half estimate Re(mean_A^H mean_B) averaged over every split into halves
    c4 = c[:4]
    splits = [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
    halves = [np.real(np.vdot(c4[list(a)].mean(0), c4[list(b)].mean(0))) for a, b in splits]
    assert unbiased_power(c4) == pytest.approx(np.mean(halves), rel=1e-12)
    with pytest.raises(ValueError, match="at least 2 windows"):
        unbiased_power(c[:1])


# --- known amounts of leakage and distortion -------------------------------------------------


def test_a_tone_with_a_fifth_of_its_energy_at_another_frequency_leaks_a_fifth():
    s = np.exp(1j * W5 * m) + 0.5 * np.exp(1j * 2 * math.pi * 11 / M * m)  # share 0.25 / 1.25
    r = positional_spectrum(windows(s, 8), np.array([W5]))
    assert r["positional"][0] == pytest.approx(1.25, rel=1e-12)
    assert r["own_share"][0] == pytest.approx(0.8, abs=1e-12)
    assert r["leakage_share"][0] == pytest.approx(0.2, abs=1e-12)
    assert abs(r["distortion_share"][0]) < 1e-12


def test_the_leak_is_found_under_content_noise_and_off_the_fft_grid():
    n = np.arange(256)
    s = np.exp(1j * 1.0 * n) + 0.5 * np.exp(-1j * 0.7 * n)  # the conjugate image of a linear mix
    z = s[None, :, None] + 2.0 * complex_noise(np.random.default_rng(1), (400, 256, 1))
    r = positional_spectrum(z, np.array([1.0]))
    assert r["leakage_share"][0] == pytest.approx(0.2, abs=0.01)
    assert r["positional"][0] == pytest.approx(1.25, abs=0.02)
    assert r["power"][0] == pytest.approx(1.25 + 4.0, abs=0.05)  # content counts in power only


def test_cubing_a_tone_puts_a_tenth_of_its_energy_into_the_harmonic_minus_3w():
    # cos^3 = (3 cos + cos 3)/4, sin^3 = (3 sin - sin 3)/4: x^3 on exp(i w m) = 3/4 e^{iwm} + 1/4 e^{-3iwm}
    z = through_activation(np.exp(1j * W5 * m), lambda x: x ** 3)
    r = positional_spectrum(windows(z, 4), np.array([W5]))
    assert r["own_share"][0] == pytest.approx(0.9, abs=1e-12)
    assert r["distortion_share"][0] == pytest.approx(0.1, abs=1e-12)
    assert abs(r["leakage_share"][0]) < 1e-12


def test_squaring_a_tone_leaves_nothing_at_its_frequency_only_a_constant_and_2w():
    # cos^2 = (1 + cos 2)/2, sin^2 = (1 - cos 2)/2: all distortion
    z = through_activation(np.exp(1j * W5 * m), np.square)
    r = positional_spectrum(windows(z, 4), np.array([W5]))
    assert r["distortion_share"][0] == pytest.approx(1.0, abs=1e-12)
    assert abs(r["own_share"][0]) < 1e-12 and abs(r["leakage_share"][0]) < 1e-12


def test_an_explicit_intermodulation_product_w_j_plus_w_k_is_distortion_and_w_k_is_leakage():
    w = np.array([W5, 2 * math.pi * 3 / M])
    s = np.exp(1j * w[0] * m) + 0.5 * np.exp(1j * (w[0] + w[1]) * m) + 0.5 * np.exp(1j * w[1] * m)
    r = positional_spectrum(windows(s, 4)[..., [0, 0]], w)  # pair 0 is read for its own w_0
    assert r["own"][0] == pytest.approx(1.0, abs=1e-12)
    assert r["distortion"][0] == pytest.approx(0.25, abs=1e-12)
    assert r["leakage"][0] == pytest.approx(0.25, abs=1e-12)


def test_distortion_frequencies_are_harmonics_and_sums_and_differences():
    w = np.array([0.5, 0.2, 0.0])
    d = distortion_frequencies(w, 0, order=3)
    np.testing.assert_allclose(np.sort(d), np.sort([0.0, 1.0, -1.0, 1.5, -1.5, 0.7, 0.3]))
    assert distortion_frequencies(np.array([np.nan, 0.2]), 0).size == 0


def test_the_spectrum_is_unbiased_per_bin_and_sums_to_the_positional_power():
    k = 9
    s = 2.0 * np.exp(1j * 2 * math.pi * k / M * m)
    z = s[None, :, None] + complex_noise(np.random.default_rng(2), (64, M, 1))
    r = positional_spectrum(z, np.array([W5]))
    np.testing.assert_allclose(r["spectrum"].sum(axis=-2), r["positional"], rtol=1e-10)
    peak = np.argmin(np.abs(r["omega"] - 2 * math.pi * k / M))
    assert r["spectrum"][peak, 0] == pytest.approx(4.0, abs=0.1)
    assert np.abs(np.delete(r["spectrum"][:, 0], peak)).max() < 0.01


def test_a_linear_mix_of_clean_pairs_reads_as_leakage_not_distortion():
    w = np.array([2 * math.pi * 7 / M, 2 * math.pi * 3 / M])
    W = np.random.default_rng(3).standard_normal((4, 4))
    z = through_linear(np.exp(1j * m[:, None] * w[None, :]), W)
    r = positional_spectrum(np.broadcast_to(z, (4, M, 2)), w)
    assert r["leakage_share"].min() > 0.1
    np.testing.assert_allclose(r["distortion_share"], 0.0, atol=1e-12)


# --- no positional part: zero, and closer to zero with more windows ---------------------------


def test_pure_noise_reads_zero_and_shrinks_with_more_windows_where_the_old_measure_reads_one():
    rng = np.random.default_rng(4)
    w = np.full(8, W5)
    spread = {}
    for B in (16, 256):
        z = complex_noise(rng, (B, M, 8))
        r = positional_spectrum(z, w)
        for name in ("positional", "own", "distortion", "leakage"):
            # the floor of a mean of B windows would read 1/B here; U's spread is ~ 1/(B sqrt(M))
            assert np.abs(r[name] / r["power"]).max() < 0.5 / B, name
        spread[B] = np.abs(r["leakage"] / r["power"]).mean()
        assert pair_leakage(z.mean(axis=0), w).min() > 0.9  # the old measure: all leakage
    assert spread[256] < spread[16] / 4


def test_an_untrained_models_layer_0_reads_no_damage_where_model_leakage_reads_its_floor():
    # layer 0 sees token embeddings only: its rotated queries' positional part is RoPE's pure
    # tone w_j, whatever the weights. The old measure reads the content left in a mean of B.
    model = tiny_model(train_len=32)
    idx = np.random.default_rng(1).integers(0, 13, (128, 32))
    for new, old in zip(model_positional_spectrum(model, idx, layer=0), model_leakage(model, idx, layer=0)):
        shares = pooled_shares(new)
        assert abs(shares["leakage"]) < 0.04 and abs(shares["distortion"]) < 0.04
        assert shares["own"] > 0.95
        assert old.mean() > 0.15


def test_content_free_layer_0_of_rope_is_exactly_its_own_frequencies():
    model = tiny_model(train_len=32)
    idx = np.repeat(np.arange(6)[:, None], 32, axis=1)  # each window repeats one token
    for r in model_positional_spectrum(model, idx, layer=0):
        # the mean over windows is constant over positions before rotation, a pure tone after
        assert np.abs(r["leakage"] / r["positional"]).max() < 1e-10
        assert np.abs(r["distortion"] / r["positional"]).max() < 1e-10
        assert r["own"].shape == (2, 8)


def test_fopes_empty_series_pair_has_no_own_frequency():
    model = tiny_model(pe="fope", fope_dim=64, train_len=32)
    idx = np.random.default_rng(2).integers(0, 13, (8, 32))
    q, _ = model_positional_spectrum(model, idx, layer=1)
    assert np.isnan(q["own"][:, 3]).all() and np.isfinite(q["positional"][:, 3]).all()
    assert np.isfinite(q["own"][:, [0, 1, 2, 4]]).all()


# --- the logit kernel past N -----------------------------------------------------------------


CONTENT_FREE = np.repeat(np.arange(6)[:, None], 48, axis=1)


@pytest.mark.parametrize("overrides", [dict(pe="rope"), dict(pe="alibi"), dict(pe="fope", fope_sigma=0.0),
                                       dict(pe="nope")], ids=["rope", "alibi", "fope-sigma0", "nope"])
def test_a_logit_of_distance_only_does_not_drift_past_N(overrides):
    r = logit_kernel_drift(tiny_model(**overrides), CONTENT_FREE, layer=0)
    assert r["drift"].shape == r["inside"].shape == (16,)
    np.testing.assert_array_equal(r["distance"], np.arange(16))
    assert np.abs(r["drift"]).max() < 1e-12
    assert np.abs(r["inside"]).max() > 0.05  # there is a kernel, and it stays


@pytest.mark.parametrize("overrides", [dict(pe="fope", fope_sigma=0.5), dict(pe="sinusoidal")],
                         ids=["fope-sigma", "sinusoidal"])
def test_a_logit_of_m_and_n_separately_drifts_past_N(overrides):
    r = logit_kernel_drift(tiny_model(**overrides), CONTENT_FREE, layer=0, per_head=True)
    assert r["drift"].shape == (2, 16)
    assert np.abs(r["drift"]).max() > 0.03


def test_on_random_content_the_drift_of_a_distance_only_logit_averages_out_and_sinusoidals_does_not():
    def rms_drift(model, B):
        idx = np.random.default_rng(B).integers(0, 13, (B, 48))
        return np.sqrt(np.mean(logit_kernel_drift(model, idx, layer=0)["drift"] ** 2))

    rope, sinusoidal = tiny_model(n_layer=1), tiny_model(n_layer=1, pe="sinusoidal")
    assert rms_drift(rope, 256) < rms_drift(rope, 16) / 2.5  # a spread ~ 1/sqrt(B), no floor
    assert rms_drift(sinusoidal, 256) > 0.15


def test_alibis_drift_includes_its_bias_which_depends_on_distance_only():
    model = tiny_model(pe="alibi")
    r = logit_kernel_drift(model, CONTENT_FREE, layer=0, per_head=True)
    nope = logit_kernel_drift(tiny_model(pe="nope"), CONTENT_FREE, layer=0, per_head=True)
    np.testing.assert_allclose(r["inside"] - nope["inside"], -model.slopes[:, None] * np.arange(16), atol=1e-12)


def test_logit_kernel_drift_needs_windows_longer_than_N():
    with pytest.raises(ValueError, match="longer than N"):
        logit_kernel_drift(tiny_model(), CONTENT_FREE[:, :16], layer=0)


# --- clip surgery ----------------------------------------------------------------------------


@pytest.mark.parametrize("N", [None, 8, 100, 700])
def test_clip_surgery_zeroes_exactly_the_pairs_whose_period_exceeds_N(N):
    model = tiny_model()
    before = {name: p.copy() for name, p in model.params.items()}
    w = model.pe.w.copy()
    cut = clip_surgery(model, N)
    period = 2 * math.pi / w
    long = period > (N or model.config.train_len)
    np.testing.assert_array_equal(cut.pe.w[long], 0.0)
    np.testing.assert_array_equal(cut.pe.w[~long], w[~long])
    np.testing.assert_array_equal(model.pe.w, w)  # the model itself is left as it was
    assert cut.params.keys() == before.keys()
    for name, p in before.items():
        np.testing.assert_array_equal(cut.params[name], p)
        np.testing.assert_array_equal(model.params[name], p)


@pytest.mark.parametrize("N", [None, 8, 100])
def test_clip_surgery_of_series_only_fope_zeroes_its_frequencies_of_period_above_N_in_place(N):
    model = tiny_model(pe="fope", fope_clip=False)
    w = model.pe.w.copy()
    weights = {name: p.copy() for name, p in {**model.params, **model.buffers}.items()}
    cut = clip_surgery(model, N)
    long = 2 * math.pi / w > (N or model.config.train_len)
    assert long.any() and not long.all()
    np.testing.assert_array_equal(cut.pe.w[long], 0.0)
    np.testing.assert_array_equal(cut.pe.w[~long], w[~long])
    np.testing.assert_array_equal(model.pe.w, w)  # the model itself is left as it was
    for name, p in weights.items():  # every coefficient kept, shared, unchanged
        np.testing.assert_array_equal({**cut.params, **cut.buffers}[name], p)
    # the cut terms become constants: COS gains Ccos[h, f, j] in place of cos(w_f m) Ccos[h, f, j],
    # SIN loses sin(w_f m) Csin[h, f, j]; the other terms and the pairs without a series are as before
    m = np.arange(40)
    for layer in range(model.config.n_layer):
        ccos, csin = model.coefficient(f"blocks.{layer}.fope.ccos"), model.coefficient(f"blocks.{layer}.fope.csin")
        J = ccos.shape[2]
        cos0, sin0 = model.rotary_tables(layer, m)
        cos1, sin1 = cut.rotary_tables(layer, m)
        angles = m[:, None] * w[None, long]
        np.testing.assert_allclose(cos1[..., :J], cos0[..., :J] + np.einsum("mf,hfj->hmj", 1 - np.cos(angles),
                                                                            ccos[:, long]), atol=1e-12)
        np.testing.assert_allclose(sin1[..., :J], sin0[..., :J] - np.einsum("mf,hfj->hmj", np.sin(angles),
                                                                            csin[:, long]), atol=1e-12)
        np.testing.assert_array_equal(cos1[..., J:], cos0[..., J:])
        np.testing.assert_array_equal(sin1[..., J:], sin0[..., J:])


def test_clip_surgery_at_the_models_own_N_is_rope_clip():
    model = tiny_model()
    np.testing.assert_array_equal(clip_surgery(model).pe.w, model.with_config(rope_clip=True).pe.w)


@pytest.mark.parametrize("overrides", [dict(pe="fope"), dict(pe="alibi"), dict(pe="nope"), dict(pe="sinusoidal")])
def test_clip_surgery_refuses_embeddings_with_nothing_to_clip(overrides):
    with pytest.raises(ValueError, match="rope"):
        clip_surgery(tiny_model(**overrides))


@pytest.mark.parametrize("overrides", [dict(rope_scaling="pi", rope_scale=2.0), dict(rope_clip=True)],
                         ids=["scaled", "clipped"])
def test_clip_surgery_refuses_another_N_on_a_model_scaled_or_clipped_at_its_own(overrides):
    with pytest.raises(ValueError, match="its own N"):
        clip_surgery(tiny_model(**overrides), 64)
    assert clip_surgery(tiny_model(**overrides)).config.rope_clip


def test_surgery_loss_measures_both_models_on_the_same_windows():
    model = tiny_model()
    data = np.random.default_rng(5).integers(0, 13, 400)
    options = dict(chars_per_length=96, progress=False)
    r = surgery_loss(model, data, [16, 32], **options)
    assert r["before"] == loss_by_length(model, data, [16, 32], **options)
    assert r["after"] == loss_by_length(clip_surgery(model), data, [16, 32], **options)
    assert r["after"][32]["loss"] != r["before"][32]["loss"]
