import numpy as np
import pytest

from minifope.errors import UserError
from minifope.optim import AdamW, clip_grad_norm, lr_schedule


# --- AdamW -----------------------------------------------------------------------------

def test_adamw_first_step_matches_hand_computation():
    # (1,2) tensor, so it is decayed. lr=0.1, wd=0.1, b1=0.9, b2=0.95, eps=1e-8, t=1.
    params = {"w": np.array([[1.0, -2.0]])}
    opt = AdamW(params, lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt.step({"w": np.array([[0.5, -0.25]])})
    # m = 0.1 g = [0.05, -0.025];  v = 0.05 g^2 = [0.0125, 0.003125]
    np.testing.assert_allclose(opt.m["w"], [[0.05, -0.025]], rtol=1e-15)
    np.testing.assert_allclose(opt.v["w"], [[0.0125, 0.003125]], rtol=1e-15)
    # m_hat = 0.05/0.1 = 0.5, v_hat = 0.0125/0.05 = 0.25 (and -0.25, 0.0625 for the second)
    # decay: p * (1 - 0.1*0.1) = p * 0.99;  then p - 0.1 * m_hat / (sqrt(v_hat) + 1e-8)
    expected = [[1.0 * 0.99 - 0.1 * 0.5 / (0.5 + 1e-8),
                 -2.0 * 0.99 - 0.1 * -0.25 / (0.25 + 1e-8)]]
    np.testing.assert_allclose(params["w"], expected, rtol=1e-14)
    # 0.99 - 0.09999999800 = 0.89000000200,  -1.98 + 0.09999999600 = -1.88000000400
    np.testing.assert_allclose(params["w"], [[0.890000002, -1.880000004]], rtol=1e-9)


def test_adamw_second_step_uses_bias_correction_for_t_2():
    params = {"w": np.array([1.0])}
    opt = AdamW(params, lr=0.1, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    opt.step({"w": np.array([0.5])})
    p1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8)
    opt.step({"w": np.array([-1.0])})
    m2 = 0.9 * 0.05 + 0.1 * -1.0            # -0.055
    v2 = 0.95 * 0.0125 + 0.05 * 1.0         # 0.061875
    m_hat = m2 / (1 - 0.9 * 0.9)            # -0.055 / 0.19
    v_hat = v2 / (1 - 0.95 * 0.95)          # 0.061875 / 0.0975
    expected = p1 - 0.1 * m_hat / (v_hat ** 0.5 + 1e-8)
    np.testing.assert_allclose(params["w"], [expected], rtol=1e-14)
    # m_hat = -0.2894736842, sqrt(v_hat) = 0.7966275068: p2 = 0.900000002 + 0.0363373946
    np.testing.assert_allclose(params["w"], [0.9363373966], rtol=1e-10)


def test_weight_decay_is_decoupled_zero_grad_shrinks_by_exactly_lr_wd_p():
    # With g = 0, m = v = 0 and the Adam term is 0 / eps = 0: only the decay acts.
    # (L2 regularisation would feed wd*p through m/sqrt(v) and move p by ~lr instead.)
    p0 = np.array([[4.0, -2.0]])
    params = {"w": p0.copy()}
    opt = AdamW(params, lr=0.5, weight_decay=0.5)
    opt.step({"w": np.zeros_like(p0)})
    np.testing.assert_array_equal(params["w"], p0 - 0.5 * 0.5 * p0)   # [[3.0, -1.5]]
    np.testing.assert_array_equal(opt.m["w"], 0.0)
    np.testing.assert_array_equal(opt.v["w"], 0.0)


def test_step_lr_overrides_the_constructor_lr_for_decay_too():
    params = {"w": np.array([[4.0]])}
    opt = AdamW(params, lr=0.5, weight_decay=0.5)
    opt.step({"w": np.array([[0.0]])}, lr=0.25)
    np.testing.assert_array_equal(params["w"], [[4.0 - 0.25 * 0.5 * 4.0]])


def test_no_weight_decay_on_1d_tensors_by_default():
    params = {"blocks.0.norm1": np.ones(3), "blocks.0.attn.wo": np.ones((2, 2))}
    opt = AdamW(params, lr=0.5, weight_decay=0.5)
    assert opt.decayed == {"blocks.0.attn.wo"}
    opt.step({name: np.zeros_like(p) for name, p in params.items()})
    np.testing.assert_array_equal(params["blocks.0.norm1"], 1.0)
    np.testing.assert_array_equal(params["blocks.0.attn.wo"], 0.75)


def test_no_decay_callable_replaces_the_default_rule():
    params = {"norm_f": np.ones(3), "wte": np.ones((2, 2)), "lm_head": np.ones((2, 2))}
    opt = AdamW(params, lr=0.5, weight_decay=0.5, no_decay=lambda name, p: name == "wte")
    assert opt.decayed == {"norm_f", "lm_head"}


def test_step_updates_the_same_array_objects_in_place():
    w = np.ones((2, 3))
    params = {"w": w}
    opt = AdamW(params, lr=0.1)
    opt.step({"w": np.full((2, 3), 0.5)})
    assert params["w"] is w
    assert np.all(w < 1.0)


def test_float32_params_and_state_stay_float32():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((4, 4)).astype(np.float32),
              "n": np.ones(4, dtype=np.float32)}
    opt = AdamW(params, lr=1e-2)
    for _ in range(3):
        opt.step({"w": rng.standard_normal((4, 4)).astype(np.float32),
                  "n": rng.standard_normal(4).astype(np.float32)}, lr=3e-3)
    for name in params:
        assert params[name].dtype == np.float32
        assert opt.m[name].dtype == np.float32 and opt.v[name].dtype == np.float32
    state = opt.state_dict()
    assert state["t"].shape == () and state["t"] == 3
    assert all(a.dtype == np.float32 for key, a in state.items() if key != "t")


