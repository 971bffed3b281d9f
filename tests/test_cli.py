"""Every user mistake, through the real CLI: one line on stderr, exit status 2, nothing on disk changed."""

import pytest

from helpers import TEXT, TINY_FLAGS, assert_user_error, cli, snapshot

TINY = TINY_FLAGS


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A real tiny run: its folder holds ckpt.npz and log.jsonl."""
    folder = tmp_path_factory.mktemp("runs")
    data = folder / "play.txt"
    data.write_text(TEXT)
    run = folder / "run"
    result = cli("train", "--data", data, "--out", run, "--steps", "10", *TINY)
    assert result.returncode == 0, result.stderr
    return run, data


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(TEXT)
    return path


@pytest.mark.parametrize("content, words", [
    (None, ["does not exist"]),
    (b"", ["empty"]),
    (b"\x00\x01\x02binary\x00data" * 10, ["binary"]),
    ("caf\u00e9 na\u00efve ".encode("latin-1") * 50, ["UTF-8"]),
    (b"too short", ["train_len=16 needs at least 17"]),
])
def test_bad_data_file_is_refused(tmp_path, content, words):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    result = cli("train", "--data", path, "--out", tmp_path / "run", "--steps", "5", *TINY)
    assert_user_error(result, *words)
    assert not (tmp_path / "run" / "ckpt.npz").exists()


def test_a_directory_as_data_is_refused(tmp_path):
    assert_user_error(cli("train", "--data", tmp_path, "--out", tmp_path / "run", *TINY), str(tmp_path))


def test_unknown_pe_is_refused(tmp_path, data_file):
    assert_user_error(cli("train", "--data", data_file, "--pe", "sinusoid", "--out", tmp_path / "r"),
                      "sinusoid")


@pytest.mark.parametrize("flags, words", [
    (["--d-model", "30", "--n-head", "4"], ["d_model", "divisible"]),
    (["--n-layer", "0"], ["--n-layer"]),
    (["--batch-size", "0"], ["--batch-size"]),
    (["--steps", "-3"], ["steps"]),
    (["--train-len", "-1"], ["--train-len"]),
    (["--lr", "-0.1"], ["lr"]),
])
def test_impossible_sizes_are_refused(tmp_path, data_file, flags, words):
    result = cli("train", "--data", data_file, "--out", tmp_path / "r", "--quiet", *flags)
    assert_user_error(result, *words)
    assert not (tmp_path / "r").exists()


def test_missing_checkpoint_is_refused(tmp_path):
    assert_user_error(cli("sample", "--ckpt", tmp_path / "nowhere"), "no checkpoint")


def test_truncated_checkpoint_is_refused(tmp_path, trained):
    run, _ = trained
    bad = tmp_path / "ckpt.npz"
    bad.write_bytes((run / "ckpt.npz").read_bytes()[:2000])
    assert_user_error(cli("sample", "--ckpt", bad), "truncated or corrupt")


def test_corrupt_checkpoint_is_refused(tmp_path):
    bad = tmp_path / "ckpt.npz"
    bad.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    assert_user_error(cli("sample", "--ckpt", bad), "truncated or corrupt")


def test_an_npz_that_is_not_a_checkpoint_is_refused(tmp_path):
    import numpy as np

    bad = tmp_path / "ckpt.npz"
    np.savez(bad, weights=np.zeros(3))
    assert_user_error(cli("sample", "--ckpt", bad), "not a minifope checkpoint")


def test_resume_with_a_conflicting_config_is_refused_and_changes_nothing(trained):
    run, data = trained
    before = snapshot(run)
    result = cli("train", "--data", data, "--out", run, "--resume", "--d-model", "32", "--quiet")
    assert_user_error(result, "d_model", "checkpoint 16", "asked 32")
    assert snapshot(run) == before


def test_training_into_an_existing_run_without_resume_is_refused(trained):
    run, data = trained
    before = snapshot(run)
    assert_user_error(cli("train", "--data", data, "--out", run, "--steps", "10", *TINY), "--resume")
    assert snapshot(run) == before


def test_prompt_outside_the_vocabulary_names_the_characters(trained):
    run, _ = trained
    result = cli("sample", "--ckpt", run, "--prompt", "KING: \u00e9t\u00e9 \u2014 x")
    assert_user_error(result, "'\u00e9'", "'\u2014'")


def test_sample_continues_the_prompt(trained):
    run, _ = trained
    result = cli("sample", "--ckpt", run, "--prompt", "KING:", "--chars", "40", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("KING:") and len(result.stdout) >= 45
    again = cli("sample", "--ckpt", run, "--prompt", "KING:", "--chars", "40", "--seed", "1")
    assert again.stdout == result.stdout


def test_resume_continues_to_more_steps(tmp_path, data_file):
    run = tmp_path / "run"
    assert cli("train", "--data", data_file, "--out", run, "--steps", "5", *TINY).returncode == 0
    result = cli("train", "--out", run, "--resume", "--steps", "10", "--quiet", "--sample-chars", "0")
    assert result.returncode == 0, result.stderr
    assert "final validation loss" in result.stdout


def test_threads_flag_sets_the_blas_threads_for_the_command_and_restores_them(monkeypatch, trained):
    from threadpoolctl import threadpool_info

    from minifope import cli as cli_module

    def blas_threads():
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    before = blas_threads()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    target = 2 if before[0] == 1 else 1  # differs from the setting in force
    seen = []
    monkeypatch.setattr(cli_module, "cmd_sample", lambda args: seen.append(blas_threads()) or 0)
    assert cli_module.main(["sample", "--ckpt", str(trained[0]), "--threads", str(target)]) == 0
    assert seen == [[target] * len(before)]
    assert blas_threads() == before


def test_threads_below_one_is_refused(trained):
    assert_user_error(cli("sample", "--ckpt", trained[0], "--threads", "0"), "--threads", ">= 1")
