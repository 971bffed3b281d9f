"""GPTConfig bounds the model's size before anything is allocated, and refuses values of the
wrong type or that are not finite with a ValueError naming the field."""

import math
import time

import pytest

from minifope.config import MAX_WEIGHTS, GPTConfig
from minifope.model import GPT


# --- GPTConfig: bounded sizes and well-typed, finite values ---------------------------------------

@pytest.mark.parametrize("fields", [dict(d_ff=10**10), dict(n_layer=10**6), dict(pe="fope", fope_dim=10**9),
                                    dict(pe="fope", d_model=2**22, n_head=2), dict(train_len=10**400)])
def test_absurd_sizes_are_refused_at_once_without_allocating(fields):
    start = time.perf_counter()
    with pytest.raises(ValueError):
        GPTConfig(**fields)
    assert time.perf_counter() - start < 0.5


def test_a_model_over_max_weights_is_refused_with_its_count():
    V, C, L, F = 10**8, 128, 4, 344  # F: the default hidden_dim of d_model 128
    count = 2 * V * C + C + L * (2 * C + 4 * C * C + 3 * C * F)
    assert count > MAX_WEIGHTS
    with pytest.raises(ValueError, match=f"would hold {count:,} weights"):
        GPTConfig(vocab_size=V)


@pytest.mark.parametrize("seed", [-1, True, 1.5, "0", None])
def test_seed_must_be_an_integer_at_least_zero(seed):
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        GPTConfig(seed=seed)


@pytest.mark.parametrize("field", ["rope_theta", "rope_scale", "fope_sigma", "init_std"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400], ids=["nan", "inf", "-inf", "1e400"])
def test_float_fields_must_be_finite(field, value):
    fields = dict(rope_scaling="yarn") if field == "rope_scale" else {}
    with pytest.raises(ValueError, match=f"{field} must be a finite number"):
        GPTConfig(**fields, **{field: value})


@pytest.mark.parametrize("field, value", [
    ("rope_theta", "1e4"), ("fope_sigma", None), ("init_std", [0.02]), ("vocab_size", True),
    ("n_layer", 4.0), ("rope_clip", "yes"), ("fope_clip", 1), ("pe", ["rope"]),
])
def test_a_value_of_the_wrong_type_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "pe" else "pe must be one of"):
        GPTConfig(**{field: value})


def test_rope_scale_takes_effect_only_with_a_scaling():
    with pytest.raises(ValueError, match="rope_scale only takes effect with rope_scaling pi, ntk or yarn"):
        GPTConfig(rope_scale=4.0)
    assert GPTConfig(rope_scaling="yarn", rope_scale=4.0).rope_scale == 4.0


@pytest.mark.parametrize("fields", [
    dict(pe="rope"), dict(pe="fope", fope_dim=64), dict(pe="fope", fope_dim=64, fope_learnable=True),
    dict(pe="fope", fope_clip=False), dict(pe="alibi"), dict(pe="nope"),
], ids=["rope", "fope", "fope-learnable", "fope-unclipped", "alibi", "nope"])
def test_param_shapes_and_num_weights_are_those_of_a_real_model(fields):
    config = GPTConfig(vocab_size=13, n_layer=2, n_head=2, d_model=32, train_len=64, **fields)
    model = GPT(config)
    params, buffers = GPT.param_shapes(config)
    assert params == {name: p.shape for name, p in model.params.items()}
    assert buffers == {name: b.shape for name, b in model.buffers.items()}
    assert config.num_weights() == sum(map(math.prod, [*params.values(), *buffers.values()]))