# --- AdamW state ---------------------------------------------------------------------

def _model_like_params(rng):
    return {"wte": rng.standard_normal((5, 4)).astype(np.float32),
            "blocks.0.norm1": np.ones(4, dtype=np.float32),
            "blocks.0.attn.wqkv": rng.standard_normal((4, 12)).astype(np.float32)}


def _grads(rng, params):
    return {name: rng.standard_normal(p.shape).astype(np.float32) for name, p in params.items()}


def test_state_dict_round_trip_through_npz_continues_bit_for_bit(tmp_path):
    rng = np.random.default_rng(1)
    params_a = _model_like_params(rng)
    params_b = {name: p.copy() for name, p in params_a.items()}
    grads = [_grads(rng, params_a) for _ in range(6)]
    lrs = [lr_schedule(i, 1e-2, 2, 6) for i in range(6)]

    opt_a = AdamW(params_a, lr=1e-2)
    for g, lr in zip(grads, lrs):
        opt_a.step(g, lr=lr)

    opt_b = AdamW(params_b, lr=1e-2)
    for g, lr in zip(grads[:3], lrs[:3]):
        opt_b.step(g, lr=lr)
    np.savez(tmp_path / "ckpt.npz", **opt_b.state_dict(),
             **{"param." + name: p for name, p in params_b.items()})
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as f:
        params_c = {name: f["param." + name] for name in params_b}
        opt_c = AdamW(params_c, lr=1e-2)
        opt_c.load_state_dict({k: f[k] for k in f.files if not k.startswith("param.")})
    assert opt_c.t == 3
    for g, lr in zip(grads[3:], lrs[3:]):
        opt_c.step(g, lr=lr)

    for name in params_a:
        np.testing.assert_array_equal(params_c[name], params_a[name])
        np.testing.assert_array_equal(opt_c.m[name], opt_a.m[name])
        np.testing.assert_array_equal(opt_c.v[name], opt_a.v[name])


def test_state_dict_returns_copies_not_the_live_state():
    params = {"w": np.ones((2, 2))}
    opt = AdamW(params)
    state = opt.state_dict()
    opt.step({"w": np.ones((2, 2))})
    np.testing.assert_array_equal(state["m.w"], 0.0)


def _corrupt(state, how):
    if how == "wrong shape":
        state["m.wte"] = np.zeros((4, 5), dtype=np.float32)
    elif how == "missing key":
        del state["v.blocks.0.norm1"]
    elif how == "unexpected key":
        state["m.blocks.9.norm1"] = np.zeros(4, dtype=np.float32)
    elif how == "wrong dtype":
        state["v.wte"] = state["v.wte"].astype(np.float64)
    elif how == "non-integer t":
        state["t"] = np.array(3.0)
    return state


