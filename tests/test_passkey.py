"""Passkey retrieval: the prompt layout, keys, training rows, scoring, and the whole loop on a tiny GPT."""

import numpy as np
import pytest

from minifope import GPT, GPTConfig
from minifope.data import CharTokenizer, shakespeare
from minifope.errors import UserError
from minifope.passkey import (AUTHORS_TASK, FILLER, NEEDLE, PROBE_PROMPTS, QUESTION, TASK,
                              distance_grid, draw_keys, first_number, has_repeated_digit,
                              make_prompt, make_prompt_at_distance, max_distance, min_distance,
                              min_prompt_length, needle_grid, passkey_accuracy, passkey_examples,
                              plot_needle_grid, probe_accuracy, probe_keys, prompt_length, score)


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.from_text("".join(shakespeare()))


@pytest.fixture(scope="module")
def model(tokenizer):
    return GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, d_model=16,
                         train_len=32))


@pytest.mark.parametrize("length", [117, 150, 200, 1000])
@pytest.mark.parametrize("depth", [0, 0.3, 1])
def test_prompt_has_exactly_length_chars_and_ends_with_the_question(length, depth):
    prompt, _ = make_prompt(length, depth, "12345")
    assert len(prompt) == length
    assert prompt.endswith("\n" + QUESTION)
    assert prompt.startswith(TASK + "\n")


def test_prompt_holds_the_needle_with_the_key_twice_at_needle_start():
    prompt, start = make_prompt(300, 0.4, "48213")
    needle = NEEDLE.format(key="48213")
    assert needle == "The pass key is 48213. Remember it. 48213 is the pass key."
    assert prompt[start:start + len(needle)] == needle
    assert prompt.count("48213") == 2


def test_filler_is_the_sentence_stream_cut_to_length():
    prompt, start = make_prompt(400, 0.5, "12345")
    before = prompt[len(TASK) + 1:start - 1]
    stream = " ".join([FILLER] * 3)
    assert stream.startswith(before) and len(before) > len(FILLER)


def test_depth_zero_puts_the_needle_right_after_the_task_line():
    prompt, start = make_prompt(300, 0.0, "12345")
    assert start == len(TASK) + 2
    assert prompt[:start] == TASK + "\n\n"  # the empty filler part leaves an empty line


def test_depth_one_puts_the_needle_right_before_the_question():
    prompt, start = make_prompt(300, 1.0, "12345")
    end = start + len(NEEDLE.format(key="12345"))
    assert prompt[end:] == "\n\n" + QUESTION


