"""Checkers for lessons 7, 8 and 10: AdamW, the learning-rate schedule, per-position losses,
and the attention weights in torch.nn.Linear's layout.

    check_adamw_step(fn)    fn(p, g, m, v, t, lr, betas, eps, weight_decay, decay) -> p, m, v
    check_lr_schedule(fn)   fn(step, max_lr, warmup_steps, total_steps, min_lr) -> lr (float)
    check_token_losses(fn)  fn(logits (B,T,V), targets (B,T)) -> losses (B,T)
    check_split_qkv(fn)     fn(wqkv (C,3C)) -> Wq, Wk, Wv, each (C,C) as nn.Linear stores it

Each prints the table of grading.py (one row per tensor), a hint when the answer is that of
a known mistake (each checker computes those wrong answers too), and its verdict, and returns
True only if every row passes; a stub is reported as not done yet, and no checker raises.
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
from .grading import HEADER, AnswerError, as_arrays, call, grade_cases, known_mistake, verdict

# --- lesson 7: AdamW and the learning-rate schedule -------------------------------------

def _adamw_cases():
    """(label, args of adamw_step) for one AdamW step: a first step, a later one, an exempt vector.

    The later step's first row has gradients and moments about 1e-8 in size, as an embedding
    row of a rare character has: there sqrt(v_hat) is as small as eps, so where eps goes matters.
    """
    rng = np.random.default_rng(0)
    hyper = (3e-3, (0.9, 0.95), 1e-8, 0.1)  # lr, betas, eps, weight_decay
    p, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    first = (p, g, np.zeros((4, 3)), np.zeros((4, 3)), 1, *hyper, True)
    p, g = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    m, v = 0.1 * rng.standard_normal((4, 3)), 0.01 * rng.random((4, 3))
    g[0], m[0], v[0] = 1e-8 * g[0], 1e-8 * m[0], 1e-16 * v[0]
    later = (p, g, m, v, 7, *hyper, True)
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


def _adamw_mistakes(p, g, m, v, t, lr, betas, eps, weight_decay, decay):
    """{hint: [p, m, v] after a step with one known mistake, None where it changes nothing}."""
    b1, b2 = betas

    def moments(g, t):  # m, v, m_hat, v_hat
        m1, v1 = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        with np.errstate(all="ignore"):  # t - 1 = 0 divides by 1 - beta^0 = 0, as the mistake does
            return m1, v1, m1 / (1 - b1 ** t), v1 / (1 - b2 ** t)

    def adam(p, m_hat, v_hat):
        with np.errstate(all="ignore"):
            return p - lr * m_hat / (np.sqrt(v_hat) + eps)

    m1, v1, m_hat, v_hat = moments(g, t)
    shrunk = p - lr * weight_decay * p if decay else p
    m_l2, v_l2, _, _ = moments(g + weight_decay * p if decay else g, t)
    return {
        "bias correction: divide m by 1 - beta1^t and v by 1 - beta2^t before the step "
        "(m_hat, v_hat); m and v start at 0, so without it the first steps have the wrong size":
            [adam(shrunk, m1, v1), None, None],
        "return the moments m and v themselves, not m_hat and v_hat: the next step averages into m, v":
            [None, m_hat, v_hat],
        "t is this step's count, 1 on the first step: the bias correction divides by 1 - beta^t, "
        "not 1 - beta^(t+1)":
            [adam(shrunk, *moments(g, t + 1)[2:]), None, None],
        "t is this step's count, 1 on the first step: the bias correction divides by 1 - beta^t, "
        "not 1 - beta^(t-1) (which is 0 on the first step)":
            [adam(shrunk, *moments(g, t - 1)[2:]), None, None],
        "eps goes outside the square root, sqrt(v_hat) + eps: sqrt(v_hat + eps) is never below "
        "sqrt(eps), 1e-4 here, which all but stops the weights whose gradients are tiny":
            [shrunk - lr * m_hat / np.sqrt(v_hat + eps), None, None],
        "eps is added to sqrt(v_hat), after the bias correction: with lr * sqrt(1 - beta2^t) / (1 - beta1^t) "
        "* m / (sqrt(v) + eps), the Adam paper's form, eps acts larger by 1 / sqrt(1 - beta2^t)":
            [shrunk - lr * m_hat / (np.sqrt(v_hat) + eps / np.sqrt(1 - b2 ** t)), None, None],
        "decoupled weight decay shrinks p directly (p - lr * wd * p) and never enters m or v: "
        "adding wd * p to the gradient is L2 regularisation, which Adam's rescaling undoes":
            [None, m_l2, v_l2],  # told by m and v: at t=1 every step is about lr * sign(g) either way
        "decay is False for this tensor, a vector like an RMSNorm scale (minifope.train.no_decay "
        "decays only matrices, and never FoPE's coefficients): leave p undecayed":
            [None if decay else adam(p - lr * weight_decay * p, m_hat, v_hat), None, None],
        "decay is True: shrink p by lr * weight_decay * p before the Adam step":
            [adam(p, m_hat, v_hat) if decay else None, None, None],
        "the decay is scaled by the learning rate too: p - lr * weight_decay * p, not p - weight_decay * p":
            [adam(p - weight_decay * p, m_hat, v_hat) if decay else None, None, None],
        "decay first, as torch.optim.AdamW does: p - lr * weight_decay * p uses p from before the Adam step":
            [adam(p, m_hat, v_hat) * (1 - lr * weight_decay) if decay else None, None, None],
    }


def check_adamw_step(adamw_step, tol=1e-10):
    """Grade adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay, decay) -> (p, m, v).

    The student's function returns the parameter and the two moments after one AdamW step
    at step count t (1 on the first step), decaying p only when decay is True. It is
    compared with minifope.optim.AdamW on three cases, with a hint when it matches a
    known mistake (no bias correction, L2 instead of decoupled decay, eps inside the root, ...).
    """
    # every reference is computed before the student's step, which may update p, m, v in place
    cases = [(label, args, reference_adamw_step(*args), _adamw_mistakes(*args))
             for label, args in _adamw_cases()]
    return grade_cases("adamw_step", adamw_step, cases, tol, outputs=("p", "m", "v"))


LR_SETTINGS = [dict(max_lr=3e-3, warmup_steps=10, total_steps=100, min_lr=3e-4),
               dict(max_lr=1e-2, warmup_steps=0, total_steps=40, min_lr=0.0)]


def _lr_mistakes(steps, ref, max_lr, warmup_steps, total_steps, min_lr):
    """{hint: [the rates at `steps` of a schedule with one known mistake]}; ref: lr_schedule's."""
    s, W, T = steps, warmup_steps, total_steps
    warm, cosine = (s < W), (W <= s) & (s < T)
    progress = (s - W) / (T - W)

    def half_cosine(low, high, progress):
        return low + (high - low) * 0.5 * (1.0 + np.cos(np.pi * progress))

    return {
        "the warmup starts at max_lr / W on step 0, not at 0 (the first step must move the weights): "
        "lr = max_lr * (step + 1) / W, which reaches max_lr on step W - 1":
            [np.where(warm, max_lr * s / max(W, 1), ref)],
        "the warmup ends after W steps, on step W - 1 (step < W): on step W the cosine begins, "
        "at max_lr; (step + 1) / W would overshoot it there":
            [np.where(s <= W, max_lr * (s + 1) / max(W, 1), ref)],
        "the cosine decays to min_lr, not to 0: lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2":
            [np.where(cosine, half_cosine(0.0, max_lr, progress), ref)],
        "the cosine's height is max_lr - min_lr, so that it starts at max_lr: "
        "min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2":
            [np.where(cosine, min_lr + half_cosine(0.0, max_lr, progress), ref)],
        "the cosine starts when the warmup ends: progress = (step - W) / (T - W), not step / T":
            [np.where(cosine, half_cosine(min_lr, max_lr, s / T), ref)],
        "progress = (step - W) / (T - W): it reaches 1 on step T, where the rate is min_lr, "
        "not on step T - 1":
            [np.where(cosine, half_cosine(min_lr, max_lr, (s - W) / max(T - W - 1, 1)), ref)],
        "from step T on the rate stays at min_lr: the cosine would climb back up":
            [np.where(s >= T, half_cosine(min_lr, max_lr, progress), ref)],
    }


