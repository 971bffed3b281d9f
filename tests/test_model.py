"""The whole GPT: gradients against autograd and finite differences, determinism, dtypes, API."""

import autograd
import numpy as np
import pytest

from minifope import GPT, GPTConfig, KVCache
from minifope import reference as R
from minifope.gradcheck import check_gradients, numerical_gradient, relative_error

from helpers import batch, tiny_config

# fope_dim=64 over head_dim 16 makes F = 9 frequencies feed J = 4 rotating pairs with
# step 3, so the step identity, the padding and the noise all take part.
CASES = {
    "rope": dict(pe="rope"),
    "fope": dict(pe="fope", fope_dim=64),
    "fope-learnable": dict(pe="fope", fope_dim=64, fope_learnable=True),
    "alibi": dict(pe="alibi", n_head=3, d_model=24),
    "nope": dict(pe="nope"),
    "sinusoidal": dict(pe="sinusoidal"),
}


@pytest.mark.parametrize("case", CASES)
def test_model_gradients_match_autograd(case):
    config = tiny_config(**CASES[case])
    model = GPT(config)
    idx, targets = batch(config)
    _, loss = model.forward(idx, targets, pos_offset=5)
    model.backward()
    assert loss == pytest.approx(R.gpt_loss(model.params, model.buffers, config, idx, targets, 5),
                                 rel=1e-12)
    ref = autograd.grad(R.gpt_loss)(model.params, model.buffers, config, idx, targets, 5)
    assert check_gradients(model.grads, ref, tol=1e-8)


@pytest.mark.parametrize("case", CASES)
def test_model_gradients_match_central_differences(case):
    config = tiny_config(**CASES[case])
    model = GPT(config)
    idx, targets = batch(config, T=6)
    model.forward(idx, targets)
    grads = {name: g.copy() for name, g in model.backward().items()}
    rng = np.random.default_rng(1)

    def loss():
        return model.forward(idx, targets)[1]

    for name, p in model.params.items():
        picks = [tuple(rng.integers(0, n) for n in p.shape) for _ in range(3)]
        numeric = np.array([numerical_gradient(loss, p, i, eps=1e-5) for i in picks])
        analytic = np.array([grads[name][i] for i in picks])
        scale = max(np.max(np.abs(analytic)), 1e-6)
        assert np.max(np.abs(numeric - analytic)) / scale < 1e-5, name


def test_forward_returns_logits_and_loss_and_no_loss_without_targets():
    config = tiny_config()
    model = GPT(config)
    idx, targets = batch(config)
    logits, loss = model.forward(idx)
    assert logits.shape == (2, 9, config.vocab_size) and loss is None
    _, loss = model.forward(idx, targets)
    assert isinstance(loss, float) and loss > 0


def test_params_and_grads_have_the_same_names_and_shapes():
    model = GPT(tiny_config(pe="fope", fope_learnable=True))
    assert model.params.keys() == model.grads.keys()
    assert all(model.params[n].shape == model.grads[n].shape for n in model.params)
    assert "blocks.0.fope.ccos" in model.params
    fixed = GPT(tiny_config(pe="fope"))
    assert "blocks.0.fope.ccos" in fixed.buffers and "blocks.0.fope.ccos" not in fixed.params


def test_fope_coefficients_differ_between_layers():
    model = GPT(tiny_config(pe="fope", fope_dim=64))
    assert not np.allclose(model.buffers["blocks.0.fope.ccos"], model.buffers["blocks.1.fope.ccos"])
    assert not np.allclose(model.buffers["blocks.0.fope.ccos"], model.buffers["blocks.0.fope.csin"])


def test_backward_without_a_forward_with_targets_raises():
    config = tiny_config()
    model = GPT(config)
    with pytest.raises(RuntimeError):
        model.backward()
    model.forward(batch(config)[0])
    with pytest.raises(RuntimeError):
        model.backward()


