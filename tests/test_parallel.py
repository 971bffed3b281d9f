"""Micro-batches on threads: the same loss and gradient as one forward and backward."""

import dataclasses

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from minifope import GPT, parallel
from minifope.attention import attention_backward, attention_forward
from minifope.parallel import MicroBatches, blas_thread_count
from minifope.train import TrainConfig, check_resume, train

from helpers import TEXT, tiny_config


def whole_batch(model, x, y, parts=1):
    model.micro_batches = parts
    _, loss = model.forward(x, y)
    model.micro_batches = None
    return loss, {name: g.copy() for name, g in model.backward().items()}


def uneven_batch(config, B=5, T=12):
    # rows with different numbers of counted targets, one row with none at all
    rng = np.random.default_rng(3)
    x = rng.integers(0, config.vocab_size, (B, T))
    y = rng.integers(0, config.vocab_size, (B, T))
    y[1, :7] = -1
    y[3, :] = -1
    return x, y


@pytest.mark.parametrize("pe", ["rope", "fope", "alibi"])
@pytest.mark.parametrize("parts, threads", [(2, 1), (2, 2), (3, 2), (5, 2)])
def test_micro_batches_give_the_whole_batch_loss_and_gradient_in_float64(pe, parts, threads):
    model = GPT(tiny_config(pe=pe, fope_learnable=pe == "fope"))
    x, y = uneven_batch(model.config)
    loss, grads = whole_batch(model, x, y)
    with MicroBatches(model, parts, threads) as micro:
        assert micro.workers == min(parts, threads)
        split_loss = micro.loss_and_grads(x, y)
    assert split_loss == pytest.approx(loss, rel=1e-13)
    for name, g in grads.items():
        np.testing.assert_allclose(model.grads[name], g, rtol=1e-11, atol=1e-14, err_msg=name)


def test_one_part_is_exactly_forward_and_backward():
    model = GPT(tiny_config(dtype="float32"))
    x, y = uneven_batch(model.config)
    loss, grads = whole_batch(model, x, y)
    with MicroBatches(model, 1) as micro:
        assert micro.workers == 1 and micro.loss_and_grads(x, y) == loss
    for name, g in grads.items():
        assert np.array_equal(model.grads[name], g), name


def test_the_result_depends_on_the_parts_not_on_the_threads():
    x, y = uneven_batch(tiny_config())
    results = []
    for threads in (1, 2):
        model = GPT(tiny_config(dtype="float32"))
        with MicroBatches(model, 2, threads) as micro:
            results.append((micro.loss_and_grads(x, y), {n: g.copy() for n, g in model.grads.items()}))
    (loss1, g1), (loss2, g2) = results
    assert loss1 == loss2
    assert all(np.array_equal(g1[n], g2[n]) for n in g1)


def test_the_blas_setting_is_put_back_after_a_step():
    before = [lib["num_threads"] for lib in threadpool_info()]
    model = GPT(tiny_config())
    with MicroBatches(model, 2, threads=2) as micro:
        micro.loss_and_grads(*uneven_batch(model.config))
    assert [lib["num_threads"] for lib in threadpool_info()] == before
    assert blas_thread_count() >= 1


def test_a_batch_with_fewer_rows_than_parts_is_refused():
    model = GPT(tiny_config())
    with MicroBatches(model, 3) as micro, pytest.raises(ValueError, match="cannot be split"):
        x, y = uneven_batch(model.config)
        micro.loss_and_grads(x[:2], y[:2])


def test_training_with_micro_batches_follows_the_one_batch_run_in_float64():
    config = tiny_config(vocab_size=64, train_len=16, n_layer=1)
    runs = []
    for parts in (1, 2, 3):
        tc = TrainConfig(steps=8, batch_size=6, eval_interval=4, eval_batches=2, log_interval=1,
                         micro_batches=parts)
        model, history = train(config, TEXT[:1500], TEXT[1500:], tc, progress=False)
        runs.append((history["loss"], model.params))
    (base_loss, base_params), *others = runs
    for loss, params in others:
        np.testing.assert_allclose(loss, base_loss, rtol=1e-10)
        for name, p in base_params.items():
            np.testing.assert_allclose(params[name], p, rtol=1e-8, atol=1e-12, err_msg=name)


def test_a_checkpoint_older_than_micro_batches_resumes():
    config, tc = tiny_config(), TrainConfig()
    saved_train = {k: v for k, v in dataclasses.asdict(tc).items() if k != "micro_batches"}
    check_resume(config.to_dict(), saved_train, config, tc, None, None)  # no conflict raised


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_plain_forward_splits_the_rows_one_part_per_thread(threads, monkeypatch):
    import minifope.model

    monkeypatch.setattr(minifope.model, "MIN_PART_TOKENS", 1)  # the tiny batch is worth splitting
    model = GPT(tiny_config(dtype="float32"))
    x, y = uneven_batch(model.config)
    loss, grads = whole_batch(model, x, y, parts=min(threads, len(x)))
    with parallel.threads(threads):
        assert parallel.get_threads() == threads
        logits, plain_loss = model.forward(x, y)
        model.backward()
    assert plain_loss == loss
    assert logits.shape == x.shape + (model.config.vocab_size,)
    for name, g in grads.items():
        assert np.array_equal(model.grads[name], g), name


def test_a_batch_too_small_to_gain_from_threads_is_one_part(monkeypatch):
    import minifope.model

    model = GPT(tiny_config(dtype="float32"))
    x, y = uneven_batch(model.config)  # 5 x 12 tokens
    calls = []
    real = model._forward_rows
    monkeypatch.setattr(model, "_forward_rows", lambda *a: calls.append(len(a[0])) or real(*a))
    with parallel.threads(2):
        monkeypatch.setattr(minifope.model, "MIN_PART_TOKENS", 61)
        model.forward(x, y)
        monkeypatch.setattr(minifope.model, "MIN_PART_TOKENS", 30)
        model.forward(x, y)
    assert calls == [5, 3, 2]  # 60 tokens: one part below 61 a part, two parts of >= 30


def test_a_part_never_splits_again():
    seen = []
    with parallel.threads(2):
        parallel.map_parts(lambda i: seen.append((i, parallel.get_threads())), range(4))
    assert sorted(seen) == [(0, 1), (1, 1), (2, 1), (3, 1)]


@pytest.mark.parametrize("B, H", [(3, 2), (1, 4), (1, 1)])
def test_the_attention_core_gives_the_same_numbers_on_any_number_of_threads(B, H, monkeypatch):
    # batch rows in parts, or a single sequence's heads in parts (with ALiBi's slopes split too)
    import minifope.attention
    from minifope import alibi_slopes

    monkeypatch.setattr(minifope.attention, "MIN_PART_SCORES", 1)
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((B, H, 40, 8)).astype(np.float32) for _ in range(4))
    results = []
    for threads in (1, 2):
        with parallel.threads(threads):
            out, cache = attention_forward(q, k, v, alibi_slopes(H), chunk=16)
            assert len(cache["parts"]) == min(threads, max(B, H) if B == 1 else B)
            results.append((out, *attention_backward(dout, cache)))
    for one, two in zip(*results):
        assert np.array_equal(one, two)


def test_set_threads_refuses_what_is_not_a_positive_integer():
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="positive integer"):
            parallel.set_threads(bad)
