"""Loss by length and by position, on tiny real models."""

import math

import numpy as np
import pytest

from minifope import GPT, GPTConfig
from minifope.layers import cross_entropy_forward
from minifope.lengthgen import (eval_windows, loss_by_length, plot_loss_by_length, plot_loss_by_position,
                                token_losses, window_count)


def test_token_losses_average_to_the_cross_entropy():
    rng = np.random.default_rng(0)
    logits, targets = rng.standard_normal((2, 5, 7)) * 3, rng.integers(0, 7, (2, 5))
    loss, _ = cross_entropy_forward(logits, targets)
    assert token_losses(logits, targets).mean() == pytest.approx(loss, rel=1e-12)
    assert token_losses(logits, targets)[1, 2] == pytest.approx(
        -logits[1, 2, targets[1, 2]] + math.log(np.exp(logits[1, 2]).sum()))


def test_eval_windows_are_evenly_spread_and_one_longer_than_the_length():
    data = np.arange(100)
    w = eval_windows(data, 10, 4)
    assert w.shape == (4, 11)
    np.testing.assert_array_equal(w[:, 0], [0, 29, 59, 89])
    np.testing.assert_array_equal(w[-1], np.arange(89, 100))
    with pytest.raises(ValueError, match="needs 101"):
        eval_windows(data, 100, 1)


def test_window_count_takes_the_asked_text_or_what_fits_without_overlap():
    assert window_count(10_000, 100, 1000) == 10  # 1000 // 100
    assert window_count(10_000, 1000, 1_000_000) == 9  # 10000 // 1001: windows never overlap
    assert window_count(500, 1000, 4000) == 1  # at least one


def test_loss_by_length_gives_mean_perplexity_and_position_buckets():
    model = GPT(GPTConfig(vocab_size=9, n_layer=1, n_head=2, d_model=16, train_len=8))
    data = np.random.default_rng(1).integers(0, 9, 2000)
    results = loss_by_length(model, data, [8, 32], chars_per_length=128, n_buckets=4, progress=False)
    assert set(results) == {8, 32}
    r = results[32]
    assert r["n_windows"] == 4 and r["bucket_edges"] == [0, 8, 16, 24, 32]
    assert r["ppl"] == pytest.approx(math.exp(r["loss"]))
    assert np.mean(r["bucket_loss"]) == pytest.approx(r["loss"], rel=1e-9)  # equal-width buckets
    # the same windows through model.forward give the same mean loss
    w = eval_windows(data, 32, 4)
    assert model.forward(w[:, :-1], w[:, 1:])[1] == pytest.approx(r["loss"], rel=1e-5)


def test_sixteen_times_the_training_length_goes_through_blocks_of_rows(monkeypatch):
    import minifope.attention as A

    paths = []
    real = A.attention_forward

    def recording(*args, **kwargs):
        out, cache = real(*args, **kwargs)
        paths.append(-(-cache["q"].shape[-2] // cache["chunk"]))  # blocks of query rows
        return out, cache

    monkeypatch.setattr(A, "attention_forward", recording)
    model = GPT(GPTConfig(vocab_size=9, n_layer=1, n_head=2, d_model=16, train_len=16, attn_chunk=16))
    data = np.random.default_rng(2).integers(0, 9, 1000)
    loss_by_length(model, data, [16, 256], chars_per_length=256, progress=False)
    assert set(paths[:-1]) == {1} and paths[-1] == 16  # 16 chars in one block; 256 in 16


def test_plots_return_figures_whose_legend_names_the_training_length():
    fig = plot_loss_by_length({"rope": ([8, 16], [1.0, 2.0])}, 8, spread={"rope": [0.1, 0.2]})
    assert fig.axes[0].get_xlabel().startswith("evaluation length")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["N = 8, the training length", "rope"]
    fig = plot_loss_by_position({"rope": ([0, 4, 8], [1.0, 1.5])}, 4)
    assert len(fig.axes[0].lines) >= 1
    assert "N = 4, the training length" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
