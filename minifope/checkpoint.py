"""Checkpoints: one .npz archive of plain arrays, written atomically, loaded without pickle.

Layout of DIR/ckpt.npz (every entry a plain array; text is a 0-d unicode array):

    config.json      GPTConfig as JSON text
    vocab.json       the CharTokenizer as JSON text
    state.json       the trainer's state as JSON text: TrainConfig, step, RNG state, data source
    param.<name>     every model parameter       (shapes and dtypes checked against config)
    buffer.<name>    fixed tensors (FoPE coefficients when not learnable)
    optim.<key>      the optimizer state, if any

Loading never runs code from the file: np.load(..., allow_pickle=False), JSON for the
rest. Writing goes to a temporary file in the same folder that is then renamed over the
old one, so a crash or Ctrl-C mid-write leaves the previous checkpoint whole.
"""

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .config import GPTConfig
from .data import CharTokenizer
from .errors import UserError
from .model import GPT

CKPT_NAME = "ckpt.npz"


def checkpoint_path(path):
    """DIR -> DIR/ckpt.npz; a path to a file is used as it is."""
    path = Path(path)
    return path / CKPT_NAME if path.is_dir() or path.suffix != ".npz" else path


def atomic_write(path, write):
    """Call write(file_object) on a temporary file beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual mode
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_checkpoint(path, model, tokenizer, state=None, optim_state=None):
    """Write model, vocabulary, trainer state and optimizer state to `path` atomically."""
    arrays = {
        "config.json": np.array(json.dumps(model.config.to_dict())),
        "vocab.json": np.array(tokenizer.to_json()),
        "state.json": np.array(json.dumps(state or {})),
    }
    arrays.update({f"param.{n}": p for n, p in model.params.items()})
    arrays.update({f"buffer.{n}": b for n, b in model.buffers.items()})
    arrays.update({f"optim.{k}": v for k, v in (optim_state or {}).items()})
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _json_entry(archive, key, path):
    if key not in archive.files:
        raise UserError(f"{path} is not a minifope checkpoint: it has no {key}")
    try:
        return json.loads(str(archive[key][()]))
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: {key} is not valid JSON ({e}); the checkpoint is corrupt") from None


def load_checkpoint(path):
    """Load DIR/ckpt.npz (or a .npz path) -> (model, tokenizer, state, optim_state).

    Every problem with the file (missing, truncated, corrupt, inconsistent shapes or dtypes)
    raises UserError with a message that names the file.
    """
    path = checkpoint_path(path)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: train one with `python -m minifope train --out DIR`")
    try:
        with np.load(path, allow_pickle=False) as archive:
            config_dict = _json_entry(archive, "config.json", path)
            vocab = str(archive["vocab.json"][()]) if "vocab.json" in archive.files else None
            state = _json_entry(archive, "state.json", path)
            arrays = {k: archive[k] for k in archive.files if not k.endswith(".json")}
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise UserError(f"{path} is truncated or corrupt and cannot be read ({type(e).__name__}: {e})") from None
    if vocab is None:
        raise UserError(f"{path} is not a minifope checkpoint: it has no vocab.json")
    try:
        config = GPTConfig.from_dict(config_dict)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path} holds an invalid config: {e}") from None
    tokenizer = CharTokenizer.from_json(vocab)
    if tokenizer.vocab_size != config.vocab_size:
        raise UserError(f"{path}: the vocabulary has {tokenizer.vocab_size} characters but the "
                        f"config says vocab_size={config.vocab_size}; the checkpoint is corrupt")
    model = GPT(config)
    for prefix, target in (("param.", model.params), ("buffer.", model.buffers)):
        stored = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        missing, extra = sorted(set(target) - set(stored)), sorted(set(stored) - set(target))
        if missing or extra:
            raise UserError(f"{path}: tensors do not match the config (missing: {missing or 'none'}, "
                            f"unexpected: {extra or 'none'})")
        for name, value in stored.items():
            if value.shape != target[name].shape or value.dtype != target[name].dtype:
                raise UserError(f"{path}: {prefix}{name} is {value.dtype}{list(value.shape)}, the config "
                                f"needs {target[name].dtype}{list(target[name].shape)}")
            target[name][...] = value
    optim_state = {k[len("optim."):]: v for k, v in arrays.items() if k.startswith("optim.")}
    return model, tokenizer, state, optim_state
