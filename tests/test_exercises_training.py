"""The checkers of lessons 7-10 accept the right answer and reject realistic wrong ones."""

import math
import re

import numpy as np

from minifope.exercises.passkey import check_passkey_prompt, check_passkey_score
from minifope.exercises.training import (check_adamw_step, check_lr_schedule, check_split_qkv,
                                         check_token_losses)
from minifope.passkey import make_prompt


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


def test_adamw_checker_accepts_the_update_of_minifope_optim(capsys):
    assert check_adamw_step(adamw_step)
    assert "all ok" in capsys.readouterr().out


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


def test_lr_checker_accepts_warmup_then_cosine(capsys):
    assert check_lr_schedule(schedule)
    assert "all ok" in capsys.readouterr().out


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


def test_token_loss_checker_accepts_a_stable_log_softmax(capsys):
    assert check_token_losses(token_losses)
    assert "all ok" in capsys.readouterr().out


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


def test_split_qkv_checker_accepts_the_transposed_blocks(capsys):
    assert check_split_qkv(split_qkv)
    assert "all ok" in capsys.readouterr().out


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

def test_prompt_checker_accepts_make_prompt(capsys):
    assert check_passkey_prompt(lambda length, depth, key: make_prompt(length, depth, key)[0])
    assert "all ok" in capsys.readouterr().out


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


def test_score_checker_accepts_the_first_number_rule(capsys):
    assert check_passkey_score(is_correct)
    assert "all ok" in capsys.readouterr().out


def test_score_checker_rejects_startswith_which_accepts_a_longer_number(capsys):
    assert not check_passkey_score(lambda continuation, key: continuation.strip().startswith(key))
    assert "is_correct(' 123456.', '12345'): True, expected False  FAIL" in capsys.readouterr().out


def test_score_checker_rejects_key_anywhere_in_the_text(capsys):
    assert not check_passkey_score(lambda continuation, key: key in continuation)
    assert "is_correct(' 54321 12345', '12345'): True, expected False  FAIL" in capsys.readouterr().out


def test_score_checker_reports_a_stub_as_not_done(capsys):
    assert not check_passkey_score(not_done)
    assert "not done yet" in capsys.readouterr().out
