"""The checkers of lessons 7-10 accept the right answer and reject realistic wrong ones."""

import math
import re
from functools import partial

import numpy as np
import pytest

from minifope.exercises.passkey import check_passkey_prompt, check_passkey_score
from minifope.exercises.training import (check_adamw_step, check_lr_schedule, check_split_qkv,
                                         check_token_losses)
from minifope.passkey import FILLER, NEEDLE, QUESTION, TASK, make_prompt


def not_done(*args, **kwargs):
    raise NotImplementedError


# --- AdamW -------------------------------------------------------------------------------

def adamw_step(p, g, m, v, t, lr, betas, eps, weight_decay, decay):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    if decay:
        p = p - lr * weight_decay * p
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p, m, v


def adamw_without_bias_correction(p, g, m, v, t, lr, betas, eps, weight_decay, decay):
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    if decay:
        p = p - lr * weight_decay * p
    return p - lr * m / (np.sqrt(v) + eps), m, v


def adam_with_l2(p, g, m, v, t, lr, betas, eps, weight_decay, decay):
    # L2 regularisation instead of decoupled decay: the decay enters the moments
    return adamw_step(p, g + weight_decay * p if decay else g, m, v, t, lr, betas, eps, 0.0, False)


def adamw_with(p, g, m, v, t, lr, betas, eps, weight_decay, decay, *, bias_t=None, root=None,
               decay_lr=None, decay_after=False, decay_anyway=False, never_decay=False, corrected_moments=False):
    # adamw_step with one step done wrong, as the keyword says
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    bias_t = t if bias_t is None else bias_t
    m_hat, v_hat = m / (1 - b1 ** bias_t), v / (1 - b2 ** bias_t)
    decayed = (decay or decay_anyway) and not never_decay
    if decayed and not decay_after:
        p = p - (lr if decay_lr is None else decay_lr) * weight_decay * p
    p = p - lr * m_hat / (np.sqrt(v_hat) + eps if root is None else root(v, v_hat, eps, b2 ** t))
    if decayed and decay_after:
        p = p * (1 - lr * weight_decay)
    return (p, m_hat, v_hat) if corrected_moments else (p, m, v)


ADAMW_MISTAKES = {
    "without bias correction": (adamw_without_bias_correction, "hint: bias correction: divide m"),
    "returning m_hat and v_hat": (lambda *a: adamw_with(*a, corrected_moments=True),
                                  "hint: return the moments m and v themselves"),
    "bias correction with t + 1": (lambda *a: adamw_with(*a, bias_t=a[4] + 1), "not 1 - beta^(t+1)"),
    "bias correction with t - 1": (lambda *a: adamw_with(*a, bias_t=a[4] - 1), "not 1 - beta^(t-1)"),
    "eps inside the root": (lambda *a: adamw_with(*a, root=lambda v, v_hat, eps, b2t: np.sqrt(v_hat + eps)),
                            "hint: eps goes outside the square root"),
    "eps of the Adam paper's form": (
        lambda *a: adamw_with(*a, root=lambda v, v_hat, eps, b2t: (np.sqrt(v) + eps) / np.sqrt(1 - b2t)),
        "the Adam paper's form"),
    "L2 regularisation": (adam_with_l2, "hint: decoupled weight decay shrinks p directly"),
    "decaying the exempt vector": (lambda *a: adamw_with(*a, decay_anyway=True),
                                   "hint: decay is False for this tensor"),
    "never decaying": (lambda *a: adamw_with(*a, never_decay=True), "hint: decay is True"),
    "decay without lr": (lambda *a: adamw_with(*a, decay_lr=1.0), "hint: the decay is scaled by the learning rate"),
    "decay after the Adam step": (lambda *a: adamw_with(*a, decay_after=True), "hint: decay first"),
}


def test_adamw_checker_accepts_the_update_of_minifope_optim(capsys):
    assert check_adamw_step(adamw_step)
    out = capsys.readouterr().out
    assert "all ok" in out and "hint" not in out


def test_adamw_checker_prints_no_hint_for_an_unknown_mistake(capsys):
    assert not check_adamw_step(lambda p, g, m, v, *rest: adamw_step(p, 2 * g, m, v, *rest))
    assert "hint" not in capsys.readouterr().out