def check_lr_schedule(schedule, tol=1e-12):
    """Grade schedule(step, max_lr, warmup_steps, total_steps, min_lr) -> float against
    minifope.optim.lr_schedule at every step of two schedules (and a few steps past the end),
    naming the first step that differs, with a hint when the rates match a known mistake
    (a warmup from 0, a cosine down to 0 instead of min_lr, ...)."""
    answers = []
    try:
        for s in LR_SETTINGS:
            label = f"lr, warmup {s['warmup_steps']}, T {s['total_steps']}"
            steps = range(s["total_steps"] + 5)
            mine = [call("lr_at", schedule, i, s["max_lr"], s["warmup_steps"], s["total_steps"],
                         s["min_lr"]) for i in steps]
            (mine,) = as_arrays("lr_at", mine, [label])
            ref = np.array([lr_schedule(i, **s) for i in steps])
            answers.append((label, mine, ref, _lr_mistakes(np.arange(len(ref)), ref, **s)))
    except AnswerError as e:
        print(f"FAIL  {e}")
        return verdict("lr_at", False)
    print(HEADER)
    ok = True
    for label, mine, ref, mistakes in answers:
        row_ok = cmp(label, mine, ref, tol)
        if not row_ok and mine.shape == ref.shape:
            bad = int(np.argmax(~np.isclose(mine, ref, rtol=tol, atol=0)))
            print(f"  first wrong step {bad}: yours {mine[bad]:.6g}, expected {ref[bad]:.6g}")
        hint = None if row_ok else known_mistake([mine], [ref], mistakes, tol)
        if hint:
            print(f"  hint: {hint}")
        ok &= row_ok
    return verdict("lr_at", ok)


