"""The attention core: the query-chunked path equals the full path and bounds the score memory."""

import tracemalloc

import numpy as np
import pytest

from minifope import alibi_slopes
from minifope.attention import (AUTO_CHUNK_BYTES, attention_backward, attention_forward, attention_weights,
                                use_chunked)
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
    chunked, chunked_cache = attention_forward(q, k, v, slopes, q_start, impl="chunked", chunk=chunk)
    assert full_cache[0] == "full" and chunked_cache[0] == "chunked"
    assert relative_error(chunked, full) < 1e-12
    for g_chunked, g_full in zip(attention_backward(dout, chunked_cache),
                                 attention_backward(dout, full_cache)):
        assert relative_error(g_chunked, g_full) < 1e-12


def test_auto_chunks_past_one_block_of_rows_or_above_the_size_threshold():
    itemsize = 4
    assert not use_chunked("auto", 4, 4, 128, 128, itemsize, chunk=128)
    assert use_chunked("auto", 4, 4, 129, 129, itemsize, chunk=128)
    rows = AUTO_CHUNK_BYTES // (itemsize * 65536)
    assert use_chunked("auto", 1, 1, rows + 1, 65536, itemsize, chunk=4096)
    assert not use_chunked("auto", 1, 1, 1, 65536, itemsize, chunk=128)  # one decoding step
    assert use_chunked("chunked", 1, 1, 2, 2, itemsize)
    assert not use_chunked("full", 64, 64, 4096, 4096, itemsize)


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