@pytest.mark.parametrize("pe", ["rope", "fope", "alibi", "nope", "sinusoidal"])
def test_same_config_and_seed_give_identical_params_and_outputs(pe):
    config = tiny_config(pe=pe, dtype="float32")
    a, b = GPT(config), GPT(config)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    idx, targets = batch(config)
    np.testing.assert_array_equal(a.forward(idx, targets)[0], b.forward(idx, targets)[0])
    a.backward(), b.backward()
    for name in a.grads:
        np.testing.assert_array_equal(a.grads[name], b.grads[name])
    other = GPT(tiny_config(pe=pe, dtype="float32", seed=8))
    assert not np.array_equal(other.params["wte"], a.params["wte"])


@pytest.mark.parametrize("pe", ["rope", "fope", "alibi", "nope", "sinusoidal"])
def test_float32_logits_match_float64_logits(pe):
    config64 = tiny_config(pe=pe, init_std=0.02)
    config32 = tiny_config(pe=pe, init_std=0.02, dtype="float32")
    m64, m32 = GPT(config64), GPT(config32)
    idx, _ = batch(config64, T=32)
    logits64, _ = m64.forward(idx)
    logits32, _ = m32.forward(idx)
    assert logits32.dtype == np.float32 and logits64.dtype == np.float64
    assert all(p.dtype == np.float32 for p in m32.params.values())
    m32.forward(idx, np.zeros_like(idx))
    assert all(g.dtype == np.float32 for g in m32.backward().values())
    np.testing.assert_allclose(logits32, logits64, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case, invariant", [
    (dict(pe="rope"), True),
    (dict(pe="alibi"), True),
    (dict(pe="nope"), True),
    (dict(pe="fope", fope_sigma=0.0), True),
    (dict(pe="fope", fope_sigma=0.3), False),
    (dict(pe="sinusoidal"), False),
])
def test_pos_offset_changes_logits_only_for_fope_with_noise_and_absolute_positions(case, invariant):
    config = tiny_config(**case)
    model = GPT(config)
    idx, _ = batch(config, T=12)
    logits0, _ = model.forward(idx, pos_offset=0)
    logits1, _ = model.forward(idx, pos_offset=37)
    diff = np.max(np.abs(logits0 - logits1)) / np.max(np.abs(logits0))
    if invariant:
        assert diff < 1e-12
    else:
        assert diff > 1e-4


@pytest.mark.parametrize("pe", ["rope", "fope", "alibi", "sinusoidal"])
def test_chunked_model_equals_full_model_forward_and_backward(pe):
    idx, targets = batch(tiny_config(), T=23)
    results = {}
    for impl in ("full", "chunked"):
        model = GPT(tiny_config(pe=pe, fope_learnable=pe == "fope", attn_impl=impl, attn_chunk=5))
        logits, loss = model.forward(idx, targets)
        results[impl] = logits, loss, {n: g.copy() for n, g in model.backward().items()}
    assert relative_error(results["chunked"][0], results["full"][0]) < 1e-12
    assert results["chunked"][1] == pytest.approx(results["full"][1], rel=1e-12)
    for name, g in results["full"][2].items():
        assert relative_error(results["chunked"][2][name], g) < 1e-12, name


@pytest.mark.parametrize("pe", ["rope", "fope", "alibi", "nope", "sinusoidal"])
def test_kv_cache_decoding_equals_full_recomputation(pe):
    config = tiny_config(pe=pe)
    model = GPT(config)
    idx, _ = batch(config, B=2, T=10)
    full, _ = model.forward(idx, pos_offset=3)
    cache = KVCache(config.n_layer)
    steps = [model.forward(idx[:, :4], pos_offset=3, kv_cache=cache)[0]]
    for t in range(4, 10):
        steps.append(model.forward(idx[:, t:t + 1], pos_offset=3, kv_cache=cache)[0])
    assert cache.length == 10
    assert relative_error(np.concatenate(steps, axis=1), full) < 1e-12


def test_number_of_parameters_is_the_sum_of_the_shapes():
    config = tiny_config()
    C, V, F, L = config.d_model, config.vocab_size, config.hidden_dim, config.n_layer
    expected = 2 * V * C + C + L * (2 * C + 3 * C * C + C * C + 2 * C * F + F * C)
    assert GPT(config).num_params() == expected


