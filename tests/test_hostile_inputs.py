"""What a careless or unlucky user can do, through the real command line: every mistake is one
line on stderr and exit status 2, found before any training where it can be, and nothing on
disk is lost. The numbers in the test names are the cases of the issue that listed them."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import ROOT, TEXT, TINY_FLAGS, assert_user_error, cli, snapshot


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 10-step run: its folder, and the text it was trained on."""
    folder = tmp_path_factory.mktemp("trained")
    data = folder / "play.txt"
    data.write_text(TEXT)
    result = cli("train", "--data", data, "--out", folder / "run", "--steps", 10, *TINY_FLAGS)
    assert result.returncode == 0, result.stderr
    return folder / "run", data


def copy_run(run, to):
    to.mkdir()
    for name in ("ckpt.npz", "log.jsonl"):
        (to / name).write_bytes((run / name).read_bytes())
    return to


def start_training(out, data, steps=100000, *extra):
    """A long run in the background; returns once its log has a record (it is training)."""
    proc = subprocess.Popen([sys.executable, "-m", "minifope", "train", "--data", str(data), "--out",
                             str(out), "--steps", str(steps), *TINY_FLAGS[:-3], "--eval-interval",
                             "50", "--quiet", "--sample-chars", "0", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 90
    while time.time() < deadline and not ((out / "log.jsonl").exists() and (out / "ckpt.npz").exists()):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    return proc


# --- 1, 2: numbers out of range ------------------------------------------------------------------

@pytest.mark.parametrize("command", ["train", "sample", "gradcheck"])
def test_1_a_negative_seed_is_refused(command, trained, tmp_path):
    run, data = trained
    args = {"train": ["--data", data, "--out", tmp_path / "r", *TINY_FLAGS],
            "sample": ["--ckpt", run], "gradcheck": []}[command]
    assert_user_error(cli(command, *args, "--seed", "-1"), "--seed", ">= 0")
    assert not (tmp_path / "r").exists()


def test_1_a_config_with_a_negative_seed_is_refused():
    from minifope.train import TrainConfig

    with pytest.raises(ValueError, match="seed"):
        TrainConfig(seed=-1)


@pytest.mark.parametrize("flags, words", [
    (["--temperature", "nan"], ["--temperature", "finite"]),
    (["--temperature", "inf"], ["--temperature", "finite"]),
    (["--chars", "-5"], ["--chars", ">= 0"]),
    (["--top-k", "0"], ["--top-k", ">= 1"]),
])
def test_2_sample_refuses_values_that_cannot_sample(trained, flags, words):
    result = cli("sample", "--ckpt", trained[0], *flags)
    assert_user_error(result, *words)
    assert result.stdout == ""


@pytest.mark.parametrize("flags, words", [
    (["--grad-clip", "nan"], ["--grad-clip", "finite"]),
    (["--lr", "inf"], ["--lr", "finite"]),
    (["--weight-decay", "nan"], ["--weight-decay"]),
    (["--rope-scale", "4"], ["rope_scale", "rope_scaling"]),
])
def test_train_refuses_a_value_that_would_be_ignored_or_poison_the_run(tmp_path, data_file, flags, words):
    assert_user_error(cli("train", "--data", data_file, "--out", tmp_path / "r", *TINY_FLAGS, *flags),
                      *words)
    assert not (tmp_path / "r").exists()


# --- 3: an --out that cannot be a run folder ------------------------------------------------------

def bad_outs(tmp_path):
    (tmp_path / "a-file").write_text("x")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    return {"a file": tmp_path / "a-file", "under a file": tmp_path / "a-file" / "run",
            "a dangling link": tmp_path / "dangling", "a looping link": tmp_path / "loop",
            "in /proc": Path("/proc/minifope-run")}


@pytest.mark.parametrize("command, flag", [("train", "--out"), ("train", "--data"), ("train", "--init-from"),
                                           ("sample", "--ckpt"), ("experiment", "--out")])
def test_an_empty_path_is_refused_rather_than_read_as_this_folder(command, flag):
    assert_user_error(cli(command, flag, ""), flag, "empty")


@pytest.mark.parametrize("kind", ["a file", "under a file", "a dangling link", "a looping link", "in /proc"])
def test_3_train_refuses_an_out_that_cannot_be_a_folder(tmp_path, data_file, kind):
    out = bad_outs(tmp_path)[kind]
    assert_user_error(cli("train", "--data", data_file, "--out", out, "--steps", 5, *TINY_FLAGS),
                      str(out))
    assert (tmp_path / "a-file").read_text() == "x"


@pytest.mark.parametrize("kind", ["a file", "under a file", "a dangling link", "a looping link", "in /proc"])
def test_3_experiment_refuses_an_out_that_cannot_be_a_folder(tmp_path, data_file, kind):
    out = bad_outs(tmp_path)[kind]
    assert_user_error(cli("experiment", "--out", out, "--data", data_file, *EXPERIMENT_FLAGS), str(out))


# --- 4: --overwrite removes nothing before the new run is checked ----------------------------------

@pytest.mark.parametrize("why", ["a misspelt data file", "a text too short", "an init that does not fit"])
def test_4_overwrite_keeps_the_old_run_when_the_new_one_is_refused(trained, tmp_path, why):
    run = copy_run(trained[0], tmp_path / "run")
    short = tmp_path / "short.txt"
    short.write_text("KING: hi\n")
    flags = {"a misspelt data file": ["--data", tmp_path / "typo.txt"],
             "a text too short": ["--data", short],
             "an init that does not fit": ["--data", trained[1], "--init-from", run, "--d-model", "32"]}[why]
    before = snapshot(run)
    assert_user_error(cli("train", "--out", run, "--overwrite", *flags, *TINY_FLAGS[2:]))
    assert snapshot(run) == before


def test_4_a_run_may_overwrite_the_run_it_starts_from(trained, tmp_path):
    from minifope.checkpoint import load_checkpoint

    run = copy_run(trained[0], tmp_path / "run")
    result = cli("train", "--out", run, "--overwrite", "--init-from", run, "--data", trained[1],
                 "--train-len", "32", "--steps", 5, *TINY_FLAGS[8:])
    assert result.returncode == 0, result.stderr
    model, _, state, _ = load_checkpoint(run)
    assert model.config.train_len == 32 and state["step"] == 5
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [5]


# --- 5, 6, 7: a damaged log or trainer state ---------------------------------------------------------

def test_5_resume_drops_a_torn_last_log_line_and_says_so(trained, tmp_path):
    run = copy_run(trained[0], tmp_path / "run")
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 11, "loss": 2.3')  # a disk that filled during an append
    result = cli("train", "--out", run, "--resume", "--steps", 15, "--quiet", "--sample-chars", 0)
    assert result.returncode == 0, result.stderr
    assert "damaged line" in result.stderr
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15]  # the evaluations of the 10-step run, and of the resumed one


def test_6_resume_without_a_log_to_no_more_steps_is_refused_in_one_line(trained, tmp_path):
    run = copy_run(trained[0], tmp_path / "run")
    (run / "log.jsonl").unlink()
    assert_user_error(cli("train", "--out", run, "--resume", "--steps", 10, "--quiet"), "already at step 10")
    result = cli("train", "--out", run, "--resume", "--steps", 12, "--quiet", "--sample-chars", 0)
    assert result.returncode == 0, result.stderr
    assert "missing" in result.stderr
    assert [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()] == [12]


def with_state(run, change):
    """Rewrite run's checkpoint with its state.json passed through change(state)."""
    path = run / "ckpt.npz"
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    state = json.loads(str(arrays["state.json"][()]))
    arrays["state.json"] = np.array(json.dumps(change(state)))
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage, words", [
    (lambda s: {k: v for k, v in s.items() if k != "rng"}, ["no trainer state"]),
    (lambda s: {k: v for k, v in s.items() if k != "step"}, ["no trainer state"]),
    (lambda s: {**s, "step": "ten"}, ["step"]),
    (lambda s: {**s, "rng": {"bit_generator": "PCG64", "state": "x"}}, ["rng"]),
    (lambda s: {**s, "rng": [1, 2]}, ["rng"]),
    (lambda s: {**s, "train_config": {**s["train_config"], "label_smoothing": 0.1}}, ["label_smoothing", "newer"]),
    (lambda s: {**s, "train_config": {**s["train_config"], "batch_size": "four"}}, ["train_config"]),
    (lambda s: {**s, "train_config": [1]}, ["train_config"]),
    (lambda s: {**s, "data": 7}, ["data"]),
])
def test_7_resume_refuses_a_damaged_trainer_state_in_one_line(trained, tmp_path, damage, words):
    run = copy_run(trained[0], tmp_path / "run")
    with_state(run, damage)
    before = snapshot(run)
    assert_user_error(cli("train", "--out", run, "--resume", "--steps", 20, "--quiet"), *words)
    assert snapshot(run) == before


