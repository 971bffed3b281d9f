"""The torch path computes what the NumPy engine computes: logits and every gradient, per
position embedding, in float64 to 1e-10 and in float32 to 1e-4 (relative to the largest entry)."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch path needs PyTorch: pip install -r requirements-torch.txt")

from minifope import GPT, KVCache, alibi_slopes  # noqa: E402
from minifope.alibi import alibi_bias  # noqa: E402
from minifope.fope import fope_coefficients, fope_frequencies, fope_tables  # noqa: E402
from minifope.rope import rope_frequencies_of  # noqa: E402
from minifope.rope import apply_rotary as numpy_apply_rotary  # noqa: E402
from minifope.rope import rope_tables  # noqa: E402
from minifope.sample import generate  # noqa: E402
from minifope.torch import GPT as TorchGPT  # noqa: E402
from minifope.torch import ALiBi, FoPE, NoPE, NumpyView, RoPE, from_torch, to_torch  # noqa: E402

import helpers  # noqa: E402
from helpers import batch  # noqa: E402

torch.set_num_threads(1)

TOLERANCE = {"float64": 1e-10, "float32": 1e-4}

# fope_dim=64 over head_dim 16: F = 9 frequencies feed J = 4 rotating pairs (as in test_model.py)
CASES = {
    "rope": dict(pe="rope"),
    "rope-yarn": dict(pe="rope", rope_scaling="yarn", rope_scale=4.0, rope_original_len=16),
    "rope-yarn-no-temperature": dict(pe="rope", rope_scaling="yarn", rope_scale=16.0, rope_original_len=16,
                                     rope_yarn_temperature=False),
    "rope-clip": dict(pe="rope", rope_clip=True),
    "fope": dict(pe="fope", fope_dim=64),
    "fope-learnable": dict(pe="fope", fope_dim=64, fope_learnable=True),
    "fope-authors-padding": dict(pe="fope", fope_zero_freq="authors"),
    "alibi": dict(pe="alibi", n_head=3, d_model=24),
    "nope": dict(pe="nope"),
    "sinusoidal": dict(pe="sinusoidal"),
}


def tiny_config(dtype="float64", **overrides):
    return helpers.tiny_config(**{"train_len": 16, "dtype": dtype, **overrides})


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / np.max(np.abs(b)))


def assert_same_model(config, idx, targets, pos_offset=0):
    """Forward and backward on both sides; logits, loss and every gradient agree."""
    tol = TOLERANCE[config.dtype]
    model = GPT(config)
    module = to_torch(model)
    logits, loss = model.forward(idx, targets, pos_offset=pos_offset)
    model.backward()
    t_logits, t_loss = module(torch.from_numpy(idx), torch.from_numpy(targets), pos_offset)
    t_loss.backward()
    assert rel(t_logits.detach().numpy(), logits) <= tol
    assert abs(t_loss.item() - loss) <= tol * abs(loss)
    names = {n for n, _ in module.named_parameters()}
    assert names == set(model.params)
    for name, p in module.named_parameters():
        err = rel(p.grad.numpy(), model.grads[name])
        assert err <= tol, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_logits_and_every_gradient_equal_the_numpy_engine(case, dtype):
    config = tiny_config(dtype, **CASES[case])
    assert_same_model(config, *batch(config), pos_offset=5)


@pytest.mark.parametrize("case", ["rope", "fope-learnable", "alibi"])
def test_a_long_sequence_equals_the_numpy_chunked_attention(case):
    config = tiny_config(attn_impl="chunked", attn_chunk=8, **CASES[case])
    assert_same_model(config, *batch(config, T=40, seed=1))


def test_learnable_fope_coefficients_get_gradients_and_fixed_ones_are_buffers():
    learnable = to_torch(GPT(tiny_config(**CASES["fope-learnable"])))
    model = GPT(tiny_config(**CASES["fope"]))
    fixed = to_torch(model)
    assert "blocks.0.fope.ccos" in dict(learnable.named_parameters())
    assert "blocks.0.fope.ccos" in dict(fixed.named_buffers())
    assert "blocks.0.fope.ccos" not in dict(fixed.named_parameters())
    assert set(fixed.state_dict()) == set(model.params) | set(model.buffers)


def test_a_torch_gpt_from_a_config_starts_from_the_numpy_gpts_weights():
    config = tiny_config(**CASES["fope"])
    module = TorchGPT(config)
    model = GPT(config)
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), {**model.params, **model.buffers}[name])


def test_casting_the_module_keeps_frequencies_and_slopes_in_float64():
    for config in (tiny_config(**CASES["rope"]), tiny_config(**CASES["fope"]), tiny_config(**CASES["alibi"])):
        module = to_torch(GPT(config)).float()
        pe = module.blocks[0].fope if config.pe == "fope" else module.pe
        exact = pe.slopes if config.pe == "alibi" else pe.w
        assert exact.dtype == torch.float64
        assert module.wte.dtype == torch.float32


# --- the position embeddings as standalone modules -------------------------------------------------

def test_rope_module_rotates_like_the_numpy_rope_with_yarn():
    config = tiny_config(**CASES["rope-yarn"])
    w, factor = rope_frequencies_of(config)
    rope = RoPE.from_config(config)
    q, k = np.random.default_rng(0).standard_normal((2, 2, 3, 5, 16))
    positions = np.arange(100, 105)
    cos, sin = rope_tables(positions, w)
    tq, tk = rope(torch.from_numpy(q), torch.from_numpy(k), 100)
    np.testing.assert_allclose(tq.numpy(), numpy_apply_rotary(q, cos * factor, sin * factor), rtol=0, atol=1e-12)
    np.testing.assert_allclose(tk.numpy(), numpy_apply_rotary(k, cos * factor, sin * factor), rtol=0, atol=1e-12)
    assert factor > 1.0


def test_fope_module_draws_the_numpy_coefficients_and_tables_for_a_seed():
    H, d, N = 3, 16, 32
    fope = FoPE(H, d, N, sigma=0.5, fope_dim=48, seed=11, dtype=torch.float64)
    w = fope_frequencies(d, 10000.0, N, 48)
    ccos, csin = fope_coefficients(np.random.default_rng(11), H, len(w), fope.ccos.shape[-1], 0.5)
    np.testing.assert_array_equal(fope.ccos.numpy(), ccos)
    np.testing.assert_array_equal(fope.csin.numpy(), csin)
    positions = np.arange(7, 20)
    cos, sin = fope.tables(torch.from_numpy(positions))
    ncos, nsin = fope_tables(positions, w, ccos, csin, d)
    np.testing.assert_allclose(cos.numpy(), ncos, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sin.numpy(), nsin, rtol=0, atol=1e-12)


def test_alibi_module_is_the_numpy_bias_with_the_causal_mask_folded_in():
    alibi = ALiBi(6)
    mask = alibi(torch.arange(3, 8), torch.arange(8)).numpy()
    np.testing.assert_array_equal(alibi.slopes.numpy(), alibi_slopes(6))
    bias = alibi_bias(alibi_slopes(6), np.arange(3, 8), np.arange(8))
    causal = np.arange(8)[None, :] <= np.arange(3, 8)[:, None]
    np.testing.assert_array_equal(mask[:, causal], bias[:, causal])
    assert np.all(mask[:, ~causal] == -np.inf)


def test_nope_module_leaves_queries_and_keys_alone():
    q, k = torch.randn(2, 1, 2, 4, 8)
    tq, tk = NoPE()(q, k, 3)
    assert tq is q and tk is k


def test_a_position_module_works_inside_any_torch_attention():
    # RoPE(q, k) then SDPA gives the numpy scores' softmax of the rotated vectors
    rope = RoPE(8)
    q, k, v = torch.randn(3, 1, 2, 6, 8, dtype=torch.float64)
    rq, rk = rope(q, k, torch.arange(6))
    out = torch.nn.functional.scaled_dot_product_attention(rq, rk, v, is_causal=True)
    s = (rq @ rk.transpose(-1, -2)) / 8 ** 0.5
    s = s.masked_fill(torch.ones(6, 6, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(out, s.softmax(-1) @ v, rtol=0, atol=1e-12)


# --- the NumPy view: decoding through the key/value cache ----------------------------------------

@pytest.mark.parametrize("case", ["rope", "fope", "alibi", "nope", "sinusoidal"])
def test_decoding_a_torch_gpt_through_numpy_view_equals_the_numpy_gpt(case):
    config = tiny_config(**CASES[case])
    model = GPT(config)
    view = NumpyView(to_torch(model))
    prompt = np.random.default_rng(3).integers(0, config.vocab_size, (2, 12))
    # window 10 < prompt: the cache is cropped while positions keep counting
    expected = generate(model, prompt, 8, temperature=0, window=10)
    np.testing.assert_array_equal(generate(view, prompt, 8, temperature=0, window=10), expected)
    cache, t_cache = KVCache(config.n_layer), KVCache(config.n_layer)
    logits, _ = model.forward(prompt[:, :7], pos_offset=2, kv_cache=cache)
    t_logits, _ = view.forward(prompt[:, :7], pos_offset=2, kv_cache=t_cache)
    logits2, _ = model.forward(prompt[:, 7:], pos_offset=2, kv_cache=cache)
    t_logits2, _ = view.forward(prompt[:, 7:], pos_offset=2, kv_cache=t_cache)
    assert rel(t_logits, logits) <= 1e-10 and rel(t_logits2, logits2) <= 1e-10
    assert isinstance(t_cache.layers[0][0], torch.Tensor) and t_cache.length == 12


def test_from_torch_gives_back_the_same_arrays_after_training_steps():
    config = tiny_config(**CASES["fope-learnable"])
    module = to_torch(GPT(config))
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    idx, targets = batch(config)
    module(torch.from_numpy(idx), torch.from_numpy(targets))[1].backward()
    opt.step()
    back = from_torch(module)
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal({**back.params, **back.buffers}[name], value.numpy())
    assert rel(back.forward(idx)[0], module(torch.from_numpy(idx))[0].detach().numpy()) <= 1e-10


def test_importing_minifope_does_not_import_torch():
    code = "import sys, minifope, minifope.cli, minifope.train; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_wrong_dtype_for_to_torch_is_refused():
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        to_torch(GPT(tiny_config()), dtype=torch.bfloat16)
    module = to_torch(GPT(tiny_config()), dtype="float32")
    assert module.config.dtype == "float32" and from_torch(module).params["wte"].dtype == np.float32
    assert dataclasses.replace(module.config, dtype="float64") == tiny_config()
