"""The attention core: the blocked paths equal the full path and bound the score memory."""

import tracemalloc

import numpy as np
import pytest

from minifope import alibi_slopes
from minifope.attention import (AUTO_CHUNK_BYTES, attention_backward, attention_forward, attention_weights,
                                keeps_weights, kept_bytes)
from minifope.gradcheck import relative_error


def _qkv(B, H, Tq, Tk, d, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, H, Tq, d)), rng.standard_normal((B, H, Tk, d)),
            rng.standard_normal((B, H, Tk, d)))


@pytest.mark.parametrize("Tq, Tk, chunk", [(37, 37, 8), (37, 37, 37), (37, 37, 100), (5, 29, 2)])
@pytest.mark.parametrize("alibi", [False, True])
def test_chunked_attention_equals_full_attention_forward_and_backward(Tq, Tk, chunk, alibi):
    q, k, v = _qkv(2, 3, Tq, Tk, 8)
    slopes = alibi_slopes(3) if alibi else None
    q_start = Tk - Tq
    dout = np.random.default_rng(1).standard_normal(q.shape)
    full, full_cache = attention_forward(q, k, v, slopes, q_start, impl="full")
    assert full_cache["p"] is not None and len(full_cache["p"][0]) == 1  # one block, P kept
    for impl in ("chunked", "auto"):  # blocks of rows: P recomputed, or kept
        chunked, chunked_cache = attention_forward(q, k, v, slopes, q_start, impl=impl, chunk=chunk)
        assert (chunked_cache["p"] is None) == (impl == "chunked")
        assert relative_error(chunked, full) < 1e-12
        for g_chunked, g_full in zip(attention_backward(dout, chunked_cache),
                                     attention_backward(dout, full_cache)):
            assert relative_error(g_chunked, g_full) < 1e-12


def test_kept_bytes_counts_the_blocks_of_a_causal_square():
    # T = 4 rows in blocks of 2: rows 0-1 see 2 keys, rows 2-3 see 4; 12 of the 16 scores
    assert kept_bytes(1, 1, 4, 4, 4, chunk=2) == 12 * 4
    assert kept_bytes(2, 3, 1, 9, 8, chunk=2) == 2 * 3 * 9 * 8  # one decoding step sees every key
    assert kept_bytes(1, 1, 5, 5, 1, chunk=5) == 25


def test_auto_keeps_the_weights_up_to_the_size_threshold():
    itemsize = 4
    assert keeps_weights("auto", 4, 4, 256, 256, itemsize, chunk=32)
    T = 8192  # 8192^2 / 2 float32 scores per head: 128 MiB
    assert kept_bytes(1, 1, T, T, itemsize, 64) > AUTO_CHUNK_BYTES
    assert not keeps_weights("auto", 1, 1, T, T, itemsize, chunk=64)
    assert keeps_weights("auto", 1, 1, 1, 65536, itemsize, chunk=128)  # one decoding step
    assert not keeps_weights("chunked", 1, 1, 2, 2, itemsize)
    assert keeps_weights("full", 64, 64, 4096, 4096, itemsize)
    with pytest.raises(ValueError, match="impl"):
        keeps_weights("flash", 1, 1, 2, 2, itemsize)


def _peak_bytes(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_chunked_forward_and_backward_keep_score_memory_to_chunk_times_T():
    T, chunk = 2048, 64
    q, k, v = (x.astype(np.float32) for x in _qkv(1, 2, T, T, 16))
    dout = np.ones_like(q)
    score_bytes = 2 * T * T * 4  # one full (B,H,T,T) float32 score tensor
    tile_bytes = 2 * chunk * T * 4  # one (B,H,chunk,T) block of it

    def run(impl):
        out, cache = attention_forward(q, k, v, impl=impl, chunk=chunk)
        attention_backward(dout, cache)

    assert _peak_bytes(lambda: run("full")) > score_bytes
    chunked_peak = _peak_bytes(lambda: run("chunked"))
    assert chunked_peak < score_bytes / 4
    assert chunked_peak < 8 * tile_bytes + 8 * q.nbytes  # a few tiles, plus q, k, v and grads


@pytest.mark.parametrize("with_alibi", [False, True])
def test_attention_weights_are_the_causal_softmax_that_weighs_the_values(with_alibi):
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal((2, 4, 6, 8)) for _ in range(3))
    slopes = alibi_slopes(4) if with_alibi else None
    p = attention_weights(q, k, slopes)
    assert p.shape == (2, 4, 6, 6)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    assert (p[..., np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]] == 0).all()
    out, _ = attention_forward(q, k, v, slopes, impl="full")
    np.testing.assert_allclose(p @ v, out, rtol=1e-12, atol=1e-14)


def test_without_a_position_embedding_a_query_is_blind_to_the_order_of_the_keys_it_sees():
    # lesson 1: permute the keys and values the last query sees, together, and its output stays;
    # the earlier queries see other sets of keys, so theirs change (the causal mask's own signal)
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal((1, 2, 7, 8)) for _ in range(3))
    perm = rng.permutation(7)
    out, _ = attention_forward(q, k, v, impl="full")
    moved, _ = attention_forward(q, k[:, :, perm], v[:, :, perm], impl="full")
    np.testing.assert_allclose(moved[:, :, -1], out[:, :, -1], rtol=1e-12)
    assert not np.allclose(moved[:, :, :-1], out[:, :, :-1])