# --- 10, 11, 12: experiment settings, texts and folders, all before training ---------------------------

EXPERIMENT_FLAGS = ["--pe", "rope", "--seeds", "1", "--d-model", "16", "--n-layer", "1", "--n-head", "2",
                    "--train-len", "128", "--steps", "60", "--batch-size", "4", "--lengths", "1",
                    "--passkey-lengths", "1", "--prompts", "1", "--eval-chars", "256",
                    "--jobs", "1", "--quiet"]


@pytest.mark.parametrize("flags, words", [
    (["--seeds", "0"], ["--seeds"]),
    (["--lengths", "0"], ["--lengths"]),
    (["--passkey-lengths", "0"], ["--passkey-lengths"]),
    (["--prompts", "0"], ["--prompts"]),
    (["--prompts", "nan"], ["--prompts"]),
    (["--steps", "-5"], ["--steps"]),
    (["--continue-at", "-1"], ["--continue-at"]),
    (["--continue-at", "1"], ["--continue-at"]),
    (["--continue-steps", "0"], ["--continue-steps"]),
    (["--continue-at", "2", "--continue-yarn-scale", "nan"], ["--continue-yarn-scale"]),
    (["--continue-at", "2", "--continue-yarn-scale", "0.5"], ["continue_yarn_scale"]),
    (["--lengths", "100000"], ["evaluation text", "--lengths"]),
    (["--passkey-frac", "0"], ["passkey evaluation needs", "--passkey-frac"]),
])
def test_10_11_experiment_settings_are_refused_before_anything_is_written(tmp_path, data_file, flags, words):
    out = tmp_path / "exp"
    started = time.time()
    assert_user_error(cli("experiment", "--out", out, "--data", data_file, *EXPERIMENT_FLAGS, *flags), *words)
    assert not out.exists()
    assert time.time() - started < 30