def test_adamw_checker_rejects_a_step_without_bias_correction(capsys):
    assert not check_adamw_step(adamw_without_bias_correction)
    assert re.search(r"p \(t=1\).*FAIL", capsys.readouterr().out)


def test_adamw_checker_rejects_l2_regularisation_and_names_the_moment(capsys):
    assert not check_adamw_step(adam_with_l2)
    out = capsys.readouterr().out
    assert re.search(r"m \(t=1\).*FAIL", out)
    assert re.search(r"m \(t=3, no decay\).*ok", out)


def test_adamw_checker_reports_a_stub_as_not_done_without_raising(capsys):
    assert not check_adamw_step(not_done)
    assert "not done yet" in capsys.readouterr().out


def test_adamw_checker_rejects_returning_only_p(capsys):
    assert not check_adamw_step(lambda p, g, m, v, t, lr, betas, eps, weight_decay, decay: p)
    assert "adamw_step must return 3 arrays" in capsys.readouterr().out


# --- learning-rate schedule -----------------------------------------------------------

def schedule(step, max_lr, warmup_steps, total_steps, min_lr):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_warmup_from_zero(step, max_lr, warmup_steps, total_steps, min_lr):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return schedule(step, max_lr, warmup_steps, total_steps, min_lr)


def schedule_with(step, max_lr, warmup_steps, total_steps, min_lr, *, warmup_end=None, floor=None,
                  height=None, progress=None, stops=True):
    # the schedule with one step done wrong, as the keyword says
    W, T = warmup_steps, total_steps
    if step < (W if warmup_end is None else warmup_end):
        return max_lr * (step + 1) / W
    if step >= T and stops:
        return min_lr
    low = min_lr if floor is None else floor
    x = (step - W) / (T - W) if progress is None else progress(step, W, T)
    return low + (max_lr - low if height is None else height) * 0.5 * (1 + math.cos(math.pi * x))


LR_MISTAKES = {
    "warmup from 0": (schedule_warmup_from_zero, "hint: the warmup starts at max_lr / W on step 0"),
    "warmup through step W": (lambda s, hi, W, T, lo: schedule_with(s, hi, W, T, lo, warmup_end=W + 1 if W else 0),
                              "hint: the warmup ends after W steps"),
    "cosine to 0": (lambda s, hi, W, T, lo: schedule_with(s, hi, W, T, lo, floor=0.0),
                    "hint: the cosine decays to min_lr, not to 0"),
    "cosine of height max_lr": (lambda s, hi, W, T, lo: schedule_with(s, hi, W, T, lo, height=hi),
                                "hint: the cosine's height is max_lr - min_lr"),
    "progress from step 0": (lambda s, hi, W, T, lo: schedule_with(s, hi, W, T, lo, progress=lambda s, W, T: s / T),
                             "hint: the cosine starts when the warmup ends"),
    "cosine ending a step early": (
        lambda s, hi, W, T, lo: schedule_with(s, hi, W, T, lo, progress=lambda s, W, T: (s - W) / (T - W - 1)),
        "it reaches 1 on step T"),
    "cosine past the end": (lambda s, hi, W, T, lo: schedule_with(s, hi, W, T, lo, stops=False),
                            "hint: from step T on the rate stays at min_lr"),
}


def test_lr_checker_accepts_warmup_then_cosine(capsys):
    assert check_lr_schedule(schedule)
    out = capsys.readouterr().out
    assert "all ok" in out and "hint" not in out


def test_lr_checker_rejects_a_warmup_that_starts_at_zero_and_names_step_0(capsys):
    assert not check_lr_schedule(schedule_warmup_from_zero)
    assert "first wrong step 0" in capsys.readouterr().out


def test_lr_checker_reports_a_stub_as_not_done(capsys):
    assert not check_lr_schedule(not_done)
    assert "not done yet" in capsys.readouterr().out


# --- token losses ---------------------------------------------------------------------

def token_losses(logits, targets):
    z = logits.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def token_losses_unstable(logits, targets):
    p = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return -np.log(np.take_along_axis(p, targets[..., None], axis=-1)[..., 0])


