"""Checkpoints cross between the NumPy engine and the torch path: a run of the real NumPy CLI
loads into torch and back unchanged, and a checkpoint saved from torch loads in NumPy."""

import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch path needs PyTorch: pip install -r requirements-torch.txt")

from minifope.checkpoint import load_checkpoint  # noqa: E402
from minifope.torch import from_torch, to_torch  # noqa: E402
from minifope.torch import load_checkpoint as torch_load_checkpoint  # noqa: E402
from minifope.torch import save_checkpoint as torch_save_checkpoint  # noqa: E402

from helpers import ROOT, TEXT  # noqa: E402

torch.set_num_threads(1)



@pytest.fixture(scope="module")
def numpy_run(tmp_path_factory):
    """DIR of a checkpoint written by `python -m minifope train`."""
    folder = tmp_path_factory.mktemp("numpy_run")
    data = folder / "play.txt"
    data.write_text(TEXT)
    out = folder / "run"
    result = subprocess.run(
        [sys.executable, "-m", "minifope", "train", "--steps", "5", "--d-model", "16", "--n-layer", "1",
         "--n-head", "2", "--train-len", "16", "--batch-size", "4", "--eval-interval", "5",
         "--eval-batches", "1", "--quiet", "--sample-chars", "0", "--data", str(data), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    return out


def windows(model, seed=0):
    return np.random.default_rng(seed).integers(0, model.config.vocab_size, (3, 16))


def test_a_numpy_cli_checkpoint_goes_to_torch_and_back_bit_identically(numpy_run):
    model, tokenizer, _, _ = load_checkpoint(numpy_run)
    module = to_torch(model)
    back = from_torch(module)
    for store, back_store in ((model.params, back.params), (model.buffers, back.buffers)):
        assert store.keys() == back_store.keys()
        for name in store:
            assert back_store[name].dtype == store[name].dtype
            np.testing.assert_array_equal(back_store[name], store[name])
    idx = windows(model)
    np.testing.assert_array_equal(back.forward(idx)[0], model.forward(idx)[0])
    logits = module(torch.from_numpy(idx))[0].detach().numpy()
    expected = model.forward(idx)[0]
    assert np.max(np.abs(logits - expected)) <= 1e-5 * np.max(np.abs(expected))


def test_a_checkpoint_saved_from_torch_loads_in_numpy_with_the_same_logits(numpy_run, tmp_path):
    module, tokenizer, state, _ = torch_load_checkpoint(numpy_run, dtype=torch.float64)
    assert module.config.dtype == "float64" and module.wte.dtype == torch.float64
    with torch.no_grad():
        module.wte.add_(0.5)  # a change the NumPy side must see
    torch_save_checkpoint(tmp_path / "ckpt.npz", module, tokenizer, state)
    model, tokenizer2, state2, _ = load_checkpoint(tmp_path)
    assert tokenizer2.chars == tokenizer.chars and state2 == state
    assert model.config == module.config
    idx = windows(model, 1)
    expected = module(torch.from_numpy(idx))[0].detach().numpy()
    assert np.max(np.abs(model.forward(idx)[0] - expected)) <= 1e-12 * np.max(np.abs(expected))
