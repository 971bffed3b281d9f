"""Checkers for lessons 6, 7 and 9: AdamW, the learning-rate schedule, per-position losses,
and the attention weights in torch.nn.Linear's layout.

Each checker takes the student's function, runs it on fixed inputs, computes the same
thing with the library, prints one row per tensor (as minifope.gradcheck.cmp does: max
|diff|, relative error, ok or FAIL) and returns True only if every row passes:

    from minifope.exercises.training import check_adamw_step
    check_adamw_step(adamw_step)

A function that still raises NotImplementedError is reported as not done yet; any other
exception, a wrong shape or a wrong type is printed as one line. No checker raises on a
wrong answer.
"""

import numpy as np

from ..config import GPTConfig
from ..gradcheck import cmp
from ..layers import embedding_forward, rmsnorm_forward
from ..lengthgen import token_losses
from ..model import GPT
from ..optim import AdamW, lr_schedule

NOT_DONE = object()


def attempt(fn, *args, **kwargs):
    """fn(*args, **kwargs), or NOT_DONE after printing why it gave no answer."""
    try:
        with np.errstate(all="ignore"):  # an overflow shows up as a FAIL row instead
            return fn(*args, **kwargs)
    except NotImplementedError:
        print(f"{getattr(fn, '__name__', 'your function')}: not done yet "
              "(it raises NotImplementedError); write it and run the check again")
    except Exception as e:  # a student's bug is reported, not raised
        print(f"{getattr(fn, '__name__', 'your function')} raised {type(e).__name__}: {e}")
    return NOT_DONE


def as_array(name, value):
    """value as a float64 array, or None after printing why it cannot be one."""
    try:
        a = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        print(f"{name:<28} FAIL: expected an array of numbers, got {type(value).__name__}")
        return None
    return a


def header():
    print(f"{'tensor':<28} {'shape':<16} {'max |diff|':>12} {'rel error':>12}   status")


def verdict(ok):
    print("all ok" if ok else "some FAIL: look at the rows marked FAIL")
    return ok


def compare(name, mine, ref, tol):
    """cmp for a student's value of any type: a clear FAIL line for a non-array."""
    a = as_array(name, mine)
    if a is None:
        return False
    with np.errstate(all="ignore"):
        return cmp(name, a, ref, tol)


# --- lesson 6: AdamW and the learning-rate schedule -------------------------------------

def _adamw_cases():
    """(label, inputs) for one AdamW step: a first step, a later one, an exempt vector."""
    rng = np.random.default_rng(0)
    matrix = dict(p=rng.standard_normal((4, 3)), g=rng.standard_normal((4, 3)))
    later = dict(p=rng.standard_normal((4, 3)), g=rng.standard_normal((4, 3)),
                 m=0.1 * rng.standard_normal((4, 3)), v=0.01 * rng.random((4, 3)))
    vector = dict(p=1.0 + 0.1 * rng.standard_normal(5), g=rng.standard_normal(5),
                  m=0.1 * rng.standard_normal(5), v=0.01 * rng.random(5))
    return [
        ("t=1", dict(**matrix, m=np.zeros((4, 3)), v=np.zeros((4, 3)), t=1, decay=True)),
        ("t=7", dict(**later, t=7, decay=True)),
        ("t=3, no decay", dict(**vector, t=3, decay=False)),
    ]


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
    hyper = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    rows = []
    for label, case in _adamw_cases():
        ref = reference_adamw_step(**{k: np.copy(x) for k, x in case.items()}, **hyper)
        mine = attempt(adamw_step, **{k: np.copy(x) for k, x in case.items()}, **hyper)
        if mine is NOT_DONE:
            return False
        if not isinstance(mine, tuple) or len(mine) != 3:
            print(f"adamw_step must return a tuple (p, m, v), got {type(mine).__name__}")
            return False
        rows += [(f"{name} ({label})", a, b) for name, a, b in zip(("p", "m", "v"), mine, ref)]
    header()
    ok = True
    for name, a, b in rows:
        ok &= compare(name, a, b, tol)
    return verdict(ok)


def check_lr_schedule(schedule, tol=1e-12):
    """Grade schedule(step, max_lr, warmup_steps, total_steps, min_lr) -> float against
    minifope.optim.lr_schedule at every step of two schedules (and a few steps past the end),
    naming the first step that differs."""
    settings = [dict(max_lr=3e-3, warmup_steps=10, total_steps=100, min_lr=3e-4),
                dict(max_lr=1e-2, warmup_steps=0, total_steps=40, min_lr=0.0)]
    answers = []
    for s in settings:
        steps = np.arange(s["total_steps"] + 5)
        mine = []
        for i in steps:
            value = attempt(schedule, int(i), s["max_lr"], s["warmup_steps"], s["total_steps"],
                            s["min_lr"])
            if value is NOT_DONE:
                return False
            mine.append(value)
        answers.append((s, mine, np.array([lr_schedule(int(i), **s) for i in steps])))
    header()
    ok = True
    for s, mine, ref in answers:
        name = f"lr, warmup {s['warmup_steps']}, T {s['total_steps']}"
        row_ok = compare(name, mine, ref, tol)
        a = as_array(name, mine)
        if not row_ok and a is not None and a.shape == ref.shape:
            bad = int(np.argmax(~np.isclose(a, ref, rtol=tol, atol=0)))
            print(f"    first wrong step {bad}: yours {a[bad]:.6g}, expected {ref[bad]:.6g}")
        ok &= row_ok
    return verdict(ok)


# --- lesson 7: the loss at every position --------------------------------------------------

def check_token_losses(fn, tol=1e-6):
    """Grade fn(logits (B,T,V), targets (B,T)) -> (B,T): -log softmax(logits)[target] at
    every position, against minifope.lengthgen.token_losses.

    The second case holds float32 logits in the hundreds, as a model can produce: a
    softmax that does not subtract the maximum overflows there.
    """
    rng = np.random.default_rng(0)
    cases = [("random logits", rng.standard_normal((2, 5, 7)), rng.integers(0, 7, (2, 5))),
             ("large float32 logits", (300.0 + 40.0 * rng.standard_normal((3, 4, 11))).astype(np.float32),
              rng.integers(0, 11, (3, 4)))]
    answers = []
    for label, logits, targets in cases:
        mine = attempt(fn, logits.copy(), targets.copy())
        if mine is NOT_DONE:
            return False
        answers.append((label, mine, token_losses(logits, targets)))
    header()
    ok = True
    for label, mine, ref in answers:
        ok &= compare(f"losses ({label})", mine, ref, tol)
    return verdict(ok)


# --- lesson 9: the attention weights in torch.nn.Linear's layout ---------------------------

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
    mine = attempt(fn, wqkv.copy())
    if mine is NOT_DONE:
        return False
    if not isinstance(mine, (tuple, list)) or len(mine) != 3:
        print(f"split_qkv must return three matrices (Wq, Wk, Wv), got {type(mine).__name__}")
        return False
    header()
    ok = True
    for name, w in zip("qkv", mine):
        w = as_array(f"W{name}", w)
        if w is None or w.shape != (config.d_model, config.d_model):
            if w is not None:
                print(f"{'W' + name:<28} FAIL: shape {w.shape}, expected {(config.d_model,) * 2}")
            ok = False
            continue
        heads = (h @ w.T).reshape(B, T, H, d).transpose(0, 2, 1, 3)  # as nn.Linear applies it
        ok &= compare(f"{name} = h @ W{name}.T, by head", heads, ref[name], tol)
    return verdict(ok)