def log_softmax(logits, axis=-1):
    z = logits.astype(np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def pick(logp, targets):
    return np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


def token_losses_unstable_in_float64(logits, targets):
    z = logits.astype(np.float64)
    return np.log(np.exp(z).sum(axis=-1)) - pick(z, targets)


def token_losses_without_the_max_added_back(logits, targets):
    z = logits.astype(np.float64)
    return np.log(np.exp(z - z.max(axis=-1, keepdims=True)).sum(axis=-1)) - pick(z, targets)


TOKEN_LOSS_MISTAKES = {
    "no max subtracted, float32": (token_losses_unstable, "hint: e^z overflows once a logit passes about 88"),
    "no max subtracted, float64": (token_losses_unstable_in_float64, "hint: casting to float64 moves the overflow"),
    "max not added back": (token_losses_without_the_max_added_back, "hint: after subtracting the max M"),
    "softmax over positions": (lambda logits, targets: -pick(log_softmax(logits, axis=1), targets),
                               "hint: the softmax runs over the vocabulary"),
    "sign flipped": (lambda logits, targets: pick(log_softmax(logits), targets), "check the sign"),
    "every target at every position": (lambda logits, targets: -log_softmax(logits)[..., targets],
                                       "hint: logp[..., targets] picks every position's target"),
    "mean over the batch": (lambda logits, targets: token_losses(logits, targets).mean(),
                            "this is their mean over the whole batch"),
    "mean over each sequence": (lambda logits, targets: token_losses(logits, targets).mean(axis=1),
                                "this is the mean over each sequence's positions"),
}


def test_token_loss_checker_accepts_a_stable_log_softmax(capsys):
    assert check_token_losses(token_losses)
    out = capsys.readouterr().out
    assert "all ok" in out and "hint" not in out


def test_token_loss_checker_accepts_a_stable_log_softmax_in_float32(capsys):
    assert check_token_losses(lambda logits, targets: -pick(log_softmax(logits).astype(np.float32), targets))
    assert "all ok" in capsys.readouterr().out


def test_token_loss_checker_rejects_float64_without_the_max_only_on_logits_past_710(capsys):
    assert not check_token_losses(token_losses_unstable_in_float64)
    out = capsys.readouterr().out
    assert re.search(r"random logits.*ok", out)
    assert re.search(r"large float32 logits.*inf.*FAIL", out)


def test_token_loss_checker_rejects_a_softmax_that_overflows_on_large_logits(capsys):
    assert not check_token_losses(token_losses_unstable)
    out = capsys.readouterr().out
    assert re.search(r"random logits.*ok", out)
    assert re.search(r"large float32 logits.*FAIL", out)


def test_token_loss_checker_rejects_the_mean_over_positions_by_its_shape(capsys):
    assert not check_token_losses(lambda logits, targets: token_losses(logits, targets).mean(axis=1))
    assert "FAIL: shape" in capsys.readouterr().out


# --- torch layout -------------------------------------------------------------------------

def split_qkv(wqkv):
    C = wqkv.shape[0]
    return tuple(wqkv[:, i * C:(i + 1) * C].T for i in range(3))


def permute_rows(w, shape, axes):
    # reorder the output rows of an (out, in) matrix: view them as `shape`, transpose by `axes`
    return w.reshape(*shape, w.shape[1]).transpose(*axes, len(shape)).reshape(w.shape)


H, D = 4, 8  # the heads and head size of the checker's model (d_model 32)

SPLIT_QKV_MISTAKES = {
    "blocks not transposed": (lambda w: tuple(np.split(w, 3, axis=1)),
                              "hint: nn.Linear stores its weight as (out, in)"),
    "reshape(3, C, C)": (lambda w: tuple(w.reshape(3, 32, 32)), "reshape(3, C, C) mixes its rows"),
    "rows reordered head-major to dim-major": (
        lambda w: tuple(permute_rows(b, (H, D), (1, 0)) for b in split_qkv(w)),
        "hint: inside each block the heads are contiguous"),
    "q and k permuted interleaved to half-split": (
        lambda w: tuple(permute_rows(b, (H, D // 2, 2), (0, 2, 1)) for b in split_qkv(w)[:2]) + (split_qkv(w)[2],),
        "this permutation takes RoFormer's interleaved pairs"),
    "q and k permuted half-split to interleaved": (
        lambda w: tuple(permute_rows(b, (H, 2, D // 2), (0, 2, 1)) for b in split_qkv(w)[:2]) + (split_qkv(w)[2],),
        "this one makes them RoFormer's interleaved pairs"),
    "k and v swapped": (lambda w: (split_qkv(w)[0], split_qkv(w)[2], split_qkv(w)[1]), "you returned (Wq, Wv, Wk)"),
    "v, k, q": (lambda w: split_qkv(w)[::-1], "you returned (Wv, Wk, Wq)"),
}


def test_split_qkv_checker_accepts_the_transposed_blocks(capsys):
    assert check_split_qkv(split_qkv)
    out = capsys.readouterr().out
    assert "all ok" in out and "hint" not in out


def test_split_qkv_checker_rejects_blocks_left_in_numpy_layout(capsys):
    assert not check_split_qkv(lambda w: tuple(b.T for b in split_qkv(w)))
    out = capsys.readouterr().out
    assert re.search(r"q = h @ Wq\.T.*FAIL", out)


def test_split_qkv_checker_rejects_k_and_v_swapped_and_names_them(capsys):
    assert not check_split_qkv(lambda w: (split_qkv(w)[0], split_qkv(w)[2], split_qkv(w)[1]))
    out = capsys.readouterr().out
    assert re.search(r"q = h @ Wq\.T.*ok", out)
    assert re.search(r"k = h @ Wk\.T.*FAIL", out)


def test_split_qkv_checker_rejects_the_wrong_shape(capsys):
    assert not check_split_qkv(lambda w: (w.T, w.T, w.T))
    assert "FAIL: shape" in capsys.readouterr().out


# --- passkey ------------------------------------------------------------------------------

def build_prompt(length, depth, key, *, newlines=4, place=round, from_end=False, restart=True, joiner=" ",
                 empty_lines=True, format_key=True):
    # the prompt of lesson 9 built from its parts, or with one step done wrong, as the keyword says
    F = length - len(TASK) - len(NEEDLE.format(key=key)) - len(QUESTION) - newlines
    a = F - place(depth * F) if from_end else place(depth * F)
    stream = joiner.join([FILLER] * 4)
    after = stream[:F - a] if restart else stream[a:F]
    parts = [TASK, stream[:a], NEEDLE.format(key=key) if format_key else NEEDLE, after, QUESTION]
    return "\n".join(part for part in parts if part or empty_lines)


PROMPT_MISTAKES = {
    "depth floored": (partial(build_prompt, place=math.floor), "hint: a = round(depth * F)"),
    "depth counted from the question": (partial(build_prompt, from_end=True), "hint: depth 0 puts the needle"),
    "filler continued after the needle": (partial(build_prompt, restart=False), "hint: both filler parts start"),
    "filler joined without a space": (partial(build_prompt, joiner=""), "joined by a space"),
    "empty filler lines dropped": (partial(build_prompt, empty_lines=False), "still has its line"),
    "newlines left out of F": (partial(build_prompt, newlines=0), "hint: the 4 newlines"),
    "key not filled in": (partial(build_prompt, format_key=False), "hint: fill in the key"),
}


def test_prompt_checker_accepts_make_prompt(capsys):
    assert check_passkey_prompt(lambda length, depth, key: make_prompt(length, depth, key)[0])
    out = capsys.readouterr().out
    assert "all ok" in out and "hint" not in out


def test_prompt_checker_accepts_the_prompt_built_from_its_parts(capsys):
    assert check_passkey_prompt(build_prompt)
    out = capsys.readouterr().out
    assert "all ok" in out and "hint" not in out


def test_prompt_checker_prints_no_hint_for_two_mistakes_at_once(capsys):
    assert not check_passkey_prompt(lambda *args: build_prompt(*args, place=math.floor, joiner=""))
    assert "hint" not in capsys.readouterr().out


def test_prompt_checker_rejects_a_depth_that_floors_and_says_where(capsys):
    def floor_depth(length, depth, key):
        prompt, start = make_prompt(length, depth, key)
        # the needle one character early whenever depth * F is not a whole number
        return make_prompt(length, max(0.0, depth - 1e-3), key)[0] if depth not in (0, 1) else prompt

    assert not check_passkey_prompt(floor_depth)
    assert "first difference at character" in capsys.readouterr().out


def test_prompt_checker_rejects_a_prompt_of_the_wrong_length(capsys):
    assert not check_passkey_prompt(lambda length, depth, key: make_prompt(length, depth, key)[0] + " ")
    assert "characters, expected" in capsys.readouterr().out


def test_prompt_checker_reports_an_error_in_one_case_and_grades_the_others(capsys):
    def fails_at_depth_1(length, depth, key):
        if depth == 1.0:
            raise IndexError("string index out of range")
        return make_prompt(length, depth, key)[0]

    assert not check_passkey_prompt(fails_at_depth_1)
    out = capsys.readouterr().out
    assert "depth 1.0, key 31415: FAIL: build_prompt raised IndexError" in out
    assert "length 256, depth 0.7, key 11235: ok" in out


def is_correct(continuation, key):
    match = re.search(r"[0-9]+", continuation)
    return match is not None and match.group() == key


def digits_only(continuation, key):
    return "".join(c for c in continuation if c.isdigit()) == key


def as_integers(continuation, key):
    match = re.search(r"[0-9]+", continuation)
    return match is not None and int(match.group()) == int(key)


SCORE_MISTAKES = {
    "startswith": (lambda continuation, key: continuation.strip().startswith(key),
                   "hint: the first number must be the whole key"),
    "the key anywhere": (lambda continuation, key: key in continuation, "not any later one"),
    "the last number": (lambda continuation, key: re.findall(r"[0-9]+", continuation)[-1:] == [key],
                        "hint: the first number written counts, not the last"),
    "a fixed slice": (lambda continuation, key: continuation[1:6] == key, "a fixed slice such as text[1:6]"),
    "the whole answer": (lambda continuation, key: continuation == " " + key + ".",
                         "'12345' and ' is 12345' are right too"),
    "the stripped continuation": (lambda continuation, key: continuation.strip() == key,
                                  "the dot in ' 12345.' is not part of it"),
    "every digit": (digits_only, "hint: a number is a run of digits"),
    "integers": (as_integers, "hint: compare the strings, not their values"),
    "five digits": (lambda continuation, key: re.findall(r"\d{5}", continuation)[:1] == [key],
                    "[0-9]{5} reads 12345"),
    "a prefix of the key": (
        lambda continuation, key: (m := re.search(r"[0-9]+", continuation)) is not None and key.startswith(m.group()),
        "hint: the whole key must be written"),
}


def test_score_checker_accepts_the_first_number_rule(capsys):
    assert check_passkey_score(is_correct)
    out = capsys.readouterr().out
    assert "all ok" in out and "hint" not in out


def test_score_checker_prints_no_hint_when_a_case_raises(capsys):
    assert not check_passkey_score(lambda continuation, key: continuation.split()[0] == key)
    out = capsys.readouterr().out
    assert "raised IndexError" in out and "hint" not in out


def test_score_checker_rejects_startswith_which_accepts_a_longer_number(capsys):
    assert not check_passkey_score(lambda continuation, key: continuation.strip().startswith(key))
    assert "is_correct(' 123456.', '12345'): True, expected False  FAIL" in capsys.readouterr().out


def test_score_checker_rejects_key_anywhere_in_the_text(capsys):
    assert not check_passkey_score(lambda continuation, key: key in continuation)
    assert "is_correct(' 54321 12345', '12345'): True, expected False  FAIL" in capsys.readouterr().out


def test_score_checker_reports_a_stub_as_not_done(capsys):
    assert not check_passkey_score(not_done)
    assert "not done yet" in capsys.readouterr().out


# --- every known mistake, each named by its own hint -----------------------------------------

KNOWN_MISTAKES = [(check_adamw_step, ADAMW_MISTAKES), (check_lr_schedule, LR_MISTAKES),
                  (check_token_losses, TOKEN_LOSS_MISTAKES), (check_split_qkv, SPLIT_QKV_MISTAKES),
                  (check_passkey_prompt, PROMPT_MISTAKES), (check_passkey_score, SCORE_MISTAKES)]


@pytest.mark.parametrize("check, wrong, hint", [
    pytest.param(check, *mistakes[name], id=f"{check.__name__}: {name}")
    for check, mistakes in KNOWN_MISTAKES for name in mistakes])
def test_checker_rejects_a_known_mistake_and_gives_its_hint_alone(check, wrong, hint, capsys):
    assert not check(wrong)
    out = capsys.readouterr().out
    assert hint in out
    # the same hint may follow each case it fails; no other hint may
    assert len({line for line in out.splitlines() if "hint:" in line}) == 1