@pytest.mark.parametrize("field, value, words", [
    ("d_model", 30, "divisible by n_head"),
    ("d_model", 36, "head_dim"),          # 36 / 4 heads = 9, odd
    ("pe", "sinusoid", "pe must be one of"),
    ("n_layer", 0, "n_layer"),
    ("vocab_size", -3, "vocab_size"),
    ("train_len", 0, "train_len"),
    ("dtype", "float16", "dtype"),
    ("fope_dim", 8, "fope_dim"),           # below head_dim 16 it would be silently ignored
    ("attn_impl", "flash", "attn_impl"),
])
def test_bad_config_raises_value_error_naming_the_field(field, value, words):
    overrides = dict(n_head=4, d_model=64)
    overrides[field] = value
    with pytest.raises(ValueError, match=words):
        GPTConfig(**overrides)


def test_tokens_outside_the_vocabulary_are_refused():
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="outside"):
        model.forward(np.array([[0, 13]]))


@pytest.mark.parametrize("pe", ["rope", "fope", "alibi"])
def test_attention_inputs_are_what_the_layer_attends_with(pe):
    from minifope.rope import apply_rotary

    config = tiny_config(pe=pe)
    model = GPT(config)
    idx, _ = batch(config, T=8)
    got = model.attention_inputs(idx, 1, pos_offset=4)
    assert got["q"].shape == (2, config.n_head, 8, config.head_dim)
    if pe == "alibi":
        assert got["cos"] is None and got["q_rot"] is got["q"]
    else:
        np.testing.assert_allclose(apply_rotary(got["k"], got["cos"], got["sin"]), got["k_rot"])
    # the same keys as the KV cache of a real forward holds
    cache = KVCache(config.n_layer)
    model.forward(idx, pos_offset=4, kv_cache=cache)
    np.testing.assert_allclose(cache.layers[1][0], got["k_rot"], rtol=1e-12)


def test_with_config_shares_the_weights_and_applies_the_change():
    model = GPT(tiny_config(pe="rope"))
    yarn = model.with_config(rope_scaling="yarn", rope_scale=2.0)
    assert yarn.params["wte"] is model.params["wte"]
    idx, _ = batch(tiny_config(), T=12)
    assert not np.allclose(yarn.forward(idx)[0], model.forward(idx)[0])
    same = model.with_config(attn_impl="chunked", attn_chunk=4)
    assert relative_error(same.forward(idx)[0], model.forward(idx)[0]) < 1e-12
    with pytest.raises(ValueError, match="shapes"):
        model.with_config(d_model=64, n_head=2)


def test_one_seed_gives_every_position_embedding_the_same_shared_parameters():
    # FoPE's coefficients have a stream of their own, so a rope/fope/alibi/nope comparison
    # of one seed starts from the same weights: only the position embedding differs
    base = dict(vocab_size=13, n_layer=2, n_head=2, d_model=16, train_len=32, seed=7)
    models = {pe: GPT(GPTConfig(**base, pe=pe)) for pe in ("rope", "fope", "alibi", "nope")}
    models["fope-authors"] = GPT(GPTConfig(**base, pe="fope", fope_zero_freq="authors"))
    rope = models["rope"]
    for name, model in models.items():
        shared = set(model.params) & set(rope.params)
        assert shared == set(rope.params), name  # every parameter of rope is in every model
        for p in shared:
            np.testing.assert_array_equal(model.params[p], rope.params[p], err_msg=f"{name} {p}")
    fope = models["fope"]
    assert fope.buffers["blocks.0.fope.ccos"].shape == (2, len(fope.pe.w), fope.pe.J)
    # the coefficients differ between seeds and between layers, and do not repeat a weight's draws
    other = GPT(GPTConfig(**{**base, "seed": 8}, pe="fope"))
    assert not np.array_equal(other.buffers["blocks.0.fope.ccos"], fope.buffers["blocks.0.fope.ccos"])
    assert not np.array_equal(fope.buffers["blocks.0.fope.ccos"], fope.buffers["blocks.1.fope.ccos"])
    np.testing.assert_array_equal(models["fope-authors"].buffers["blocks.1.fope.csin"],
                                  fope.buffers["blocks.1.fope.csin"])