def test_11_an_evaluation_text_outside_the_vocabulary_is_refused_before_training(tmp_path, data_file):
    other = tmp_path / "other.txt"
    other.write_text("\u00e9t\u00e9 " * 2000)
    out = tmp_path / "exp"
    assert_user_error(cli("experiment", "--out", out, "--data", data_file, "--eval-data", other,
                          *EXPERIMENT_FLAGS), "'\u00e9'")
    assert not (out / "runs").exists()


def test_12_a_run_folder_of_another_config_is_refused_not_reused(tmp_path, data_file):
    out = tmp_path / "exp"
    flags = ["--data", data_file, *EXPERIMENT_FLAGS]
    assert cli("experiment", "--out", out, *flags[:3], "alibi", *flags[4:]).returncode == 0
    (out / "runs/alibi").rename(out / "runs/rope")
    (out / "experiment.json").unlink()
    before = snapshot(out / "runs")
    assert_user_error(cli("experiment", "--out", out, *flags), "runs/rope/seed0", "pe: checkpoint 'alibi'")
    assert snapshot(out / "runs") == before


def test_an_experiment_with_a_damaged_record_is_refused_in_one_line(tmp_path, data_file):
    out = tmp_path / "exp"
    out.mkdir()
    (out / "experiment.json").write_text('{"training": ')
    assert_user_error(cli("experiment", "--out", out, "--data", data_file, *EXPERIMENT_FLAGS), "damaged")


# --- 13: one trainer per folder; SIGTERM saves; stale temporary files --------------------------------

