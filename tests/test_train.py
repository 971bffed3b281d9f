"""The trainer, checkpoints and sampling, on tiny real models and real files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minifope import GPT, GPTConfig
from minifope.checkpoint import load_checkpoint, save_checkpoint
from minifope.data import CharTokenizer
from minifope.errors import UserError
from minifope.sample import generate, sample_next
from minifope.train import TrainConfig, evaluate, train

ROOT = Path(__file__).resolve().parents[1]
TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
        "JULIET:\nO Romeo, Romeo, wherefore art thou Romeo?\n\n") * 20
TINY = dict(n_layer=1, n_head=2, d_model=16, train_len=16)


def tiny_run(tmp_path=None, steps=20, **overrides):
    config = GPTConfig(**{**TINY, **overrides})
    tc = TrainConfig(steps=steps, batch_size=4, eval_interval=5, eval_batches=2, log_interval=1)
    return train(config, TEXT[:1500], TEXT[1500:], tc, out_dir=tmp_path, progress=False)


def test_training_lowers_the_loss_and_returns_the_history():
    model, history = tiny_run(steps=60)
    assert len(history["loss"]) == 60 and history["val_step"] == [5 * i for i in range(1, 13)]
    assert np.mean(history["loss"][-10:]) < np.mean(history["loss"][:10]) - 0.5
    assert history["val_loss"][-1] < history["val_loss"][0]


def test_run_folder_holds_checkpoint_and_log(tmp_path):
    model, history = tiny_run(tmp_path, steps=10)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 11))
    assert [r["val_loss"] for r in records if "val_loss" in r] == history["val_loss"]
    loaded, tokenizer, state, optim_state = load_checkpoint(tmp_path)
    assert state["step"] == 10 and optim_state["t"] == 10
    for name, p in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], p)


def test_each_evaluation_in_the_log_carries_the_utc_wall_clock_of_the_run(tmp_path):
    from datetime import datetime, timedelta, timezone

    before = datetime.now(timezone.utc).replace(microsecond=0)
    tiny_run(tmp_path, steps=10)
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    timed = [r for r in records if "time" in r]
    assert [r["step"] for r in timed] == [r["step"] for r in records if "val_loss" in r] == [5, 10]
    clocks = [datetime.fromisoformat(r["time"]) for r in timed]
    assert all(c.utcoffset() == timedelta(0) for c in clocks)  # UTC, said in the string
    assert before <= clocks[0] <= clocks[1] <= after


def test_same_seed_gives_the_same_run():
    _, a = tiny_run(steps=8)
    _, b = tiny_run(steps=8)
    assert a == b


def test_an_existing_checkpoint_is_never_overwritten_without_resume(tmp_path):
    tiny_run(tmp_path, steps=5)
    before = (tmp_path / "ckpt.npz").read_bytes()
    with pytest.raises(UserError, match="already exists"):
        tiny_run(tmp_path, steps=5)
    assert (tmp_path / "ckpt.npz").read_bytes() == before


@pytest.mark.parametrize("pe", ["rope", "fope", "alibi", "nope", "sinusoidal"])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, pe):
    model = GPT(GPTConfig(**TINY, pe=pe, vocab_size=5, fope_learnable=pe == "fope"))
    tokenizer = CharTokenizer.from_text("abcde")
    save_checkpoint(tmp_path / "ckpt.npz", model, tokenizer, {"step": 3})
    loaded, tok, state, _ = load_checkpoint(tmp_path)
    idx = np.array([[0, 1, 2, 3, 4, 0]])
    np.testing.assert_array_equal(loaded.forward(idx)[0], model.forward(idx)[0])
    assert tok.chars == tokenizer.chars and state == {"step": 3}


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    model = GPT(GPTConfig(**TINY, vocab_size=5))
    tokenizer = CharTokenizer.from_text("abcde")
    save_checkpoint(tmp_path / "ckpt.npz", model, tokenizer, {"step": 1})
    before = (tmp_path / "ckpt.npz").read_bytes()

    def crash_midway(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash_midway)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ckpt.npz", model, tokenizer, {"step": 2})
    assert (tmp_path / "ckpt.npz").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]  # no temporary file left


def test_checkpoint_never_needs_pickle(tmp_path):
    tiny_run(tmp_path, steps=5)
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as archive:
        assert all(archive[k].dtype != object for k in archive.files)
        assert json.loads(str(archive["config.json"][()]))["pe"] == "rope"


def test_checkpoint_with_a_wrong_shape_is_refused(tmp_path):
    model = GPT(GPTConfig(**TINY, vocab_size=5))
    model.params["lm_head"] = np.zeros((16, 4), dtype=np.float32)
    save_checkpoint(tmp_path / "ckpt.npz", model, CharTokenizer.from_text("abcde"))
    with pytest.raises(UserError, match="lm_head"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("pe", ["rope", "alibi"])
def test_sliding_window_decoding_equals_recomputing_the_window(pe):
    # For RoPE and ALiBi the scores depend on m - n only, so dropping the oldest cache entries
    # is exactly a forward over the last `window` tokens.
    model = GPT(GPTConfig(**TINY, pe=pe, vocab_size=7, dtype="float64", init_std=0.3))
    window = 6
    ids = generate(model, np.array([[1, 2, 3]]), 10, temperature=0, window=window)
    for t in range(3, ids.shape[1]):
        context = ids[:, max(0, t - window):t]
        logits, _ = model.forward(context)
        assert np.argmax(logits[0, -1]) == ids[0, t]


def test_greedy_sampling_takes_the_argmax_and_top_k_never_leaves_the_top_k():
    logits = np.array([[0.1, 3.0, 2.0, -1.0]])
    assert sample_next(logits, np.random.default_rng(0), temperature=0)[0] == 1
    draws = {int(sample_next(logits, np.random.default_rng(s), 5.0, top_k=2)[0]) for s in range(200)}
    assert draws == {1, 2}


def test_sampling_with_a_seed_is_reproducible():
    model = GPT(GPTConfig(**TINY, vocab_size=7))
    a = generate(model, np.array([[1]]), 20, seed=3)
    b = generate(model, np.array([[1]]), 20, seed=3)
    np.testing.assert_array_equal(a, b)


def test_evaluate_uses_the_same_windows_every_time():
    model = GPT(GPTConfig(**TINY, vocab_size=7))
    data = np.random.default_rng(0).integers(0, 7, 500)
    assert evaluate(model, data, 4, 3) == evaluate(model, data, 4, 3)


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "minifope", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, **kw)


TINY_FLAGS = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--train-len", "16",
              "--batch-size", "4", "--eval-batches", "2", "--quiet", "--sample-chars", "0"]


def _losses(run):
    return [(r["step"], r.get("loss"), r.get("val_loss"))
            for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())]


def test_resume_after_ctrl_c_equals_an_uninterrupted_run_in_float64(tmp_path):
    data = tmp_path / "play.txt"
    data.write_text(TEXT)
    flags = ["--data", str(data), "--dtype", "float64", "--steps", "1500", "--eval-interval",
             "100", *TINY_FLAGS]
    assert _cli("train", "--out", str(tmp_path / "whole"), *flags).returncode == 0

    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "minifope", "train", "--out", str(part), *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = part / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (log.exists() and len(log.read_text().splitlines()) >= 20):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    _, _, state, _ = load_checkpoint(part)
    assert 0 < state["step"] < 1500

    resumed = _cli("train", "--out", str(part), "--resume", "--quiet", "--sample-chars", "0")
    assert resumed.returncode == 0, resumed.stderr
    assert _losses(part) == _losses(tmp_path / "whole")


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from minifope import optim

    real_step = optim.AdamW.step

    def step_that_diverges_on_the_third_update(self, grads, lr=None):
        real_step(self, grads, lr)
        if self.t == 3:
            self.params["lm_head"][0, 0] = np.nan

    monkeypatch.setattr(optim.AdamW, "step", step_that_diverges_on_the_third_update)
    config = GPTConfig(**TINY)
    tc = TrainConfig(steps=10, batch_size=4, eval_interval=2, eval_batches=2)
    with pytest.raises(UserError, match="training loss became nan at step 4.*kept in"):
        train(config, TEXT[:1500], TEXT[1500:], tc, out_dir=tmp_path, progress=False)
    model, _, state, _ = load_checkpoint(tmp_path)
    assert state["step"] == 2
    assert all(np.all(np.isfinite(p)) for p in model.params.values())


def test_a_diverging_cli_run_prints_one_line_and_exits_2(tmp_path):
    data = tmp_path / "play.txt"
    data.write_text(TEXT)
    result = _cli("train", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "20",
                  "--eval-interval", "1", "--lr", "1e30", "--weight-decay", "0", *TINY_FLAGS)
    assert result.returncode == 2
    assert "became" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_passkey_rows_replace_the_end_of_every_batch(monkeypatch):
    import minifope.passkey as pk

    calls = []
    real = pk.passkey_examples

    def recording(rng, n, length, tokenizer, key_digits=5, **kw):
        calls.append((n, length, key_digits))
        return real(rng, n, length, tokenizer, key_digits, **kw)

    monkeypatch.setattr(pk, "passkey_examples", recording)
    config = GPTConfig(n_layer=1, n_head=2, d_model=16, train_len=128)
    tc = TrainConfig(steps=3, batch_size=4, eval_interval=3, eval_batches=1, passkey_frac=0.5)
    model, _ = train(config, TEXT * 2, TEXT, tc, progress=False)
    assert calls == [(2, 128, 5)] * 3
    assert model.config.vocab_size > len(set(TEXT))  # the passkey's digits joined the vocabulary


def test_passkey_training_refuses_a_window_too_short_for_the_prompt():
    tc = TrainConfig(steps=2, batch_size=4, eval_batches=1, passkey_frac=0.25)
    with pytest.raises(UserError, match="train_len >= 123"):
        train(GPTConfig(**TINY), TEXT, TEXT, tc, progress=False)


def test_init_from_copies_every_shared_parameter(tmp_path):
    source, _ = tiny_run(tmp_path / "a", steps=5)
    tc = TrainConfig(steps=1, batch_size=4, eval_interval=1, eval_batches=1, lr=1e-12, min_lr=0)
    longer = GPTConfig(**{**TINY, "train_len": 32, "pe": "fope"})
    model, _ = train(longer, TEXT[:1500], TEXT[1500:], tc, progress=False, init_from=tmp_path / "a")
    assert model.config.train_len == 32 and model.config.pe == "fope"
    for name, p in source.params.items():
        np.testing.assert_allclose(model.params[name], p, atol=1e-6)
    assert "blocks.0.fope.ccos" in model.buffers


def test_init_from_a_model_of_another_width_is_refused(tmp_path):
    tiny_run(tmp_path / "a", steps=2)
    tc = TrainConfig(steps=1, batch_size=4, eval_batches=1)
    with pytest.raises(UserError, match="does not fit"):
        train(GPTConfig(**{**TINY, "d_model": 32}), TEXT[:1500], TEXT[1500:], tc, progress=False,
              init_from=tmp_path / "a")


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    from minifope.checkpoint import atomic_write

    umask = os.umask(0)
    os.umask(umask)
    atomic_write(tmp_path / "x.json", lambda f: f.write(b"{}"))
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o666 & ~umask