def test_depth_half_puts_the_needle_in_the_middle_of_the_filler():
    length = 1000
    prompt, start = make_prompt(length, 0.5, "12345")
    n_filler = length - min_prompt_length(5)
    before = start - len(TASK) - 2
    assert abs(before - n_filler / 2) <= 1
    assert NEEDLE.format(key="12345") in prompt[length // 2 - 80:length // 2 + 80]


def test_minimum_length_fits_exactly_and_one_less_raises_naming_the_minimum():
    minimum = min_prompt_length(5)
    assert minimum == len(TASK) + len(NEEDLE.format(key="12345")) + len(QUESTION) + 4
    assert len(make_prompt(minimum, 0.5, "12345")[0]) == minimum
    with pytest.raises(UserError, match=f"at least {minimum}"):
        make_prompt(minimum - 1, 0.5, "12345")


def test_the_authors_task_line_needs_a_longer_prompt():
    minimum = min_prompt_length(5, AUTHORS_TASK)
    assert minimum == min_prompt_length(5) + len(AUTHORS_TASK) - len(TASK)
    with pytest.raises(UserError, match=f"at least {minimum}"):
        make_prompt(256 - 12, 0.5, "12345", task=AUTHORS_TASK)
    prompt, _ = make_prompt(256, 0.5, "12345", task=AUTHORS_TASK)
    assert prompt.startswith(AUTHORS_TASK + "\n") and len(prompt) == 256


@pytest.mark.parametrize("depth, key", [(-0.1, "12345"), (1.5, "12345"), (0.5, "12a45"),
                                        (0.5, "")])
def test_bad_depth_or_key_raises_user_error(depth, key):
    with pytest.raises(UserError):
        make_prompt(300, depth, key)


@pytest.mark.parametrize("key_digits", [1, 3, 5, 7])
def test_keys_have_exactly_key_digits_digits_and_no_leading_zero(key_digits):
    keys = draw_keys(np.random.default_rng(0), 500, key_digits)
    assert len(keys) == 500
    assert all(len(k) == key_digits and k.isdigit() and k[0] != "0" for k in keys)
    assert len(set(keys)) > 1


def test_keys_reproduce_with_a_seed_and_differ_across_seeds():
    a = draw_keys(np.random.default_rng(3), 20)
    assert a == draw_keys(np.random.default_rng(3), 20)
    assert a != draw_keys(np.random.default_rng(4), 20)


def test_examples_are_length_wide_and_y_is_x_shifted_by_one(tokenizer):
    x, y = passkey_examples(np.random.default_rng(0), 6, 160, tokenizer)
    assert x.shape == y.shape == (6, 160)
    assert x.dtype == y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_example_rows_are_a_prompt_then_the_answer(tokenizer):
    x, y = passkey_examples(np.random.default_rng(1), 8, 160, tokenizer)
    for xr, yr in zip(x, y):
        text = tokenizer.decode(xr) + tokenizer.decode(yr[-1:])
        assert len(text) == 161
        prompt, answer = text[:-7], text[-7:]
        assert prompt.startswith(TASK) and prompt.endswith(QUESTION)
        key = answer[1:-1]
        assert answer == f" {key}." and prompt.count(key) == 2


def test_example_depths_cover_the_window(tokenizer):
    x, _ = passkey_examples(np.random.default_rng(2), 200, 300, tokenizer)
    starts = [tokenizer.decode(row).index("The pass key is") for row in x]
    n_filler = 300 - 6 - min_prompt_length(5)
    assert min(starts) < len(TASK) + 2 + 0.1 * n_filler
    assert max(starts) > len(TASK) + 2 + 0.9 * n_filler


def test_answer_loss_masks_every_target_but_the_answer(tokenizer):
    rng_all, rng_answer = np.random.default_rng(5), np.random.default_rng(5)
    x, y_all = passkey_examples(rng_all, 4, 160, tokenizer)
    x2, y = passkey_examples(rng_answer, 4, 160, tokenizer, loss="answer")
    np.testing.assert_array_equal(x, x2)
    assert (y[:, :-7] == -1).all()
    np.testing.assert_array_equal(y[:, -7:], y_all[:, -7:])
    assert all(tokenizer.decode(row[-7:])[0] == " " for row in y)


def test_keys_loss_keeps_the_answer_and_the_needles_second_copy_of_the_key(tokenizer):
    rng_all, rng_keys = np.random.default_rng(6), np.random.default_rng(6)
    x, y_all = passkey_examples(rng_all, 6, 200, tokenizer)
    x2, y = passkey_examples(rng_keys, 6, 200, tokenizer, loss="keys")
    np.testing.assert_array_equal(x, x2)
    for x_row, y_row, y_all_row in zip(x, y, y_all):
        kept = np.flatnonzero(y_row != -1)
        np.testing.assert_array_equal(y_row[kept], y_all_row[kept])
        key = tokenizer.decode(y_row[-7:])[1:-1]
        assert len(kept) == 12 and tokenizer.decode(y_row[kept]) == key + f" {key}."
        # the first five kept targets are the characters that follow "Remember it. "
        text = tokenizer.decode(x_row)
        copy = kept[0] + 1  # y[p - 1] is the target of text[p]
        assert text[copy - len("Remember it. "):copy] == "Remember it. "
        assert text[copy:copy + 5] == key and text.index(key) < copy


def test_examples_reject_a_bad_loss_and_too_short_rows(tokenizer):
    rng = np.random.default_rng(0)
    with pytest.raises(UserError, match="loss"):
        passkey_examples(rng, 2, 200, tokenizer, loss="needle")
    minimum = min_prompt_length(5) + 6
    assert passkey_examples(rng, 2, minimum, tokenizer)[0].shape == (2, minimum)
    with pytest.raises(UserError, match=f"at least {minimum}"):
        passkey_examples(rng, 2, minimum - 1, tokenizer)


@pytest.mark.parametrize("text, number", [(" 12345.", "12345"), ("abc", None), (" 12 34", "12"),
                                          ("007", "007"), ("", None), ("key: x9y", "9")])
def test_first_number_is_the_first_run_of_digits(text, number):
    assert first_number(text) == number


def test_score_counts_rows_whose_first_number_is_the_key():
    keys = ["12345", "54321", "11111", "22222"]
    continuations = [" 12345.", " 54321 and 9", " 1111.", " nothing"]
    assert score(continuations, keys) == 0.5
    assert score([f" {k}." for k in keys], keys) == 1.0
    with pytest.raises(ValueError):
        score(continuations[:3], keys)


def test_passkey_accuracy_runs_end_to_end_and_reproduces(model, tokenizer):
    depths = [0.0, 0.5, 1.0]
    acc = passkey_accuracy(model, tokenizer, 140, depths, trials=4, seed=0)
    assert acc.shape == (3,)
    assert ((acc >= 0) & (acc <= 1)).all()
    np.testing.assert_array_equal(acc, passkey_accuracy(model, tokenizer, 140, depths, 4, seed=0))


def test_passkey_accuracy_takes_prompts_far_past_the_training_length(model, tokenizer):
    # 4096 = 128 x train_len: the full scores (1,2,4096,4096) would be 128 MiB, so the
    # attention takes its chunked path by itself.
    acc = passkey_accuracy(model, tokenizer, 4096, [0.5], trials=1, seed=0)
    assert acc.shape == (1,) and 0 <= acc[0] <= 1


def test_needle_grid_cells_equal_passkey_accuracy_at_that_length(model, tokenizer):
    lengths, depths = [130, 160], [0.0, 1.0]
    grid = needle_grid(model, tokenizer, lengths, depths, trials=3, seed=1, progress=False)
    assert grid.shape == (2, 2)
    np.testing.assert_array_equal(grid[1], passkey_accuracy(model, tokenizer, 160, depths, 3, 1))


def test_plot_annotates_every_cell_and_states_the_trials():
    grid = np.array([[1.0, 0.5, 0.25], [0.0, 0.75, 1.0]])
    ax = plot_needle_grid(grid, [128, 256], [0.0, 0.5, 1.0], trials=8, title="rope")
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"{v:.2f}" for v in grid.ravel())
    assert "8 trials per cell" in ax.get_title() and "rope" in ax.get_title()
    with pytest.raises(ValueError):
        plot_needle_grid(grid.T, [128, 256], [0.0, 0.5, 1.0], trials=8)


