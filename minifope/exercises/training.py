"""Checkers for lessons 7, 8 and 10: AdamW, the learning-rate schedule, per-position losses,
and the attention weights in torch.nn.Linear's layout.

    check_adamw_step(fn)    fn(p, g, m, v, t, lr, betas, eps, weight_decay, decay) -> p, m, v
    check_lr_schedule(fn)   fn(step, max_lr, warmup_steps, total_steps, min_lr) -> lr (float)
    check_token_losses(fn)  fn(logits (B,T,V), targets (B,T)) -> losses (B,T)
    check_split_qkv(fn)     fn(wqkv (C,3C)) -> Wq, Wk, Wv, each (C,C) as nn.Linear stores it

Each prints the table of grading.py (one row per tensor) and its verdict, and returns True
only if every row passes; a stub is reported as not done yet, and no checker raises.
References: minifope.optim.AdamW and lr_schedule, minifope.lengthgen.token_losses,
minifope.model.GPT.attention_inputs.
"""

import numpy as np

from ..config import GPTConfig
from ..gradcheck import cmp
from ..layers import embedding_forward, rmsnorm_forward
from ..lengthgen import token_losses
from ..model import GPT
from ..optim import AdamW, lr_schedule
from .grading import HEADER, AnswerError, as_arrays, call, grade_cases, verdict

# --- lesson 7: AdamW and the learning-rate schedule -------------------------------------

def _adamw_cases():
    """(label, args of adamw_step) for one AdamW step: a first step, a later one, an exempt vector."""
    rng = np.random.default_rng(0)
    hyper = (3e-3, (0.9, 0.95), 1e-8, 0.1)  # lr, betas, eps, weight_decay
    p, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    first = (p, g, np.zeros((4, 3)), np.zeros((4, 3)), 1, *hyper, True)
    p, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    later = (p, g, 0.1 * rng.standard_normal((4, 3)), 0.01 * rng.random((4, 3)), 7, *hyper, True)
    p, g = 1.0 + 0.1 * rng.standard_normal(5), rng.standard_normal(5)
    vector = (p, g, 0.1 * rng.standard_normal(5), 0.01 * rng.random(5), 3, *hyper, False)
    return [("t=1", first), ("t=7", later), ("t=3, no decay", vector)]


def reference_adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay, decay):
    """One step of minifope.optim.AdamW on a single tensor: (p, m, v) after the step."""
    optim = AdamW({"w": p.copy()}, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                  no_decay=lambda name, param: not decay)
    optim.m["w"][...] = m
    optim.v["w"][...] = v
    optim.t = t - 1  # step() counts this step as t
    optim.step({"w": g}, lr)
    return optim.params["w"], optim.m["w"], optim.v["w"]


def check_adamw_step(adamw_step, tol=1e-10):
    """Grade adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay, decay) -> (p, m, v).

    The student's function returns the parameter and the two moments after one AdamW step
    at step count t (1 on the first step), decaying p only when decay is True. It is
    compared with minifope.optim.AdamW on three cases.
    """
    # every reference is computed before the student's step, which may update p, m, v in place
    cases = [(label, args, reference_adamw_step(*args), None) for label, args in _adamw_cases()]
    return grade_cases("adamw_step", adamw_step, cases, tol, outputs=("p", "m", "v"))


LR_SETTINGS = [dict(max_lr=3e-3, warmup_steps=10, total_steps=100, min_lr=3e-4),
               dict(max_lr=1e-2, warmup_steps=0, total_steps=40, min_lr=0.0)]


def check_lr_schedule(schedule, tol=1e-12):
    """Grade schedule(step, max_lr, warmup_steps, total_steps, min_lr) -> float against
    minifope.optim.lr_schedule at every step of two schedules (and a few steps past the end),
    naming the first step that differs."""
    answers = []
    try:
        for s in LR_SETTINGS:
            label = f"lr, warmup {s['warmup_steps']}, T {s['total_steps']}"
            steps = range(s["total_steps"] + 5)
            mine = [call("lr_at", schedule, i, s["max_lr"], s["warmup_steps"], s["total_steps"],
                         s["min_lr"]) for i in steps]
            (mine,) = as_arrays("lr_at", mine, [label])
            answers.append((label, mine, np.array([lr_schedule(i, **s) for i in steps])))
    except AnswerError as e:
        print(f"FAIL  {e}")
        return verdict("lr_at", False)
    print(HEADER)
    ok = True
    for label, mine, ref in answers:
        row_ok = cmp(label, mine, ref, tol)
        if not row_ok and mine.shape == ref.shape:
            bad = int(np.argmax(~np.isclose(mine, ref, rtol=tol, atol=0)))
            print(f"  first wrong step {bad}: yours {mine[bad]:.6g}, expected {ref[bad]:.6g}")
        ok &= row_ok
    return verdict("lr_at", ok)


# --- lesson 8: the loss at every position --------------------------------------------------

def check_token_losses(fn, tol=1e-6):
    """Grade fn(logits (B,T,V), targets (B,T)) -> (B,T): -log softmax(logits)[target] at
    every position, against minifope.lengthgen.token_losses.

    The second case holds float32 logits in the hundreds, as a model can produce: a
    softmax that does not subtract the maximum overflows there.
    """
    rng = np.random.default_rng(0)
    small = rng.standard_normal((2, 5, 7)), rng.integers(0, 7, (2, 5))
    large = (300.0 + 40.0 * rng.standard_normal((3, 4, 11))).astype(np.float32), rng.integers(0, 11, (3, 4))
    cases = [(f"losses ({label})", args, token_losses(*args), None)
             for label, args in [("random logits", small), ("large float32 logits", large)]]
    return grade_cases("token_losses", fn, cases, tol)


# --- lesson 10: the attention weights in torch.nn.Linear's layout ---------------------------

def check_split_qkv(fn, tol=1e-10):
    """Grade fn(wqkv (C,3C)) -> (Wq, Wk, Wv), each (C,C) in torch.nn.Linear's layout
    (out_features, in_features), so that q = h @ Wq.T.

    The weights are taken from block 0 of a small float64 GPT; the queries, keys and values
    the student's matrices give on a batch are compared with GPT.attention_inputs.
    """
    config = GPTConfig(vocab_size=13, d_model=32, n_head=4, n_layer=1, train_len=16,
                       dtype="float64", init_std=0.5)
    model = GPT(config)
    idx = np.random.default_rng(1).integers(0, config.vocab_size, (2, 9))
    B, T = idx.shape
    H, d = config.n_head, config.head_dim
    ref = model.attention_inputs(idx, 0)
    x, _ = embedding_forward(idx, model.params["wte"])
    h, _ = rmsnorm_forward(x, model.params["blocks.0.norm1"])
    wqkv = model.params["blocks.0.attn.wqkv"]
    try:
        mine = as_arrays("split_qkv", call("split_qkv", fn, wqkv.copy()), ["Wq", "Wk", "Wv"])
    except AnswerError as e:
        print(f"FAIL  {e}")
        return verdict("split_qkv", False)
    print(HEADER)
    ok = True
    for name, w in zip("qkv", mine):
        if w.shape != (config.d_model, config.d_model):
            print(f"{'W' + name:<28} FAIL: shape {w.shape}, expected {(config.d_model,) * 2}")
            ok = False
            continue
        heads = (h @ w.T).reshape(B, T, H, d).transpose(0, 2, 1, 3)  # as nn.Linear applies it
        ok &= cmp(f"{name} = h @ W{name}.T, by head", heads, ref[name], tol)
    return verdict("split_qkv", ok)
