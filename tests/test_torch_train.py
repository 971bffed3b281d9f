"""The torch trainer through its real command line: it trains what the NumPy trainer trains,
data parallel over processes changes nothing, its checkpoints cross over to the NumPy side,
and the length-generalization evaluation runs on torch models."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch path needs PyTorch: pip install -r requirements-torch.txt")

from minifope import GPT, GPTConfig  # noqa: E402
from minifope.checkpoint import load_checkpoint  # noqa: E402
from minifope.data import CharTokenizer  # noqa: E402
from minifope.lengthgen import loss_by_length  # noqa: E402
from minifope.passkey import passkey_accuracy  # noqa: E402
from minifope.torch import NumpyView, to_torch  # noqa: E402
from minifope.torch import load_checkpoint as torch_load_checkpoint  # noqa: E402
from minifope.train import passkey_chars  # noqa: E402

from helpers import ROOT, TEXT  # noqa: E402

torch.set_num_threads(1)

TINY = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--train-len", "16", "--batch-size", "4",
        "--eval-interval", "1", "--eval-batches", "1", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",  # a worker script outside the repo still finds minifope
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run(*args, launcher=("-m",)):
    result = subprocess.run([sys.executable, *launcher, *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=180, env=ENV)
    return result


def numpy_train(*args):
    return run("minifope", "train", *args)


def torchrun(processes, log_dir):
    # torchrun's own logs go to log_dir, not to a fresh folder in the system's temp directory
    return ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
            "--log-dir", str(log_dir))


def torch_train(*args, processes=1, log_dir=None):
    if processes == 1:
        return run("minifope.torch.train", "--device", "cpu", *args)
    return run("minifope.torch.train", "--device", "cpu", *args,
               launcher=(*torchrun(processes, log_dir), "-m"))


def val_losses(folder):
    records = [json.loads(line) for line in (Path(folder) / "log.jsonl").read_text().splitlines()]
    return np.array([r["val_loss"] for r in records if "val_loss" in r])


def assert_same_params(a, b, tol):
    ma, mb = load_checkpoint(a)[0], load_checkpoint(b)[0]
    for name in ma.params:
        err = np.max(np.abs(ma.params[name] - mb.params[name])) / np.max(np.abs(mb.params[name]))
        assert err <= tol, f"{name}: relative difference {err:.2e}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 4-step float64 run by the NumPy trainer, the torch trainer in one process, and
    the torch trainer in two gloo processes (global batch 4 = 2 x 2 rows)."""
    folder = tmp_path_factory.mktemp("runs")
    data = folder / "play.txt"
    data.write_text(TEXT)
    flags = ["--data", data, "--steps", 4, "--dtype", "float64", "--sample-chars", 0, *TINY]
    out = {name: folder / name for name in ("numpy", "torch", "ddp")}
    for name, result in (("numpy", numpy_train(*flags, "--out", out["numpy"])),
                         ("torch", torch_train(*flags, "--out", out["torch"])),
                         ("ddp", torch_train(*flags, "--out", out["ddp"], processes=2,
                                             log_dir=folder / "torchrun"))):
        assert result.returncode == 0, f"{name}: {result.stderr}"
    out["data"], out["flags"] = data, flags
    return out


def test_the_torch_trainer_cli_writes_a_checkpoint_the_numpy_side_loads(tmp_path):
    data = tmp_path / "play.txt"
    data.write_text(TEXT)
    flags = ["--data", data, "--steps", 3, *TINY]
    result = torch_train(*flags, "--out", tmp_path / "torch", "--sample-chars", 20)
    assert result.returncode == 0, result.stderr
    assert "--- sample ---" in result.stdout and "final validation loss" in result.stdout
    model, tokenizer, state, optim_state = load_checkpoint(tmp_path / "torch")
    assert model.config.dtype == "float32" and state["step"] == 3 and int(optim_state["t"]) == 3
    assert numpy_train(*flags, "--out", tmp_path / "numpy", "--sample-chars", 0).returncode == 0
    np.testing.assert_allclose(val_losses(tmp_path / "torch"), val_losses(tmp_path / "numpy"), rtol=1e-5)


def test_the_torch_and_numpy_trainers_make_the_same_run_in_float64(runs):
    np.testing.assert_allclose(val_losses(runs["torch"]), val_losses(runs["numpy"]), rtol=1e-10)
    assert_same_params(runs["torch"], runs["numpy"], 1e-10)