def test_evaluation_lays_out_the_window_as_training_does(tokenizer, monkeypatch):
    # An oracle in place of the model's decoding: it reads the key from the needle and answers.
    import minifope.passkey as pk

    seen = []

    def oracle(model, idx, n_new, temperature, window):
        seen.append((idx.shape[1], n_new, window))
        answers = []
        for row in idx:
            key = first_number(tokenizer.decode(row).split("The pass key is ")[1])
            answers.append(tokenizer.encode(f" {key}."))
        return np.concatenate([idx, np.stack(answers)], axis=1)

    monkeypatch.setattr(pk, "generate", oracle)
    acc = pk.passkey_accuracy(None, tokenizer, 200, [0.0, 0.5, 1.0], trials=5, seed=2)
    np.testing.assert_array_equal(acc, 1.0)
    # the window holds 194 prompt characters and " NNNNN"; the final "." is only written
    assert seen == [(194, 7, 200)] * 3 and pk.prompt_length(200) == 194
    x, _ = passkey_examples(np.random.default_rng(0), 3, 200, tokenizer)
    for row in x:
        text = tokenizer.decode(row)
        assert text.index(QUESTION) + len(QUESTION) == 194 and len(text) == 200


# --- the lab's layout: distance, fresh keys, the probe set ------------------------------------