def test_13_a_second_trainer_on_a_folder_in_use_is_refused(tmp_path, data_file):
    out = tmp_path / "run"
    first = start_training(out, data_file)
    try:
        second = cli("train", "--data", data_file, "--out", out, "--overwrite", "--steps", 5, *TINY_FLAGS)
        assert_user_error(second, "in use", str(first.pid))
        resumed = cli("train", "--out", out, "--resume", "--steps", 200000, "--quiet")
        assert_user_error(resumed, "in use")
    finally:
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 130, err
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(10, 10 * len(steps) + 1, 10))  # one run's log, never two interleaved


def test_an_experiment_on_a_folder_in_use_is_refused(tmp_path, data_file):
    from minifope.runfolder import RunFolder

    with RunFolder(tmp_path / "exp"):
        assert_user_error(cli("experiment", "--out", tmp_path / "exp", "--data", data_file,
                              *EXPERIMENT_FLAGS), "in use")


def test_sigterm_saves_the_checkpoint_like_ctrl_c(tmp_path, data_file):
    from minifope.checkpoint import load_checkpoint

    out = tmp_path / "run"
    proc = start_training(out, data_file)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--resume" in err and "Traceback" not in err
    last_logged = json.loads((out / "log.jsonl").read_text().splitlines()[-1])["step"]
    assert load_checkpoint(out)[2]["step"] >= last_logged  # saved where it stopped, not at the last eval


def test_a_trainer_removes_the_temporary_files_a_killed_save_left(trained, tmp_path):
    run = copy_run(trained[0], tmp_path / "run")
    (run / "ckpt.npz.k3j9xq2_.tmp").write_bytes(b"half a checkpoint")
    (run / "notes.tmp.txt").write_text("mine")
    result = cli("train", "--out", run, "--resume", "--steps", 12, "--quiet", "--sample-chars", 0)
    assert result.returncode == 0, result.stderr
    assert not (run / "ckpt.npz.k3j9xq2_.tmp").exists()
    assert (run / "notes.tmp.txt").read_text() == "mine"


# --- resume: what a diverged run needs, and a changed text ------------------------------------------------

def test_resume_accepts_the_lower_learning_rate_the_nan_message_advises(trained, tmp_path):
    run = copy_run(trained[0], tmp_path / "run")
    result = cli("train", "--out", run, "--resume", "--steps", 12, "--lr", "1e-4", "--min-lr", "1e-5",
                 "--grad-clip", "0.5", "--quiet", "--sample-chars", 0)
    assert result.returncode == 0, result.stderr


def test_resume_on_a_changed_text_is_refused_unless_asked(tmp_path, data_file):
    run = tmp_path / "run"
    assert cli("train", "--data", data_file, "--out", run, "--steps", 5, *TINY_FLAGS).returncode == 0
    data_file.write_text(TEXT.replace("lord", "word"))  # the same file, edited since
    before = snapshot(run)
    assert_user_error(cli("train", "--out", run, "--resume", "--steps", 10, "--quiet"),
                      "--allow-data-change")
    assert snapshot(run) == before
    result = cli("train", "--out", run, "--resume", "--steps", 10, "--quiet", "--allow-data-change",
                 "--sample-chars", 0)
    assert result.returncode == 0, result.stderr


# --- 14, 15: output that cannot be written ----------------------------------------------------------------

def test_14_bench_refuses_a_folder_as_its_json_before_it_runs(tmp_path):
    started = time.time()
    result = cli("bench", "--quick", "--no-torch", "--json", tmp_path)
    assert_user_error(result, "--json", "folder")
    assert time.time() - started < 20