# --- lesson 8: the loss at every position --------------------------------------------------

def _token_loss_mistakes(logits, targets):
    """{hint: [the losses of a token_losses with one known mistake]}."""
    z = logits.astype(np.float64)
    M = z.max(axis=-1, keepdims=True)
    logp = z - M - np.log(np.exp(z - M).sum(axis=-1, keepdims=True))
    ref = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]

    def unshifted(z):  # log sum_v e^z_v - z_y as written, in z's own dtype
        with np.errstate(all="ignore"):
            return np.log(np.exp(z).sum(axis=-1)) - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]

    over_positions = z - z.max(axis=1, keepdims=True)
    over_positions -= np.log(np.exp(over_positions).sum(axis=1, keepdims=True))
    return {
        "e^z overflows once a logit passes about 88 in float32: subtract each row's max M first, "
        "log sum_v e^z_v = M + log sum_v e^(z_v - M), and compute in float64":
            [unshifted(logits)],
        "casting to float64 moves the overflow of e^z only to logits past about 710: subtract each "
        "row's max M first, log sum_v e^z_v = M + log sum_v e^(z_v - M)":
            [unshifted(z)],
        "after subtracting the max M from the logits, add it back (M + log sum_v e^(z_v - M)) or "
        "subtract it from z_y too: the loss does not change when every logit moves by M":
            [ref - M[..., 0]],
        "the softmax runs over the vocabulary, the last axis of (B, T, V), not over positions (axis 1)":
            [-np.take_along_axis(over_positions, targets[..., None], axis=-1)[..., 0]],
        "the loss is minus the log-probability of the target, and so never negative: check the sign":
            [-ref],
        "logp[..., targets] picks every position's target at every position, (B, T, B, T): take each "
        "position's own, np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]":
            [-logp[..., targets]],
        "keep the loss of every position, (B, T): this is their mean over the whole batch":
            [ref.mean()],
        "keep the loss of every position, (B, T): this is the mean over each sequence's positions":
            [ref.mean(axis=1)],
    }