@pytest.mark.parametrize("length", [117, 250, 1018])
def test_the_needle_sits_at_the_asked_distance_from_the_end_of_the_prompt(length):
    low, high = min_distance(), max_distance(length)
    assert low == 81 and high == 81 + length - min_prompt_length()
    for distance in sorted({low, (low + high) // 2, high}):
        prompt, key_start = make_prompt_at_distance(length, distance, "48213")
        assert len(prompt) == length and prompt.endswith("\n" + QUESTION)
        assert len(prompt) - key_start == distance
        assert prompt[key_start:key_start + 5] == "48213"
        assert prompt[key_start - len("The pass key is "):key_start] == "The pass key is "
    # the nearest: nothing but the needle's rest, an empty filler line and the question
    prompt, _ = make_prompt_at_distance(length, low, "48213")
    assert prompt.endswith("48213 is the pass key.\n\n" + QUESTION)
    # the farthest: the needle right after the task line
    assert make_prompt_at_distance(length, high, "48213")[0].startswith(TASK + "\n\nThe pass key is 48213")


@pytest.mark.parametrize("distance", [80, 215, 100.0, None])
def test_a_distance_the_prompt_cannot_hold_is_refused(distance):
    with pytest.raises(UserError, match="needle distance"):
        make_prompt_at_distance(250, distance, "12345")  # 81 .. 214


def test_the_distance_grid_reaches_below_n_at_every_length_and_the_whole_window():
    assert distance_grid(256, 256) == [81, 128, 214]
    assert distance_grid(4096, 256) == [81, 128, 256, 512, 1024, 2048, 4054]
    for L in (256, 512, 1024, 2048, 4096):
        grid = distance_grid(L, 256)
        assert grid[0] == 81 < 256 and grid[-1] == max_distance(prompt_length(L))


def test_keys_are_fresh_per_prompt_and_never_a_probe_key():
    rng = np.random.default_rng(0)
    keys = draw_keys(rng, 2000, exclude=probe_keys())
    assert len(set(keys)) > 1950  # about 22 repeats expected among 2000 of 90000
    assert not set(keys) & set(probe_keys()) and len(probe_keys()) == PROBE_PROMPTS
    assert all(len(k) == 5 and k[0] != "0" for k in keys)
    # the share of keys with a repeated digit is 1 - 9*9*8*7*6 / 90000 = 0.6976
    share = np.mean([has_repeated_digit(k) for k in keys])
    assert abs(share - 0.6976) < 0.04
    assert has_repeated_digit("12315") and not has_repeated_digit("12345")
    with pytest.raises(UserError, match="no 1-digit key is left"):
        draw_keys(rng, 1, 1, exclude=[str(k) for k in range(1, 10)])


def test_passkey_by_distance_gives_every_prompt_its_own_key_and_one_seed_the_same_prompts(
        model, tokenizer, monkeypatch):
    import minifope.passkey as pk

    seen = []

    def oracle(model, idx, n_new, temperature, window):  # reads the key from the needle
        answers = []
        for row in idx:
            text = tokenizer.decode(row)
            seen.append((len(text) - text.index("The pass key is ") - len("The pass key is "), window))
            answers.append(tokenizer.encode(f" {first_number(text.split('The pass key is ')[1])}."))
        return np.concatenate([idx, np.stack(answers)], axis=1)

    monkeypatch.setattr(pk, "generate", oracle)
    r = pk.passkey_by_distance(None, tokenizer, [256, 512], 256, 4, seed=3, progress=False)
    assert r["distances"] == [[81, 128, 214], [81, 128, 256, 470]]
    assert np.array(r["correct"][1]).shape == (4, 4) and all(c == 1 for L in r["correct"] for d in L for c in d)
    keys = [k for L in r["keys"] for d in L for k in d]
    assert len(set(keys)) == len(keys) == 28  # a fresh key for each of 7 cells x 4 prompts
    # each prompt's needle sits at its cell's distance, in a window of its length
    assert seen == [(d, L) for L, ds in zip([256, 512], r["distances"]) for d in ds for _ in range(4)]
    assert pk.passkey_by_distance(None, tokenizer, [256, 512], 256, 4, seed=3, progress=False) == r
    assert pk.passkey_by_distance(None, tokenizer, [256, 512], 256, 4, seed=4, progress=False)["keys"] != r["keys"]


def test_the_probe_reads_zero_on_an_untrained_model_and_one_for_an_oracle(model, tokenizer, monkeypatch):
    import minifope.passkey as pk

    assert probe_accuracy(model, tokenizer, 256) == 0.0

    def oracle(model, idx, n_new, temperature, window):
        answers = [tokenizer.encode(f" {first_number(tokenizer.decode(row).split('The pass key is ')[1])}.")
                   for row in idx]
        return np.concatenate([idx, np.stack(answers)], axis=1)

    monkeypatch.setattr(pk, "generate", oracle)
    assert pk.probe_accuracy(None, tokenizer, 256) == 1.0
