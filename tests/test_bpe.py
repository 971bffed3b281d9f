"""Subword tokens (minifope/bpe.py): training, exact round trips, the checkpoint's JSON, refusals."""

import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest

from helpers import TINY_FLAGS, assert_user_error, cli
from minifope.bpe import MAX_VOCAB, MIN_VOCAB, BPETokenizer, check_vocab_size, tokenizer_from_json
from minifope.checkpoint import load_checkpoint, save_checkpoint
from minifope.config import GPTConfig
from minifope.data import CharTokenizer, load_corpus
from minifope.errors import UserError
from minifope.experiment import ExperimentConfig
from minifope.loop import TrainConfig
from minifope.model import GPT
from minifope.passkey import (NEEDLE, QUESTION, TASK, Layout, distance_grid, make_prompt, make_prompt_at_distance,
                              min_distance, min_prompt_length, passkey_accuracy, passkey_examples, prompt_length)
from minifope.train import train

TEXT = ("KING RICHARD:\nNow is the winter of our discontent\nMade glorious summer by this sun of York;\n"
        "The pass key is 12345. Remember it. 12345 is the pass key.\n") * 40


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXT, 300)


def test_training_gives_the_asked_vocabulary_and_the_same_tokenizer_twice(tok):
    assert tok.vocab_size == 300
    assert BPETokenizer.train(TEXT, 300).to_json() == tok.to_json()
    assert BPETokenizer.train(TEXT, 280).vocab_size == 280


def test_merges_put_several_characters_in_a_token(tok):
    ids = tok.encode(TEXT)
    assert len(ids) < len(TEXT) / 2  # the text repeats: frequent words become single tokens
    assert max(len(tok.decode([i])) for i in ids) >= 4


@pytest.mark.parametrize("text", ["", "a", TEXT, "new words, never seen: zebra quixotic\n\n\n  x",
                                  "\u00e9t\u00e9 \u2014 \u00df\u00b0 \U0001f600 tabs\tand\r\nCRLF", "12345 678901"])
def test_decode_of_encode_is_the_text_itself(tok, text):
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and (ids >= 0).all() and (ids < tok.vocab_size).all()
    assert tok.decode(ids) == text


def test_ids_out_of_range_are_refused_and_broken_bytes_decode_to_the_replacement_character(tok):
    with pytest.raises(ValueError, match="lie in"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="lie in"):
        tok.decode([-1])
    first_byte_of_e_acute = tok.encode("\u00e9")[:1]  # 2 bytes, 2 byte tokens
    assert len(tok.encode("\u00e9")) == 2 and tok.decode(first_byte_of_e_acute) == "\ufffd"


@pytest.mark.parametrize("bad", [0, 1, 256, MAX_VOCAB + 1, -5, 300.0, True, "512", None])
def test_a_vocabulary_size_outside_the_bounds_is_refused(bad):
    with pytest.raises(UserError, match="BPE vocabulary size"):
        check_vocab_size(bad)
    with pytest.raises(UserError, match="BPE vocabulary size"):
        BPETokenizer.train(TEXT, bad)


def test_the_bounds_themselves_are_accepted():
    assert check_vocab_size(MIN_VOCAB) == MIN_VOCAB and check_vocab_size(MAX_VOCAB) == MAX_VOCAB
    assert check_vocab_size(np.int64(512)) == 512


def test_json_round_trip_encodes_the_same(tok):
    again = tokenizer_from_json(tok.to_json())
    assert isinstance(again, BPETokenizer) and again.vocab_size == tok.vocab_size
    np.testing.assert_array_equal(again.encode(TEXT), tok.encode(TEXT))
    assert isinstance(tokenizer_from_json(CharTokenizer.from_text("abc").to_json()), CharTokenizer)


def _spec(tok):
    return json.loads(json.loads(tok.to_json())["bpe"])


def _wrap(spec):
    return json.dumps({"bpe": json.dumps(spec)})


