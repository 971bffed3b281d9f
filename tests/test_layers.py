"""Every layer's hand-written backward against autograd of minifope.reference, in float64."""

from functools import partial

import numpy as np
import pytest

from minifope import reference as R
from minifope.alibi import alibi_slopes
from minifope.attention import (attention_forward, attention_backward, self_attention_forward,
                                self_attention_backward)
from minifope.fope import fope_coefficients, fope_coefficient_grads, fope_tables
from minifope.gradcheck import check_backward
from minifope.layers import (cross_entropy_forward, cross_entropy_backward, embedding_forward,
                             embedding_backward, linear_forward, linear_backward,
                             rmsnorm_forward, rmsnorm_backward, swiglu_forward, swiglu_backward)
from minifope.rope import (apply_rotary, apply_rotary_backward, rope_frequencies, rope_tables,
                           rotary_table_grads)

TOL = 1e-8


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_embedding_backward_sums_repeated_tokens(rng):
    idx = np.array([[1, 3, 1, 1], [0, 3, 5, 1]])  # token 1 four times, token 2 and 4 never
    wte = rng.standard_normal((6, 5))
    assert check_backward(embedding_forward, embedding_backward, R.embedding,
                          dict(idx=idx, wte=wte), tol=TOL)


def test_linear_backward_matches_autograd(rng):
    inputs = dict(x=rng.standard_normal((2, 3, 4)), w=rng.standard_normal((4, 5)))
    assert check_backward(linear_forward, linear_backward, R.linear, inputs, tol=TOL)


def test_rmsnorm_backward_matches_autograd(rng):
    inputs = dict(x=rng.standard_normal((2, 3, 8)), g=rng.standard_normal(8))
    assert check_backward(rmsnorm_forward, rmsnorm_backward, R.rmsnorm, inputs, tol=TOL)


def test_rmsnorm_output_has_unit_root_mean_square():
    x = np.random.default_rng(0).standard_normal((3, 16)) * 7.0
    out, _ = rmsnorm_forward(x, np.ones(16))
    np.testing.assert_allclose(np.sqrt(np.mean(out ** 2, axis=-1)), 1.0, rtol=1e-6)


def test_swiglu_backward_matches_autograd(rng):
    inputs = dict(x=rng.standard_normal((2, 3, 4)), w_in=rng.standard_normal((4, 12)),
                  w_out=rng.standard_normal((6, 4)))
    assert check_backward(swiglu_forward, swiglu_backward, R.swiglu, inputs, tol=TOL)


def test_cross_entropy_backward_matches_autograd_with_ignored_targets(rng):
    targets = np.array([[2, -1, 0], [4, 4, -1]])
    inputs = dict(logits=rng.standard_normal((2, 3, 5)), targets=targets)
    assert check_backward(cross_entropy_forward, cross_entropy_backward, R.cross_entropy,
                          inputs, tol=TOL)


def test_cross_entropy_ignores_positions_with_ignore_index(rng):
    logits = rng.standard_normal((1, 4, 5))
    full, _ = cross_entropy_forward(logits[:, :2], np.array([[1, 2]]))
    masked, _ = cross_entropy_forward(logits, np.array([[1, 2, -1, -1]]))
    assert masked == pytest.approx(full, rel=1e-14)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[[1000.0, 0.0, -1000.0]]])
    loss, cache = cross_entropy_forward(logits, np.array([[1]]))
    assert loss == pytest.approx(1000.0)
    (dlogits,) = cross_entropy_backward(1.0, cache)
    assert np.all(np.isfinite(dlogits))


def test_cross_entropy_of_uniform_logits_is_log_vocab():
    loss, _ = cross_entropy_forward(np.zeros((2, 3, 7)), np.zeros((2, 3), dtype=int))
    assert loss == pytest.approx(np.log(7))


def _rotary_forward(x, cos, sin):
    return apply_rotary(x, cos, sin), (x, cos, sin)


def _rotary_backward(dout, cache):
    x, cos, sin = cache
    dcos, dsin = rotary_table_grads(x, dout)  # (H, T, d/2): per-head table gradients
    if cos.ndim == 2:  # one table shared by every head: its gradient sums over heads
        dcos, dsin = dcos.sum(0), dsin.sum(0)
    return apply_rotary_backward(dout, cos, sin), dcos, dsin