def check_token_losses(fn, tol=1e-6):
    """Grade fn(logits (B,T,V), targets (B,T)) -> (B,T): -log softmax(logits)[target] at
    every position, against minifope.lengthgen.token_losses, with a hint when the losses
    match a known mistake (no max subtracted, the wrong axis, a mean, ...).

    The second case holds float32 logits in the hundreds, as a model can produce: a
    softmax that does not subtract the maximum overflows there, and in its last sequence,
    past 710, it overflows in float64 too.
    """
    rng = np.random.default_rng(0)
    small = rng.standard_normal((2, 5, 7)), rng.integers(0, 7, (2, 5))
    large = (300.0 + 40.0 * rng.standard_normal((3, 4, 11))).astype(np.float32), rng.integers(0, 11, (3, 4))
    large[0][-1] += np.float32(500.0)
    cases = [(f"losses ({label})", args, token_losses(*args), _token_loss_mistakes(*args))
             for label, args in [("random logits", small), ("large float32 logits", large)]]
    return grade_cases("token_losses", fn, cases, tol)


# --- lesson 10: the attention weights in torch.nn.Linear's layout ---------------------------

def _split_qkv_mistakes(wqkv, n_head):
    """{hint: [Wq, Wk, Wv] a known wrong split gives, None where it gives the right matrix}."""
    C = wqkv.shape[0]
    H, d = n_head, C // n_head
    blocks = np.split(wqkv, 3, axis=1)  # (in, out) each
    ref = [b.T for b in blocks]
    names = ("q", "k", "v")
    mistakes = {
        "nn.Linear stores its weight as (out, in) and computes h @ W.T: transpose each (in, out) "
        "block of wqkv": blocks,
        "wqkv is (C, 3C), minifope's (in, out) layout, not a fused (3C, C) nn.Linear weight: "
        "reshape(3, C, C) mixes its rows; cut it into column blocks, np.split(wqkv, 3, axis=1), "
        "and transpose each": list(wqkv.reshape(3, C, C)),
        "inside each block the heads are contiguous, head h in columns h*d to (h+1)*d - 1, and the "
        "rows of an nn.Linear weight keep that order (q.view(B, T, H, d)): no reordering by head":
            [w.reshape(H, d, C).transpose(1, 0, 2).reshape(C, C) for w in ref],
        "minifope rotates the half-split pairs (j, j + d/2), as Llama-style code does (rotate_half): "
        "q and k need no permutation, only the split and the transpose (this permutation takes "
        "RoFormer's interleaved pairs (2j, 2j+1) to the half-split ones)":
            [w.reshape(H, d // 2, 2, C).transpose(0, 2, 1, 3).reshape(C, C) for w in ref[:2]] + [None],
        "minifope rotates the half-split pairs (j, j + d/2), as Llama-style code does (rotate_half): "
        "q and k need no permutation, only the split and the transpose (this one makes them "
        "RoFormer's interleaved pairs (2j, 2j+1))":
            [w.reshape(H, 2, d // 2, C).transpose(0, 2, 1, 3).reshape(C, C) for w in ref[:2]] + [None],
    }
    for order in ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        returned = ", ".join(f"W{names[i]}" for i in order)
        mistakes[f"you returned ({returned}): the blocks of wqkv are [q | k | v] in that order, "
                 "queries in the first C columns, keys in the next C, values in the last C"] = \
            [ref[i] for i in order]
    return mistakes


def check_split_qkv(fn, tol=1e-10):
    """Grade fn(wqkv (C,3C)) -> (Wq, Wk, Wv), each (C,C) in torch.nn.Linear's layout
    (out_features, in_features), so that q = h @ Wq.T.

    The weights are taken from block 0 of a small float64 GPT; the queries, keys and values
    the student's matrices give on a batch are compared with GPT.attention_inputs. A hint
    follows when the matrices match a known mistake (not transposed, q, k, v out of order, ...).
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
    right = [b.T for b in np.split(wqkv, 3, axis=1)]
    hint = None if ok else known_mistake(mine, right, _split_qkv_mistakes(wqkv, H), tol)
    if hint:
        print(f"  hint: {hint}")
    return verdict("split_qkv", ok)
