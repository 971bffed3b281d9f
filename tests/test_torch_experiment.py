"""`experiment --backend torch`: the lab on the torch model. On CPU in float64 it trains and
evaluates what the NumPy engine does, writes the same files, and either backend resumes the
other's runs."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch path needs PyTorch: pip install -r requirements-torch.txt")

from minifope.checkpoint import load_checkpoint  # noqa: E402
from minifope.errors import UserError  # noqa: E402
from minifope.experiment import ExperimentConfig, run_experiment  # noqa: E402

from helpers import TEXT, assert_user_error, cli  # noqa: E402

torch.set_num_threads(1)


def tiny(data, backend, steps=3):
    return ExperimentConfig(variants=["rope", "fope", "alibi"], seeds=1, data=str(data), backend=backend,
                            device="cpu" if backend == "torch" else "auto",
                            model=dict(d_model=16, n_layer=1, n_head=2, train_len=128, dtype="float64"),
                            train=dict(steps=steps, batch_size=4, lr=3e-3, min_lr=3e-3, warmup=1, eval_interval=1,
                                       eval_batches=1, passkey_frac=0.5, passkey_loss="keys"),
                            multipliers=[1, 2], passkey_multipliers=[1, 2], prompts=2, eval_chars=512)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "text.txt"
    path.write_text(TEXT * 3)
    return path


def losses(run_dir):
    records = [json.loads(line) for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r], [r["val_loss"] for r in records if "val_loss" in r]


def assert_same_runs(a, b, variants=("rope", "fope", "alibi")):
    for label in variants:
        run_a, run_b = Path(a) / "runs" / label / "seed0", Path(b) / "runs" / label / "seed0"
        assert sorted(p.name for p in run_a.iterdir()) == sorted(p.name for p in run_b.iterdir())
        for x, y in zip(losses(run_a), losses(run_b)):
            np.testing.assert_allclose(x, y, rtol=1e-10)
        model_a, _, state_a, _ = load_checkpoint(run_a)
        model_b, _, state_b, _ = load_checkpoint(run_b)
        assert state_a["step"] == state_b["step"]
        for name in model_a.params:
            np.testing.assert_allclose(model_a.params[name], model_b.params[name], rtol=1e-9, atol=1e-12)
        eval_a, eval_b = (json.loads((r / "eval.json").read_text()) for r in (run_a, run_b))
        assert eval_a["engine"] == "numpy" and eval_b["engine"] == "torch cpu"
        for L in eval_a["result"]["loss"]:
            np.testing.assert_allclose(eval_a["result"]["loss"][L]["loss"], eval_b["result"]["loss"][L]["loss"],
                                       rtol=1e-10)
        assert eval_a["result"]["passkey"]["correct"] == eval_b["result"]["passkey"]["correct"]


def test_both_backends_train_and_evaluate_the_same_runs_in_float64(data, tmp_path):
    summaries = {b: run_experiment(tiny(data, b), tmp_path / b, progress=False) for b in ("numpy", "torch")}
    assert_same_runs(tmp_path / "numpy", tmp_path / "torch")
    files = {b: sorted(p.name for p in (tmp_path / b).iterdir()) for b in ("numpy", "torch")}
    assert files["numpy"] == files["torch"] and "results.md" in files["torch"]
    for label in ("rope", "fope", "alibi"):
        for L, r in summaries["numpy"]["variants"][label]["loss"].items():
            np.testing.assert_allclose(r["mean"], summaries["torch"]["variants"][label]["loss"][L]["mean"], rtol=1e-10)


def test_either_backend_resumes_the_others_runs(data, tmp_path):
    run_experiment(tiny(data, "numpy", steps=2), tmp_path / "mixed", progress=False)
    run_experiment(tiny(data, "torch", steps=4), tmp_path / "mixed", progress=False)  # resumed on torch
    run_experiment(tiny(data, "numpy", steps=4), tmp_path / "numpy", progress=False)  # straight through
    for label in ("rope", "fope", "alibi"):
        a, b = (load_checkpoint(tmp_path / f / "runs" / label / "seed0")[0] for f in ("mixed", "numpy"))
        for name in a.params:
            np.testing.assert_allclose(a.params[name], b.params[name], rtol=1e-9, atol=1e-12)
        assert json.loads((tmp_path / "mixed" / "runs" / label / "seed0" / "eval.json").read_text())["step"] == 4


def test_a_device_that_is_not_there_or_a_device_without_torch_is_refused_before_anything_runs(data, tmp_path):
    if not torch.cuda.is_available():
        assert_user_error(cli("experiment", "--out", tmp_path / "x", "--backend", "torch", "--device", "cuda",
                              "--data", data, "--quiet"), "PyTorch sees no CUDA device")
        assert not (tmp_path / "x").exists()
    assert_user_error(cli("experiment", "--out", tmp_path / "y", "--device", "cpu", "--quiet"),
                      "only takes effect with the torch backend")
    with pytest.raises(UserError, match="backend must be one of numpy, torch"):
        dataclasses.replace(tiny(data, "numpy"), backend="jax").check()