def test_rotary_backward_matches_autograd(rng):
    cos, sin = rope_tables(np.arange(5) + 2, rope_frequencies(6))
    inputs = dict(x=rng.standard_normal((2, 3, 5, 6)), cos=cos, sin=sin)
    assert check_backward(_rotary_forward, _rotary_backward, R.rotary, inputs, tol=TOL)


def test_rotary_with_per_head_tables_backward_matches_autograd(rng):
    inputs = dict(x=rng.standard_normal((2, 3, 5, 8)), cos=rng.standard_normal((3, 5, 4)),
                  sin=rng.standard_normal((3, 5, 4)))
    assert check_backward(_rotary_forward, _rotary_backward, R.rotary, inputs, tol=TOL)


def test_fope_coefficient_backward_matches_autograd(rng):
    positions = np.arange(7, dtype=np.float64) + 3
    w = np.array([1.0, 0.4, 0.15, 0.07])
    ccos, csin = fope_coefficients(rng, 2, 4, 2, 0.5)

    def forward(ccos, csin):
        return np.stack(fope_tables(positions, w, ccos, csin, 8)), None

    def backward(dout, cache):
        return fope_coefficient_grads(dout[0], dout[1], positions, w, 2)

    def reference(ccos, csin):
        import autograd.numpy as anp
        return anp.stack(R.fope_tables(positions, w, ccos, csin, 8))

    assert check_backward(forward, backward, reference, dict(ccos=ccos, csin=csin), tol=TOL)


@pytest.mark.parametrize("impl", ["full", "chunked"])
@pytest.mark.parametrize("alibi", [False, True])
def test_attention_core_backward_matches_autograd(rng, impl, alibi):
    B, H, T, d = 2, 3, 11, 4
    inputs = dict(q=rng.standard_normal((B, H, T, d)), k=rng.standard_normal((B, H, T, d)),
                  v=rng.standard_normal((B, H, T, d)))
    slopes = alibi_slopes(H) if alibi else None
    forward = partial(attention_forward, slopes=slopes, impl=impl, chunk=4)
    reference = partial(R.attention, slopes=slopes)
    assert check_backward(forward, attention_backward, reference, inputs, tol=TOL)


def test_attention_core_is_causal(rng):
    q, k, v = (rng.standard_normal((1, 2, 6, 4)) for _ in range(3))
    out, _ = attention_forward(q, k, v, impl="full")
    v2 = v.copy()
    v2[..., 4:, :] += 100.0  # change only the future of rows 0..3
    out2, _ = attention_forward(q, k, v2, impl="full")
    np.testing.assert_array_equal(out[..., :4, :], out2[..., :4, :])
    assert not np.allclose(out[..., 4:, :], out2[..., 4:, :])


@pytest.mark.parametrize("pe", ["rope", "fope", "alibi", "nope"])
def test_self_attention_backward_matches_autograd(rng, pe):
    B, T, H, d = 2, 7, 2, 8
    C = H * d
    cos = sin = slopes = None
    if pe == "rope":
        cos, sin = rope_tables(np.arange(T), rope_frequencies(d))
    elif pe == "fope":
        cos, sin = fope_tables(np.arange(T), np.array([1.0, 0.3]),
                               *fope_coefficients(rng, H, 2, 2, 0.3), d)
    elif pe == "alibi":
        slopes = alibi_slopes(H)
    inputs = dict(x=rng.standard_normal((B, T, C)), wqkv=rng.standard_normal((C, 3 * C)) * 0.3,
                  wo=rng.standard_normal((C, C)) * 0.3)
    forward = partial(self_attention_forward, n_head=H, cos=cos, sin=sin, slopes=slopes)

    def backward(dout, cache):
        return self_attention_backward(dout, cache)[:3]

    reference = partial(R.self_attention, n_head=H, cos=cos, sin=sin, slopes=slopes)
    assert check_backward(forward, backward, reference, inputs, tol=TOL)
