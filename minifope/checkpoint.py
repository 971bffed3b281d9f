"""Checkpoints: one .npz archive of plain arrays, written atomically, loaded without pickle.

Layout of DIR/ckpt.npz (every entry a plain array; text is a 0-d unicode array):

    config.json      GPTConfig as JSON text
    vocab.json       the tokenizer as JSON text: data.CharTokenizer's {"chars": ...} or
                     bpe.BPETokenizer's {"bpe": ...} (bpe.tokenizer_from_json reads either)
    state.json       the trainer's state as JSON text: TrainConfig, step, RNG state, data source
    param.<name>     every model parameter       (shapes and dtypes checked against config)
    buffer.<name>    fixed tensors (FoPE coefficients when not learnable)
    optim.<key>      the optimizer state, if any

Loading never runs code from the file (arrays are read with allow_pickle=False, the rest
is JSON), and checks the file against its config before it reads or allocates anything
large, so a damaged or hostile file is refused with a UserError, never a MemoryError (see
load_checkpoint). Writing goes to a temporary file in the same folder that is then renamed
over the old one, so a crash, Ctrl-C or full disk mid-write leaves the previous checkpoint
whole.
"""

import io
import json
import math
import os
import re
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .bpe import tokenizer_from_json
from .config import GPTConfig
from .errors import UserError
from .model import GPT

CKPT_NAME = "ckpt.npz"
JSON_ENTRIES = ("config.json", "vocab.json", "state.json")
# A JSON entry is a 0-d unicode array, 4 bytes a character. A character-level vocabulary
# of 300,000 characters, each escaped as a surrogate pair (12 characters), still fits.
MAX_JSON_BYTES = 16 * 2**20
# numpy refuses .npy headers over 10,000 bytes (max_header_size); with the magic string,
# version and length field before it, a header always fits in the first 16 KiB.
MAX_NPY_HEADER_BYTES = 16 * 2**10
# np.savez stores its members uncompressed, so the uncompressed sizes a checkpoint declares
# add up to about its file's size; np.savez_compressed gains little on float weights. Deflate
# reaches ~1000x, so a file declaring more than 64x its size (1 MiB of slack for tiny files)
# can only be a zip bomb, refused before anything is inflated.
MAX_EXPANSION = 64
EXPANSION_SLACK = 2**20
# Parameters and buffers must have the config's dtype; the optimizer's moments may be
# either of these (optim.t, the step count, is an int64).
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# atomic_write's temporary files: tempfile.mkstemp(prefix=NAME + ".", suffix=".tmp") puts
# 8 random characters from this alphabet between them; a name like ckpt.npz.tmp is not one.
_TEMP_FILE = re.compile(r".+\.[a-z0-9_]{8}\.tmp")


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