def test_two_gloo_processes_train_exactly_like_one_process_with_the_same_global_batch(runs):
    losses = val_losses(runs["ddp"])
    assert len(losses) == 4
    np.testing.assert_allclose(losses, val_losses(runs["torch"]), rtol=1e-6)
    assert_same_params(runs["ddp"], runs["torch"], 1e-6)
    opt_ddp, opt_one = load_checkpoint(runs["ddp"])[3], load_checkpoint(runs["torch"])[3]
    for key in opt_one:
        np.testing.assert_allclose(opt_ddp[key], opt_one[key], rtol=1e-6, atol=1e-12)


def test_numpy_resumes_a_torch_run_as_torch_resumes_a_numpy_run(runs, tmp_path):
    shutil.copytree(runs["torch"], tmp_path / "from_torch")
    shutil.copytree(runs["numpy"], tmp_path / "from_numpy")
    more = ["--steps", 6, "--resume", "--quiet", "--sample-chars", 0]
    assert numpy_train("--out", tmp_path / "from_torch", *more).returncode == 0
    result = torch_train("--out", tmp_path / "from_numpy", *more)
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose(val_losses(tmp_path / "from_torch"), val_losses(tmp_path / "from_numpy"),
                               rtol=1e-10)
    assert_same_params(tmp_path / "from_torch", tmp_path / "from_numpy", 1e-10)


def test_loss_by_length_runs_on_a_torch_model_and_gives_the_numpy_numbers(runs):
    module, tokenizer, _, _ = torch_load_checkpoint(runs["torch"])
    model = load_checkpoint(runs["torch"])[0]
    data = tokenizer.encode(TEXT)
    lengths = [16, 32, 64]
    got = loss_by_length(NumpyView(module), data, lengths, chars_per_length=128, progress=False)
    expected = loss_by_length(model, data, lengths, chars_per_length=128, progress=False)
    for L in lengths:
        assert got[L]["loss"] == pytest.approx(expected[L]["loss"], rel=1e-10)
        np.testing.assert_allclose(got[L]["bucket_loss"], expected[L]["bucket_loss"], rtol=1e-10)


def test_passkey_accuracy_runs_on_a_torch_model_and_gives_the_numpy_numbers():
    tokenizer = CharTokenizer.from_text(passkey_chars())
    config = GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, d_model=16, train_len=64,
                       pe="fope", dtype="float64", init_std=0.5)
    model = GPT(config)
    got = passkey_accuracy(NumpyView(to_torch(model)), tokenizer, 140, [0.0, 1.0], 2, seed=0)
    np.testing.assert_array_equal(got, passkey_accuracy(model, tokenizer, 140, [0.0, 1.0], 2, seed=0))


def test_a_user_mistake_prints_one_line_and_exits_2(tmp_path):
    data = tmp_path / "play.txt"
    data.write_text(TEXT)
    result = torch_train("--data", data, "--out", tmp_path / "run", "--steps", 2, "--dtype", "float64",
                         "--amp", "bf16", *TINY)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == ["error: --amp bf16 needs --dtype float32 (autocast "
                                                  "leaves float64 alone)"]
    assert not (tmp_path / "run").exists()


WORKER = """
import json, sys
from minifope.config import GPTConfig
from minifope.data import split_text
from minifope.torch.train import TrainConfig, init_distributed, resolve_device, train
import torch.distributed as dist

init_distributed(resolve_device("cpu"))
config = GPTConfig(d_model=16, n_layer=1, n_head=2, train_len=128, dtype="float64")
tc = TrainConfig(steps=3, batch_size=4, eval_interval=3, eval_batches=1, passkey_frac=0.5,
                 passkey_loss="answer")
model, history = train(config, *split_text(open(sys.argv[1]).read()), tc, out_dir=sys.argv[2],
                       progress=False, device="cpu")
if dist.is_initialized():
    dist.destroy_process_group()
"""


def test_data_parallel_weights_each_process_by_its_counted_targets(tmp_path):
    # passkey rows that carry loss on their answer only fill the end of every batch, so the
    # second process counts far fewer targets than the first; the gradient must still be the
    # global batch's mean loss
    (tmp_path / "worker.py").write_text(WORKER)
    (tmp_path / "play.txt").write_text(TEXT * 2)
    args = [tmp_path / "worker.py", tmp_path / "play.txt"]
    one = run(*args, tmp_path / "one", launcher=())
    two = run(*args, tmp_path / "two", launcher=torchrun(2, tmp_path / "torchrun"))
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    np.testing.assert_allclose(val_losses(tmp_path / "two"), val_losses(tmp_path / "one"), rtol=1e-6)
    assert_same_params(tmp_path / "two", tmp_path / "one", 1e-6)