def test_15_sample_into_a_closed_pipe_ends_quietly(trained):
    sample = subprocess.Popen([sys.executable, "-m", "minifope", "sample", "--ckpt", str(trained[0]),
                               "--chars", "20000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.run(["head", "-c", "10"], stdin=sample.stdout, capture_output=True)
    sample.stdout.close()
    err = sample.stderr.read().decode()
    sample.wait(timeout=120)
    assert len(head.stdout) == 10
    assert err == "" and sample.returncode == 141


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_15_sample_onto_a_full_disk_is_one_line(trained):
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "minifope", "sample", "--ckpt", str(trained[0]),
                                 "--chars", "100"], cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "No space left" in result.stderr


def test_a_model_too_large_for_this_machine_is_refused_before_it_is_built(tmp_path, data_file):
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    # float64 weights, gradients and two AdamW moments: 32 bytes a weight, about 12 C^2 a layer
    layers = int(2 * memory / 32 / (12 * 1024**2)) + 1
    started = time.time()
    result = cli("train", "--data", data_file, "--out", tmp_path / "r", "--d-model", 1024, "--n-head", 8,
                 "--n-layer", layers, "--dtype", "float64", "--quiet")
    assert_user_error(result, "weights")
    assert time.time() - started < 30


def test_sigterm_to_an_experiment_reaches_its_workers_which_save(tmp_path, data_file):
    # 4 runs on 2 workers: the pool has already queued a third run for a worker, which must
    # not start once the experiment is stopped
    from minifope.checkpoint import load_checkpoint

    out = tmp_path / "exp"
    proc = subprocess.Popen([sys.executable, "-m", "minifope", "experiment", "--out", str(out), "--data",
                             str(data_file), *EXPERIMENT_FLAGS, "--pe", "alibi", "--seeds", "4",
                             "--steps", "100000", "--jobs", "2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    logs = [out / "runs/alibi" / f"seed{k}" / "log.jsonl" for k in (0, 1)]
    deadline = time.time() + 120
    while time.time() < deadline and not all(log.exists() and log.read_text().strip() for log in logs):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    for log in logs:
        last_logged = json.loads(log.read_text().splitlines()[-1])["step"]
        assert load_checkpoint(log.parent)[2]["step"] >= last_logged > 0
    assert not (out / "runs/alibi/seed2").exists() and not (out / "runs/alibi/seed3").exists()


def test_a_passkey_window_too_short_is_refused_before_training(tmp_path, data_file):
    out = tmp_path / "exp"
    result = cli("experiment", "--out", out, "--data", data_file, *EXPERIMENT_FLAGS, "--train-len", "64",
                 "--passkey-frac", "0")
    assert_user_error(result, "passkey window of 64", "--train-len")
    assert not out.exists()


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_as_data_is_refused_rather_than_read_forever(tmp_path):
    assert_user_error(cli("train", "--data", "/dev/zero", "--out", tmp_path / "r", *TINY_FLAGS,
                          timeout=30), "not a regular file")


def test_a_batch_too_large_for_memory_is_one_line(tmp_path, data_file):
    result = cli("train", "--data", data_file, "--out", tmp_path / "r", *TINY_FLAGS, "--batch-size",
                 10**12, "--micro-batches", 1)
    assert_user_error(result, "out of memory")


def test_a_new_run_never_appends_to_the_log_of_an_attempt_that_saved_nothing(tmp_path, data_file):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 10, "loss": 99.0}\n')  # a diverged first try, no checkpoint
    assert cli("train", "--data", data_file, "--out", out, "--steps", 10, *TINY_FLAGS).returncode == 0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10] and all(r.get("loss") != 99.0 for r in records)


def test_sigterm_to_an_experiment_while_its_workers_evaluate_stops_it_cleanly(tmp_path, data_file):
    # the runs train 2 steps, then evaluate passkey prompts at 16N for a while: the signal
    # reaches workers that are evaluating (no trainer to catch it), and the experiment still
    # ends in one line with 128 + SIGTERM, keeps what was trained, and resumes to the end
    out = tmp_path / "exp"
    flags = ["experiment", "--out", str(out), "--data", str(data_file), *EXPERIMENT_FLAGS, "--pe", "alibi",
             "--seeds", "2", "--steps", "2", "--jobs", "2", "--passkey-lengths", "16", "--prompts", "64"]
    proc = subprocess.Popen([sys.executable, "-m", "minifope", *flags], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpts = [out / "runs/alibi" / f"seed{k}" / "ckpt.npz" for k in (0, 1)]
    deadline = time.time() + 120
    while time.time() < deadline and not all(c.exists() for c in ckpts):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    time.sleep(1.0)  # into the evaluation
    assert proc.poll() is None, "the evaluation ended before the signal: make it longer"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not any((c.parent / "eval.json").exists() for c in ckpts)
    resumed = cli(*flags)
    assert resumed.returncode == 0, resumed.stderr
    assert all((c.parent / "eval.json").exists() for c in ckpts)