def _foreign_model(tok):
    spec = _spec(tok)
    spec["model"]["type"] = "WordPiece"
    return _wrap(spec)


def _char_pre_tokenizer(tok):
    spec = _spec(tok)
    spec["pre_tokenizer"] = {"type": "Whitespace"}
    return _wrap(spec)


def _malformed_merges(tok):
    spec = _spec(tok)
    spec["model"]["merges"] = 17
    return _wrap(spec)


def _gap_in_ids(tok):
    spec = _spec(tok)
    vocab = spec["model"]["vocab"]
    vocab[next(iter(vocab))] = 10**6
    return _wrap(spec)


@pytest.mark.parametrize("make, words", [
    (lambda tok: "not json", ["not JSON of the form"]),
    (lambda tok: json.dumps({"bpe": 5}), ["not JSON of the form"]),
    (lambda tok: json.dumps({"bpe": "{"}), ["not JSON of the form"]),
    (lambda tok: json.dumps({"bpe": "[]"}), ["not a byte-level BPE"]),
    (_foreign_model, ["not a byte-level BPE"]),
    (_char_pre_tokenizer, ["not a byte-level BPE"]),
    (_malformed_merges, ["unreadable"]),
    (_gap_in_ids, ["gaps"]),
    (lambda tok: tok.to_json()[: len(tok.to_json()) // 2], ["not JSON of the form"]),
    (lambda tok: json.dumps({"bpe": "x" * (17 * 2**20)}), ["larger than"]),
], ids=["text", "not-a-string", "truncated-inner", "inner-list", "wordpiece", "whitespace-split",
        "bad-merges", "gaps", "truncated", "huge"])
def test_a_damaged_or_foreign_tokenizer_is_refused_in_one_line(tok, make, words):
    with pytest.raises(UserError) as e:
        tokenizer_from_json(make(tok))
    message = str(e.value)
    assert "\n" not in message and "damaged or from another program" in message
    assert all(w in message for w in words), message


def _model(vocab_size):
    return GPT(GPTConfig(vocab_size=vocab_size, n_layer=1, n_head=2, d_model=16, train_len=16))


def test_a_checkpoint_keeps_its_bpe_tokenizer(tmp_path, tok):
    save_checkpoint(tmp_path / "ckpt.npz", _model(tok.vocab_size), tok, {"step": 3})
    model, again, state, _ = load_checkpoint(tmp_path)
    assert isinstance(again, BPETokenizer) and state["step"] == 3
    np.testing.assert_array_equal(again.encode(TEXT), tok.encode(TEXT))
    with zipfile.ZipFile(tmp_path / "ckpt.npz") as archive:  # JSON text, no pickle
        stored = np.load(archive.open("vocab.json.npy"), allow_pickle=False)
    assert json.loads(str(stored)) == json.loads(tok.to_json())


def _with_vocab(path, src, vocab_json):
    """The checkpoint at src with its vocab.json replaced, written to path."""
    with zipfile.ZipFile(src) as archive, zipfile.ZipFile(path, "w") as out:
        for name in archive.namelist():
            if name == "vocab.json.npy":
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.array(vocab_json), allow_pickle=False)
                out.writestr(name, buf.getvalue())
            else:
                out.writestr(name, archive.read(name))
    return path


def test_a_checkpoint_with_a_bad_tokenizer_is_refused_by_load_and_by_the_cli(tmp_path, tok):
    good = tmp_path / "good.npz"
    save_checkpoint(good, _model(tok.vocab_size), tok, {"step": 1})
    bad = _with_vocab(tmp_path / "bad.npz", good, _foreign_model(tok))
    with pytest.raises(UserError, match="not a byte-level BPE"):
        load_checkpoint(bad)
    assert_user_error(cli("sample", "--ckpt", bad), "bad.npz", "not a byte-level BPE")
    # a tokenizer of another size than the model's embedding
    other = _with_vocab(tmp_path / "other.npz", good, BPETokenizer.train(TEXT, 290).to_json())
    assert_user_error(cli("sample", "--ckpt", other), "290 tokens", f"vocab_size={tok.vocab_size}")


# --- training with subword tokens -------------------------------------------------------------



@pytest.mark.parametrize("fields, words", [
    (dict(tokenizer="word"), ["tokenizer must be one of char, bpe"]),
    (dict(tokenizer="bpe", bpe_vocab=100), ["BPE vocabulary size"]),
    (dict(tokenizer="bpe", bpe_vocab=True), ["BPE vocabulary size"]),
])
def test_train_config_refuses_bad_tokenizer_settings(fields, words):
    with pytest.raises(ValueError) as e:
        TrainConfig(**fields)
    assert all(w in str(e.value) for w in words)


def test_a_bpe_vocabulary_without_the_bpe_tokenizer_is_refused_as_ignored(tmp_path):
    assert_user_error(cli("train", "--bpe-vocab", "1024", "--out", tmp_path / "x", *TINY_FLAGS),
                      "--bpe-vocab only takes effect with --tokenizer bpe")
    assert not (tmp_path / "x").exists()


def test_the_python_api_trains_on_subword_tokens_and_keeps_the_tokenizer(tmp_path):
    cfg = GPTConfig(n_layer=1, n_head=2, d_model=16, train_len=16)
    tc = TrainConfig(steps=2, batch_size=2, eval_interval=2, eval_batches=1, tokenizer="bpe", bpe_vocab=280)
    model, history = train(cfg, TEXT, TEXT[:400], tc, out_dir=tmp_path, progress=False)[:2]
    assert model.config.vocab_size == 280 and np.isfinite(history["val_loss"][-1])
    _, tokenizer, state, _ = load_checkpoint(tmp_path)
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 280
    assert state["train_config"]["tokenizer"] == "bpe"
    np.testing.assert_array_equal(tokenizer.encode(TEXT), BPETokenizer.train(TEXT, 280).encode(TEXT))


def test_a_tokenizer_passed_to_train_must_be_the_kind_the_config_asks_for(tok):
    cfg = GPTConfig(n_layer=1, n_head=2, d_model=16, train_len=16)
    with pytest.raises(UserError, match="tokenizer given reads bpe tokens, but the training config asks for 'char'"):
        train(cfg, TEXT, TEXT[:400], TrainConfig(steps=1), tokenizer=tok, progress=False)


def _bpe_experiment(data, **train):
    return ExperimentConfig(variants=["rope", "alibi"], seeds=2, data=str(data),
                            model=dict(d_model=16, n_layer=1, n_head=2, train_len=96),
                            train=dict(steps=3, batch_size=4, warmup=1, eval_interval=3, eval_batches=1,
                                       passkey_frac=0.5, passkey_loss="keys", tokenizer="bpe", bpe_vocab=300,
                                       **train),
                            multipliers=[1, 2], passkey_multipliers=[1, 2], prompts=2, eval_chars=400)


def test_an_experiment_in_bpe_tokens_counts_every_length_in_tokens_and_resumes(tmp_path):
    from minifope.experiment import run_experiment

    data = tmp_path / "text.txt"
    data.write_text(TEXT * 4)
    ec = _bpe_experiment(data)
    summary = run_experiment(ec, tmp_path / "lab", progress=False)
    bpe = BPETokenizer.train(load_corpus(str(data))[0], 300)
    assert summary["unit"] == "token" and summary["chars_per_token"] > 1.5
    for label in ("rope", "alibi"):
        pk = summary["variants"][label]["passkey"]
        assert pk["lengths"] == [96, 192]
        assert pk["distances"] == [distance_grid(L, 96, tokenizer=bpe) for L in (96, 192)]
        _, tokenizer, state, _ = load_checkpoint(tmp_path / "lab" / "runs" / label / "seed0")
        assert tokenizer.to_json() == bpe.to_json() and state["step"] == 3
    windows = summary["variants"]["rope"]["loss"]
    assert windows["96"]["n_windows"] == 400 // 96 and windows["192"]["n_windows"] == 400 // 192
    report = (tmp_path / "lab" / "results.md").read_text()
    assert "N = 96 tokens" in report and "nats/token" in report and "characters per token" in report
    again = run_experiment(ec, tmp_path / "lab", progress=False)  # every run reused, nothing retrained
    assert json.dumps(again, sort_keys=True) == json.dumps(summary, sort_keys=True)
    with pytest.raises(UserError, match="trained with other settings"):
        run_experiment(dataclasses.replace(ec, train={**ec.train, "bpe_vocab": 280}), tmp_path / "lab",
                       progress=False)


def test_an_experiment_in_tokens_refuses_a_passkey_window_too_short_in_tokens(tmp_path):
    from minifope.experiment import run_experiment

    data = tmp_path / "text.txt"
    data.write_text(TEXT * 4)
    ec = dataclasses.replace(_bpe_experiment(data), model=dict(d_model=16, n_layer=1, n_head=2, train_len=40))
    with pytest.raises(UserError, match="a passkey window of 40 tokens is too short"):
        run_experiment(ec, tmp_path / "lab", progress=False)
    assert not (tmp_path / "lab" / "runs").exists()
    assert_user_error(cli("experiment", "--out", tmp_path / "x", "--bpe-vocab", "300", "--quiet"),
                      "--bpe-vocab only takes effect with --tokenizer bpe")


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """A tiny CLI run with --tokenizer bpe on a text file: (folder, data file, the train result)."""
    folder = tmp_path_factory.mktemp("bpe_run")
    data = folder / "text.txt"
    data.write_text(TEXT * 3 + "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e\n" * 50)
    out = folder / "run"
    result = cli("train", "--data", data, "--out", out, "--steps", "3", "--tokenizer", "bpe",
                 "--bpe-vocab", "300", *TINY_FLAGS[:-2], "--sample-chars", "20")
    return out, data, result


def test_the_cli_trains_on_subword_tokens_and_samples_text_from_them(bpe_run):
    out, _, result = bpe_run
    assert result.returncode == 0, result.stderr
    assert "nats/token" in result.stdout and "--- sample ---" in result.stdout
    _, tokenizer, _, _ = load_checkpoint(out)
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == 300
    sample = cli("sample", "--ckpt", out, "--prompt", "caf\u00e9 ", "--chars", "30", "--seed", "1")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("caf\u00e9 ") and len(sample.stdout) > len("caf\u00e9 \n")


def test_resuming_or_starting_from_a_run_with_another_tokenizer_is_refused(bpe_run, tmp_path):
    out, data, _ = bpe_run
    assert_user_error(cli("train", "--data", data, "--out", out, "--resume", "--steps", "4",
                          "--tokenizer", "char", *TINY_FLAGS), "tokenizer: checkpoint 'bpe', asked 'char'")
    char_run = tmp_path / "char"
    assert cli("train", "--data", data, "--out", char_run, "--steps", "2", *TINY_FLAGS).returncode == 0
    assert_user_error(cli("train", "--data", data, "--out", tmp_path / "new", "--init-from", char_run,
                          "--steps", "2", "--tokenizer", "bpe", *TINY_FLAGS), "reads char tokens, not bpe ones")


def test_a_streamed_sample_holds_back_a_character_split_over_tokens(tok):
    from minifope.cli import _streamer

    written = []
    on_token = _streamer(tok, written.append)
    ids = tok.encode("caf\u00e9 \u00e9t\u00e9")
    assert sum(tok.decode([i]) == "\ufffd" for i in ids) >= 2  # accents split into byte tokens
    for i in ids:
        on_token(np.array([i]))
    assert "".join(written) == "caf\u00e9 \u00e9t\u00e9" and "\ufffd" not in "".join(written)


# --- passkey in tokens ----------------------------------------------------------------------------

@pytest.mark.parametrize("length, distance", [(80, 52), (100, 60), (120, 52), (120, 98), (300, 255)])
def test_a_passkey_prompt_in_tokens_puts_the_key_at_the_asked_token_distance(tok, length, distance):
    layout = Layout(tok, 5)
    ids, needle_start, key_start = layout.prompt(length, "90817", distance=distance)
    assert len(ids) == length and length - key_start == distance
    assert tok.decode(ids[key_start:key_start + 5]) == "90817"  # one token per digit
    assert tok.decode(ids[needle_start:needle_start + len(layout.before)]) == "The pass key is"
    text = tok.decode(ids)
    assert text.startswith(TASK + "\n") and text.endswith("\n" + QUESTION)
    assert NEEDLE.format(key="90817") in text and text.count("90817") == 2
    # the filler after the needle holds exactly distance - min_distance tokens
    after = text.split(NEEDLE.format(key="90817") + "\n")[1].split("\n")[0]
    assert len(layout.filler(distance - layout.min_distance)) == distance - layout.min_distance
    assert tok.decode(layout.filler(distance - layout.min_distance)) == after


def test_a_bpe_passkey_prompt_is_shorter_in_tokens_than_in_characters(tok):
    layout, chars = Layout(tok, 5), Layout(None, 5)
    assert layout.min_prompt_length < chars.min_prompt_length
    assert min_prompt_length(tokenizer=tok) == layout.min_prompt_length
    assert distance_grid(256, 128, tokenizer=tok)[0] == layout.min_distance < min_distance()
    assert distance_grid(256, 128, tokenizer=tok)[-1] == layout.max_distance(prompt_length(256))
    with pytest.raises(UserError, match=f"needs at least {layout.min_prompt_length}"):
        layout.prompt(layout.min_prompt_length - 1, "12345", depth=0.5)
    with pytest.raises(UserError, match="needle distance in a 100-token prompt"):
        layout.prompt(100, "12345", distance=layout.max_distance(100) + 1)


def test_with_characters_the_layout_is_the_encoding_of_the_prompt_string():
    chars = TEXT + "Find?W0123456789"
    char_tok = CharTokenizer.from_text(chars)
    layout = Layout(char_tok, 5)
    assert layout.min_prompt_length == min_prompt_length() and layout.min_distance == min_distance()
    for distance in (81, 100, 150):
        prompt, key_start = make_prompt_at_distance(200, distance, "24680")
        ids, _, start = layout.prompt(200, "24680", distance=distance)
        assert start == key_start and (ids == char_tok.encode(prompt)).all()
    for depth in (0, 0.3, 1):
        prompt, needle_start = make_prompt(200, depth, "24680")
        ids, start, _ = layout.prompt(200, "24680", depth=depth)
        assert start == needle_start and (ids == char_tok.encode(prompt)).all()


def test_passkey_training_rows_in_tokens_end_with_the_answer_digit_by_digit(tok):
    x, y = passkey_examples(np.random.default_rng(0), 4, 96, tok, loss="keys")
    assert x.shape == y.shape == (4, 96)
    kept = y[:, :-1] >= 0
    assert (x[:, 1:][kept] == y[:, :-1][kept]).all()
    for row_x, row_y in zip(x, y):
        text = tok.decode(np.append(row_x, row_y[-1]))
        key = text.split("The pass key is ")[1][:5]
        assert text.endswith(QUESTION + f" {key}.")
        kept = row_y[row_y >= 0]  # the needle's second copy, then the answer
        assert len(kept) == 5 + 7 and tok.decode(kept) == f"{key} {key}."


class _Answers:
    """A stand-in for sample.generate that answers every prompt with its key in BPE's own
    (merged) tokens, or a wrong key for the rows in `wrong`: what retrieved() reads back."""

    def __init__(self, tok, wrong):
        self.tok, self.wrong = tok, wrong

    def __call__(self, model, idx, n, temperature, window):
        rows = []
        for i, row in enumerate(idx):
            key = self.tok.decode(row).split("The pass key is ")[1][:5]
            key = "11111" if i in self.wrong else key
            answer = self.tok.encode(f" {key}. And")[:n]
            rows.append(np.concatenate([row, answer, np.zeros(n - len(answer), dtype=np.int64)]))
        return np.stack(rows)


def test_retrieval_in_tokens_reads_the_answer_back_as_text(tok, monkeypatch):
    import minifope.passkey as pk

    assert len(tok.encode(" 12345.")) < 7  # BPE merges digits: the model may write the key in fewer tokens
    monkeypatch.setattr(pk, "generate", _Answers(tok, wrong={1, 3}))
    keys = ["12345", "54321", "67890", "98765"]
    got = pk.retrieved(None, tok, 128, [60, 60, 90, 90], keys)
    assert got.tolist() == [True, False, True, False]


def test_training_with_passkey_rows_in_bpe_tokens(tmp_path):
    cfg = GPTConfig(n_layer=1, n_head=2, d_model=16, train_len=96)
    tc = TrainConfig(steps=2, batch_size=4, eval_interval=2, eval_batches=1, tokenizer="bpe", bpe_vocab=300,
                     passkey_frac=0.5)
    model, history = train(cfg, TEXT * 3, TEXT, tc, out_dir=tmp_path, progress=False)[:2]
    assert np.isfinite(history["val_loss"][-1])
    _, tokenizer, _, _ = load_checkpoint(tmp_path)
    accuracy = passkey_accuracy(model, tokenizer, 96, [0.0, 1.0], trials=2, seed=0)
    assert accuracy.shape == (2,) and ((accuracy >= 0) & (accuracy <= 1)).all()
    short = Layout(tokenizer, 5).min_prompt_length + 5
    with pytest.raises(UserError, match=f"passkey prompts need train_len >= {short + 1} tokens"):
        train(GPTConfig(n_layer=1, n_head=2, d_model=16, train_len=short), TEXT * 3, TEXT, tc,
              out_dir=tmp_path / "short", progress=False)


def test_the_readme_counts_a_prompts_fixed_parts_in_tokens_as_the_default_bpe_does():
    from helpers import ROOT
    from minifope.data import shakespeare

    tokenizer = BPETokenizer.train(shakespeare()[0], 512)
    assert Layout(tokenizer, 5).min_prompt_length == 71 and Layout(None, 5).min_prompt_length == 117
    assert "a prompt's fixed parts take 71 tokens against 117 characters" in (ROOT / "README.md").read_text()


def test_an_experiment_in_tokens_scores_another_text_even_with_characters_it_never_trained_on(tmp_path):
    from minifope.experiment import run_experiment

    data, other = tmp_path / "text.txt", tmp_path / "other.txt"
    data.write_text(TEXT * 4)
    other.write_text("def f(x):\n    return {x: x ** 2}  # \u20ac\n" * 200)
    ec = dataclasses.replace(_bpe_experiment(data), variants=["rope"], seeds=1, eval_data=str(other),
                             passkey_multipliers=[])
    summary = run_experiment(ec, tmp_path / "lab", progress=False)
    assert summary["eval_text"]["untrained"]["\u20ac"] == 200 and "{" in summary["eval_text"]["untrained"]
    report = (tmp_path / "lab" / "results.md").read_text()
    assert "the BPE encodes them from their bytes; the model never saw them" in report
    assert summary["chars_per_token"] == pytest.approx(len(other.read_text()) / len(
        BPETokenizer.train(load_corpus(str(data))[0], 300).encode(other.read_text())))
