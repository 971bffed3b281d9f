"""What several test files share: the repository root, a tiny play, a tiny model and a batch."""

from pathlib import Path

import numpy as np

from minifope.config import GPTConfig

ROOT = Path(__file__).resolve().parents[1]
TEXT = "KING:\nWhat news, my lord? Speak, and be brief.\n\nLORD:\nThe day is ours.\n\n" * 30


def tiny_config(**overrides):
    """A 2-layer float64 GPT small enough for autograd and central differences."""
    base = dict(vocab_size=13, n_layer=2, n_head=2, d_model=32, train_len=64, dtype="float64",
                seed=7, init_std=0.2)
    return GPTConfig(**{**base, **overrides})


def batch(config, B=2, T=9, seed=0):
    """(idx, targets), each (B, T), random tokens; one target is -1, a position without loss."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, (B, T))
    targets = rng.integers(0, config.vocab_size, (B, T))
    targets[0, 2] = -1
    return idx, targets


# --- the real command line ---------------------------------------------------------------------

import hashlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

TINY_FLAGS = ["--d-model", "16", "--n-layer", "1", "--n-head", "2", "--train-len", "16",
              "--batch-size", "4", "--eval-batches", "2", "--eval-interval", "5", "--quiet",
              "--sample-chars", "0"]


def cli(*args, timeout=120, **kw):
    """python -m minifope ARGS from the repository root, its output captured."""
    return subprocess.run([sys.executable, "-m", "minifope", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kw)


def snapshot(folder):
    """{relative path: sha256} of every file under folder."""
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def assert_user_error(result, *words):
    """Exit status 2, one line on stderr holding every word, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]