def remove_stale_temp_files(folder):
    """Delete the temporary files atomic_write left in `folder` when a crash stopped it
    between creating and renaming one (NAME.xxxxxxxx.tmp); return their paths.

    Call it only while holding the folder's lock: another process's atomic_write in
    progress looks the same.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if _TEMP_FILE.fullmatch(p.name) and p.is_file())
    for p in stale:
        p.unlink()
    return stale


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


def load_checkpoint(path):
    """Load DIR/ckpt.npz (or a .npz path) -> (model, tokenizer, state, optim_state).

    Every problem with the file (missing, truncated, corrupt, inconsistent shapes or dtypes)
    raises UserError with a message that names the file. Nothing large is read or
    allocated until the file has passed these checks, in this order:

    1. the uncompressed sizes its members declare add up to at most MAX_EXPANSION times the
       file's size (a zip bomb stops here); members are stored or deflated, not encrypted;
    2. config.json, vocab.json and state.json are each at most MAX_JSON_BYTES and a JSON
       object; the config passes GPTConfig.validate, which bounds the model's size;
    3. the file holds exactly the tensors the config implies (GPT.param_shapes), plus
       optimizer state for them; their declared sizes add up to no more than the config's;
    4. each tensor's .npy header gives the shape and dtype the config implies, and its
       member's declared size is that header plus that many bytes.

    zipfile never returns more of a member than its declared size, and numpy reads arrays
    from it in bounded chunks, so after these checks memory is bounded by the config.
    """
    path = checkpoint_path(path)
    if not path.exists():
        raise UserError(f"no checkpoint at {path}: train one with `python -m minifope train --out DIR`")
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise _corrupt(path, e) from None
    with archive:
        entries = _entries(archive, path)
        config_dict, _ = _json_entry(archive, entries, "config.json", path)
        state, _ = _json_entry(archive, entries, "state.json", path)
        _, vocab = _json_entry(archive, entries, "vocab.json", path)
        try:
            config = GPTConfig.from_dict(config_dict)
        except (TypeError, ValueError) as e:
            raise UserError(f"{path} holds an invalid config: {e}") from None
        try:
            tokenizer = tokenizer_from_json(vocab)
        except UserError as e:
            raise UserError(f"{path}: {e}") from None
        if tokenizer.vocab_size != config.vocab_size:
            raise UserError(f"{path}: the vocabulary has {tokenizer.vocab_size} {tokenizer.unit}s but the "
                            f"config says vocab_size={config.vocab_size}; the checkpoint is corrupt")
        expected = _check_tensor_entries(entries, config, path)
        for key, (shape, dtypes) in expected.items():
            _check_header(archive, entries[key], key, shape, dtypes, path)
        model = GPT(config)
        optim_state = {}
        for key in expected:
            value = _read_array(archive, entries[key], key, path)
            kind, _, name = key.partition(".")
            if kind == "optim":
                optim_state[name] = value
            else:
                (model.params if kind == "param" else model.buffers)[name][...] = value
    return model, tokenizer, state, optim_state


def _corrupt(path, error, what=None):
    where = f"{path}" if what is None else f"{path} ({what})"
    return UserError(f"{where} is truncated or corrupt and cannot be read "
                     f"({type(error).__name__}: {error})")


def _entries(archive, path):
    """{key: ZipInfo} of the archive's members, which np.savez names KEY.npy.

    Refuses what np.savez never writes and zipfile cannot read within bounds: duplicate
    names, encryption, compression other than none or deflate (zipfile inflates the others
    in one unbounded call), and declared sizes beyond MAX_EXPANSION times the file's.
    """
    infos = archive.infolist()
    names = [info.filename for info in infos]
    if "config.json.npy" not in names:
        raise UserError(f"{path} is not a minifope checkpoint: it has no config.json")
    declared = sum(info.file_size for info in infos)
    limit = MAX_EXPANSION * path.stat().st_size + EXPANSION_SLACK
    if declared > limit:
        raise UserError(f"{path} declares {declared:,} bytes of uncompressed data in a file of "
                        f"{path.stat().st_size:,} bytes; no checkpoint expands that much, so the "
                        "file is corrupt or not a checkpoint (a zip bomb?)")
    entries = {}
    for info in infos:
        key = info.filename.removesuffix(".npy")
        if key == info.filename:
            raise UserError(f"{path}: member {info.filename!r} is not an array; the checkpoint is corrupt")
        if key in entries:
            raise UserError(f"{path}: member {info.filename!r} is repeated; the checkpoint is corrupt")
        if info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise UserError(f"{path}: member {info.filename!r} is encrypted or compressed with a "
                            "method np.savez never uses; the checkpoint is corrupt")
        entries[key] = info
    return entries


def _json_entry(archive, entries, key, path):
    """(the JSON object, its text) stored under `key`: a 0-d unicode array of bounded size."""
    if key not in entries:
        raise UserError(f"{path} is not a minifope checkpoint: it has no {key}")
    if entries[key].file_size > MAX_JSON_BYTES:
        raise UserError(f"{path}: {key} declares {entries[key].file_size:,} bytes, more than the "
                        f"{MAX_JSON_BYTES:,} a checkpoint's JSON entry may hold; the checkpoint is corrupt")
    _check_header(archive, entries[key], key, (), None, path)
    text = str(_read_array(archive, entries[key], key, path)[()])
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise UserError(f"{path}: {key} is not valid JSON ({e}); the checkpoint is corrupt") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}: {key} is not a JSON object; the checkpoint is corrupt")
    return value, text


def _check_tensor_entries(entries, config, path):
    """{key: (shape, allowed dtypes)} of the tensors in the file, once they are those the config
    implies: every param.* and buffer.*, and optim.* entries for the parameters if any."""
    params, buffers = GPT.param_shapes(config)
    dtype = (np.dtype(config.dtype),)
    allowed = {f"param.{n}": (s, dtype) for n, s in params.items()}
    allowed.update({f"buffer.{n}": (s, dtype) for n, s in buffers.items()})
    required = set(allowed)
    allowed["optim.t"] = ((), (np.dtype(np.int64),))
    allowed.update({f"optim.{m}.{n}": (s, FLOAT_DTYPES) for n, s in params.items() for m in "mv"})
    present = set(entries) - set(JSON_ENTRIES)
    missing, unexpected = sorted(required - present), sorted(present - set(allowed))
    if missing or unexpected:
        raise UserError(f"{path}: tensors do not match the config (missing: {_some(missing)}, "
                        f"unexpected: {_some(unexpected)})")
    expected = {key: allowed[key] for key in sorted(present)}
    declared = sum(entries[key].file_size for key in expected)
    implied = sum(MAX_NPY_HEADER_BYTES + math.prod(shape) * max(d.itemsize for d in dtypes)
                  for shape, dtypes in expected.values())
    if declared > implied:
        raise UserError(f"{path}: its tensors declare {declared:,} bytes, more than the {implied:,} "
                        "their shapes in the config take; the checkpoint is corrupt")
    return expected


def _some(names, shown=5):
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _check_header(archive, info, key, shape, dtypes, path):
    """Check the .npy header of member `info`, reading only its first bytes: the array has
    `shape` and one of `dtypes` (None: a unicode string), and the member's declared size is
    the header plus the array's bytes."""
    try:
        with archive.open(info) as f:
            head = io.BytesIO(f.read(min(info.file_size, MAX_NPY_HEADER_BYTES)))
        version = np.lib.format.read_magic(head)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy format version {version}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        got_shape, _, got_dtype = read_header(head)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise _corrupt(path, e, key) from None
    if dtypes is None and (got_shape != () or got_dtype.kind != "U"):
        raise UserError(f"{path}: {key} is {got_dtype}{list(got_shape)}, not text; "
                        "the checkpoint is corrupt")
    if dtypes is not None and (got_shape != tuple(shape) or got_dtype not in dtypes):
        needs = " or ".join(str(d) for d in dtypes)
        raise UserError(f"{path}: {key} is {got_dtype}{list(got_shape)}, the config "
                        f"needs {needs}{list(shape)}")
    size = head.tell() + math.prod(got_shape) * got_dtype.itemsize
    if info.file_size != size:
        raise UserError(f"{path}: {key} declares {info.file_size:,} bytes but its header "
                        f"describes {size:,}; the checkpoint is corrupt")


def _read_array(archive, info, key, path):
    """The array in member `info`, whose header _check_header has checked."""
    try:
        with archive.open(info) as f:
            return np.lib.format.read_array(f, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as e:
        raise _corrupt(path, e, key) from None