@pytest.mark.parametrize("how, message", [
    ("wrong shape", "m.wte"),
    ("missing key", "v.blocks.0.norm1"),
    ("unexpected key", "m.blocks.9.norm1"),
    ("wrong dtype", "v.wte"),
    ("non-integer t", "'t'"),
])
def test_load_state_dict_rejects_mismatch_with_user_error_and_changes_nothing(how, message):
    rng = np.random.default_rng(2)
    params = _model_like_params(rng)
    source = AdamW({name: p.copy() for name, p in params.items()})
    source.step(_grads(rng, params))
    target = AdamW(params)
    with pytest.raises(UserError, match=message):
        target.load_state_dict(_corrupt(source.state_dict(), how))
    assert target.t == 0
    assert all(not m.any() for m in target.m.values())


# --- clip_grad_norm --------------------------------------------------------------------

def _grads_with_norm_5():
    return {"a": np.array([3.0]), "b": np.array([[4.0]])}   # sqrt(9 + 16) = 5


def test_clip_returns_the_global_norm_before_clipping():
    assert clip_grad_norm(_grads_with_norm_5(), max_norm=1.0) == 5.0


def test_clip_scales_all_grads_in_place_to_exactly_max_norm():
    grads = _grads_with_norm_5()
    a, b = grads["a"], grads["b"]
    clip_grad_norm(grads, max_norm=2.5)                 # scale 0.5, exact in binary
    assert grads["a"] is a and grads["b"] is b
    np.testing.assert_array_equal(a, [1.5])
    np.testing.assert_array_equal(b, [[2.0]])
    assert clip_grad_norm(grads, max_norm=None) == 2.5


@pytest.mark.parametrize("max_norm", [5.0, 10.0, 0.0, -1.0, None])
def test_clip_leaves_grads_untouched_at_or_below_max_norm_or_when_disabled(max_norm):
    grads = _grads_with_norm_5()
    assert clip_grad_norm(grads, max_norm) == 5.0
    np.testing.assert_array_equal(grads["a"], [3.0])
    np.testing.assert_array_equal(grads["b"], [[4.0]])


def test_clip_leaves_grads_untouched_when_the_norm_is_not_finite():
    grads = {"a": np.array([np.inf, 1.0])}
    assert clip_grad_norm(grads, max_norm=1.0) == np.inf
    np.testing.assert_array_equal(grads["a"], [np.inf, 1.0])


def test_clip_float32_grads_stay_float32():
    grads = {"a": np.full((3, 3), 100.0, dtype=np.float32)}
    norm = clip_grad_norm(grads, max_norm=1.0)
    assert isinstance(norm, float) and norm == pytest.approx(300.0)
    assert grads["a"].dtype == np.float32
    assert float(np.linalg.norm(grads["a"])) == pytest.approx(1.0, rel=1e-6)


# --- lr_schedule -----------------------------------------------------------------------

# max_lr=1, min_lr=0.1, W=10 warmup steps, T=110 total: the cosine spans steps 10..110.
SCHEDULE = dict(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)


def test_schedule_step_0_gets_max_lr_over_warmup_steps():
    assert lr_schedule(0, **SCHEDULE) == pytest.approx(0.1)
    assert lr_schedule(4, **SCHEDULE) == pytest.approx(0.5)


def test_schedule_reaches_max_lr_at_the_end_of_warmup():
    assert lr_schedule(9, **SCHEDULE) == pytest.approx(1.0)
    assert lr_schedule(10, **SCHEDULE) == pytest.approx(1.0)


def test_schedule_cosine_midpoint_is_halfway_between_max_and_min():
    assert lr_schedule(60, **SCHEDULE) == pytest.approx(0.55)
    # a quarter of the way: min + (max - min) * (1 + cos(pi/4)) / 2 = 0.1 + 0.9 * 0.853553
    assert lr_schedule(35, **SCHEDULE) == pytest.approx(0.868198, rel=1e-6)


def test_schedule_is_min_lr_at_total_steps_and_beyond():
    assert lr_schedule(110, **SCHEDULE) == pytest.approx(0.1)
    assert lr_schedule(111, **SCHEDULE) == 0.1
    assert lr_schedule(10_000, **SCHEDULE) == 0.1


def test_schedule_without_warmup_starts_at_max_lr():
    assert lr_schedule(0, max_lr=1.0, warmup_steps=0, total_steps=100) == 1.0
    assert lr_schedule(100, max_lr=1.0, warmup_steps=0, total_steps=100) == 0.0


def test_schedule_rejects_warmup_longer_than_total():
    with pytest.raises(ValueError, match="warmup_steps"):
        lr_schedule(0, max_lr=1.0, warmup_steps=10, total_steps=5)
