"""A checkpoint is untrusted input, and a config bounds the model before anything is allocated.

Whatever a damaged or hostile checkpoint holds, loading it ends in one UserError that names
the file: never a traceback, a MemoryError, or a zip bomb inflated in memory. Each hostile
file here is built for real, by hand where the zip itself must lie (write_zip). The cases
that would exhaust memory if a check regressed load in a subprocess whose address space is
capped at MEMORY_LIMIT, so that a regression fails the test instead of swapping the machine.
"""

import errno
import io
import json
import math
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest

from helpers import ROOT
from minifope.checkpoint import MAX_JSON_BYTES, load_checkpoint, remove_stale_temp_files, save_checkpoint
from minifope.config import MAX_WEIGHTS, GPTConfig
from minifope.data import CharTokenizer
from minifope.errors import UserError
from minifope.model import GPT
from minifope.optim import AdamW

SMALL = dict(vocab_size=5, n_layer=1, n_head=2, d_model=16, train_len=16)
# Python, NumPy and minifope map ~150 MB; loading SMALL needs little more. Every memory
# bomb below would need more than this cap.
MEMORY_LIMIT = 2**30


# --- building checkpoints, honest and not ----------------------------------------------------------

@pytest.fixture
def good(tmp_path):
    """The members of a real checkpoint of a SMALL model with optimizer state: {name: bytes}."""
    model = GPT(GPTConfig(**SMALL))
    path = tmp_path / "good.npz"
    save_checkpoint(path, model, CharTokenizer.from_text("abcde"), {"step": 1},
                    AdamW(model.params).state_dict())
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def npy(array):
    """The .npy bytes np.savez stores for `array`."""
    out = io.BytesIO()
    np.lib.format.write_array(out, np.asarray(array), allow_pickle=False)
    return out.getvalue()


def npy_header(shape, descr="<f4"):
    """Only the .npy header of an array: what a file can claim without holding the data."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def json_npy(value):
    return npy(np.array(value if isinstance(value, str) else json.dumps(value)))


def stored(name, payload):
    """A zip member holding `payload` uncompressed, as np.savez writes them."""
    return dict(name=name, data=payload, method=zipfile.ZIP_STORED, size=len(payload),
                crc=zlib.crc32(payload))


def write_zip(path, entries):
    """Write a zip archive by hand, so that a member can declare any size, CRC, flags and
    compression method: entries are dicts of name, data (the bytes stored), method, size
    (the uncompressed size declared), crc and optionally flags."""
    out, central = io.BytesIO(), []
    for e in entries:
        offset, name = out.tell(), e["name"].encode()
        # flags, method, time, date (1980-01-01), CRC-32, compressed size, size, name length
        common = (e.get("flags", 0), e["method"], 0, 0x21, e["crc"], len(e["data"]), e["size"], len(name))
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, *common, 0) + name + e["data"])
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, *common, 0, 0, 0, 0, 0,
                                   offset) + name)
    start = out.tell()
    out.write(b"".join(central))
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                          out.tell() - start, start, 0))
    path.write_bytes(out.getvalue())
    return path


def checkpoint_with(path, good, changes=None, extra=()):
    """The good checkpoint at `path`, with members replaced ({key: bytes}, key without .npy)
    or dropped ({key: None}), and `extra` zip entries after them."""
    members = {name.removesuffix(".npy"): data for name, data in good.items()}
    members.update(changes or {})
    entries = [stored(key + ".npy", data) for key, data in members.items() if data is not None]
    return write_zip(path, entries + list(extra))


def zeros_deflated(prefix, n_mib):
    """A raw deflate stream of `prefix` and then n_mib MiB of zeros, built from one compressed
    MiB repeated (a full flush makes every MiB compress to the same bytes): ~1 KB a MiB."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = z.compress(prefix) + z.flush(zlib.Z_FULL_FLUSH)
    mib = z.compress(bytes(2**20)) + z.flush(zlib.Z_FULL_FLUSH)
    return head + mib * n_mib + z.compress(b"") + z.flush()


def absurd_config(path, good, fields):
    config = json.loads(str(np.load(io.BytesIO(good["config.json.npy"]))[()]))
    return checkpoint_with(path, good, {"config.json": json_npy({**config, **fields})})


def terabyte_header(path, good, key="param.wte"):
    """`key`'s header declares a (10^6, 10^6) float32 array, 4 TB; 64 bytes of data follow."""
    return checkpoint_with(path, good, {key: npy_header((10**6, 10**6)) + bytes(64)})


def zip_bomb(path, good):
    """param.wte inflates to a 1 GiB array of zeros from about 1 MB of deflate stream."""
    header = npy_header((2**28,))
    crc = zlib.crc32(header)
    for _ in range(1024):
        crc = zlib.crc32(bytes(2**20), crc)
    bomb = dict(name="param.wte.npy", data=zeros_deflated(header, 1024), method=zipfile.ZIP_DEFLATED,
                size=len(header) + 2**30, crc=crc)
    return checkpoint_with(path, good, {"param.wte": None}, extra=[bomb])


def refused(path):
    """The message of the UserError load_checkpoint(path) raises; its text names the file."""
    with pytest.raises(UserError) as e:
        load_checkpoint(path)
    message = str(e.value)
    assert str(path) in message and "\n" not in message, message
    return message


def in_capped_process(*argv):
    """python ARGV from the repository root, in a process that may map at most MEMORY_LIMIT."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, preexec_fn=cap, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})


LOAD = """import sys
from minifope.checkpoint import load_checkpoint
from minifope.errors import UserError
try:
    load_checkpoint(sys.argv[1])
except UserError as e:
    print(e)
    sys.exit(2)
"""


def refused_within_memory_limit(path):
    """The UserError message of load_checkpoint(path), run under MEMORY_LIMIT."""
    result = in_capped_process("-c", LOAD, path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, (result.returncode, result.stderr)
    message = result.stdout.strip()
    assert str(path) in message and "\n" not in message, message
    return message


# --- 1. a config that asks for absurd sizes ----------------------------------------------------------

@pytest.mark.parametrize("fields, words", [
    (dict(d_ff=10**10), ["weights", "MAX_WEIGHTS"]),
    (dict(n_layer=10**6), ["n_layer", "MAX_LAYERS"]),
    (dict(pe="fope", fope_dim=10**9), ["fope_dim", "MAX_FOPE_DIM"]),
])
def test_a_checkpoint_whose_config_asks_for_absurd_sizes_is_refused_before_a_model_is_built(
        tmp_path, good, fields, words):
    message = refused_within_memory_limit(absurd_config(tmp_path / "ckpt.npz", good, fields))
    assert "invalid config" in message and all(w in message for w in words), message


# --- 2. an array header that declares more than the file holds ---------------------------------------

@pytest.mark.parametrize("key", ["param.wte", "optim.m.wte", "optim.t"])
def test_a_header_declaring_a_terabyte_array_is_refused_before_it_is_read(tmp_path, good, key):
    message = refused_within_memory_limit(terabyte_header(tmp_path / "ckpt.npz", good, key))
    assert f"{key} is float32[1000000, 1000000], the config needs" in message


def test_a_json_entry_whose_header_declares_two_gigabytes_of_text_is_refused(tmp_path, good):
    path = checkpoint_with(tmp_path / "ckpt.npz", good,
                           {"config.json": npy_header((), "<U500000000") + bytes(64)})
    message = refused_within_memory_limit(path)
    assert "config.json declares" in message and "its header describes 2,000,000,128" in message


def test_a_member_shorter_than_its_header_says_is_refused(tmp_path, good):
    wte = good["param.wte.npy"]
    message = refused(checkpoint_with(tmp_path / "ckpt.npz", good, {"param.wte": wte[:-4]}))
    assert "param.wte declares" in message and "corrupt" in message


# --- 3. decompression bounded before anything inflates ------------------------------------------------

def test_a_zip_bomb_is_refused_before_anything_is_inflated(tmp_path, good):
    path = zip_bomb(tmp_path / "ckpt.npz", good)
    assert path.stat().st_size < 2 * 2**20  # a small file...
    message = refused_within_memory_limit(path)  # ...that would inflate to 1 GiB
    assert "zip bomb" in message and "declares 1,073," in message


def test_tensors_declaring_more_bytes_than_their_shapes_take_are_refused(tmp_path, good):
    # A 4 MiB norm_f stored uncompressed: no zip bomb, but the config says 16 floats.
    path = checkpoint_with(tmp_path / "ckpt.npz", good, {"param.norm_f": npy(np.zeros(2**20, np.float32))})
    message = refused(path)
    assert "more than" in message and "shapes in the config take" in message


def test_a_deflate_stream_longer_than_its_declared_size_is_inflated_only_to_that_size(tmp_path, good):
    # zipfile stops a member at its declared size and inflates in chunks of what is asked
    # for: wte's true bytes load, and the 256 MiB of zeros after them in the stream never do.
    wte = good["param.wte.npy"]
    long = dict(name="param.wte.npy", data=zeros_deflated(wte, 256), method=zipfile.ZIP_DEFLATED,
                size=len(wte), crc=zlib.crc32(wte))
    path = checkpoint_with(tmp_path / "ckpt.npz", good, {"param.wte": None}, extra=[long])
    tracemalloc.start()
    try:
        model, _, _, _ = load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(model.params["wte"], np.load(io.BytesIO(wte)))
    assert peak < 32 * 2**20, f"loading held {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("how, words", [
    ("repeated", ["'param.wte.npy' is repeated"]),
    ("encrypted", ["encrypted"]),
    ("bzip2", ["compressed with a method np.savez never uses"]),
    ("not an array", ["'notes.txt' is not an array"]),
])
def test_zip_members_np_savez_never_writes_are_refused(tmp_path, good, how, words):
    wte = good["param.wte.npy"]
    extra = {"repeated": stored("param.wte.npy", wte),
             "encrypted": {**stored("param.wte.npy", wte), "flags": 0x1},
             "bzip2": {**stored("param.wte.npy", wte), "method": zipfile.ZIP_BZIP2},
             "not an array": stored("notes.txt", b"hello")}[how]
    if how == "bzip2":
        import bz2

        extra["data"] = bz2.compress(wte)
    drop = {} if how in ("repeated", "not an array") else {"param.wte": None}
    message = refused(checkpoint_with(tmp_path / "ckpt.npz", good, drop, extra=[extra]))
    assert all(w in message for w in words), message


# --- 4. the JSON entries ------------------------------------------------------------------------------

@pytest.mark.parametrize("key, payload, words", [
    ("config.json", json_npy([1, 2]), ["config.json is not a JSON object"]),
    ("config.json", json_npy(7), ["config.json is not a JSON object"]),
    ("config.json", npy(np.zeros(3)), ["config.json is float64[3], not text"]),
    ("state.json", json_npy([1]), ["state.json is not a JSON object"]),
    ("state.json", json_npy("[" * 100_000 + "]" * 100_000), ["state.json is not valid JSON"]),
    ("vocab.json", json_npy(["abcde"]), ["vocab.json is not a JSON object"]),
    ("vocab.json", json_npy({"chars": "aab"}), ["distinct characters"]),
    ("config.json", json_npy({"pe": "rope", "pad": "x" * (MAX_JSON_BYTES // 4)}), ["may hold"]),
])
def test_a_json_entry_that_is_not_a_bounded_json_object_is_refused(tmp_path, good, key, payload, words):
    message = refused(checkpoint_with(tmp_path / "ckpt.npz", good, {key: payload}))
    assert all(w in message for w in words), message


@pytest.mark.parametrize("fields, words", [
    (dict(seed=-1), ["seed"]),
    (dict(fope_sigma=math.inf), ["fope_sigma", "finite"]),
    (dict(init_std=math.nan), ["init_std", "finite"]),
    (dict(rope_theta="10000"), ["rope_theta"]),
    (dict(n_layer="1"), ["n_layer"]),
    (dict(rope_scale=4.0), ["rope_scale only takes effect"]),
    (dict(d_model=16.0), ["d_model"]),
    (dict(label_smoothing=0.1), ["unknown config field"]),
])
def test_a_config_with_a_bad_value_is_refused_as_invalid(tmp_path, good, fields, words):
    message = refused(absurd_config(tmp_path / "ckpt.npz", good, fields))
    assert "invalid config" in message and all(w in message for w in words), message


# --- 5. what was refused before still is ----------------------------------------------------------

class MakesAFolder:
    """Unpickling this runs os.mkdir(path): proof that a load ran code from the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.parametrize("changes, words", [
    ({"param.wte": None}, ["missing: param.wte"]),
    ({"param.extra": npy(np.zeros(3, np.float32))}, ["unexpected: param.extra"]),
    ({"optim.z.wte": npy(np.zeros(3, np.float32))}, ["unexpected: optim.z.wte"]),
    ({"param.wte": npy(np.zeros((5, 16)))}, ["param.wte is float64[5, 16], the config needs float32[5, 16]"]),
    ({"optim.t": npy(np.zeros((), np.float32))}, ["optim.t is float32[], the config needs int64[]"]),
    ({"vocab.json": json_npy({"chars": "abcdef"})}, ["6 characters", "vocab_size=5"]),
    ({"config.json": None}, ["not a minifope checkpoint", "config.json"]),
    ({"state.json": None}, ["not a minifope checkpoint", "state.json"]),
])
def test_tensors_and_entries_that_do_not_fit_the_config_are_refused(tmp_path, good, changes, words):
    message = refused(checkpoint_with(tmp_path / "ckpt.npz", good, changes))
    assert all(w in message for w in words), message


def test_a_pickled_object_array_is_refused_without_running_it(tmp_path, good):
    out = io.BytesIO()
    np.lib.format.write_array(out, np.array([MakesAFolder(tmp_path / "ran")], dtype=object),
                              allow_pickle=True)
    message = refused(checkpoint_with(tmp_path / "ckpt.npz", good, {"param.wte": out.getvalue()}))
    assert "param.wte is object[1]" in message
    assert not (tmp_path / "ran").exists()


def test_a_good_checkpoint_with_optimizer_state_loads_whole(tmp_path, good):
    model, tokenizer, state, optim_state = load_checkpoint(checkpoint_with(tmp_path / "ckpt.npz", good))
    assert tokenizer.chars == "abcde" and state == {"step": 1}
    assert set(optim_state) == {"t"} | {f"{m}.{n}" for n in model.params for m in "mv"}
    np.testing.assert_array_equal(model.params["lm_head"], np.load(io.BytesIO(good["param.lm_head.npy"])))


# --- through the real command line ----------------------------------------------------------------

@pytest.mark.parametrize("build, words", [
    (zip_bomb, ["zip bomb"]),
    (terabyte_header, ["param.wte is float32[1000000, 1000000]"]),
    (lambda path, good: absurd_config(path, good, dict(d_ff=10**10)), ["invalid config", "MAX_WEIGHTS"]),
])
def test_sample_refuses_a_hostile_checkpoint_in_one_line_within_bounded_memory(tmp_path, good, build, words):
    path = build(tmp_path / "ckpt.npz", good)
    result = in_capped_process("-m", "minifope", "sample", "--ckpt", path, "--chars", "1")
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(path) in lines[0] and all(w in lines[0] for w in words), lines[0]


# --- GPTConfig: bounded sizes and well-typed, finite values ---------------------------------------

@pytest.mark.parametrize("fields", [dict(d_ff=10**10), dict(n_layer=10**6), dict(pe="fope", fope_dim=10**9),
                                    dict(pe="fope", d_model=2**22, n_head=2), dict(train_len=10**400)])
def test_absurd_sizes_are_refused_at_once_without_allocating(fields):
    start = time.perf_counter()
    with pytest.raises(ValueError):
        GPTConfig(**fields)
    assert time.perf_counter() - start < 0.5


def test_a_model_over_max_weights_is_refused_with_its_count():
    V, C, L, F = 10**8, 128, 4, 344  # F: the default hidden_dim of d_model 128
    count = 2 * V * C + C + L * (2 * C + 4 * C * C + 3 * C * F)
    assert count > MAX_WEIGHTS
    with pytest.raises(ValueError, match=f"would hold {count:,} weights"):
        GPTConfig(vocab_size=V)


@pytest.mark.parametrize("seed", [-1, True, 1.5, "0", None])
def test_seed_must_be_an_integer_at_least_zero(seed):
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        GPTConfig(seed=seed)


@pytest.mark.parametrize("field", ["rope_theta", "rope_scale", "fope_sigma", "init_std"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 10**400], ids=["nan", "inf", "-inf", "1e400"])
def test_float_fields_must_be_finite(field, value):
    fields = dict(rope_scaling="yarn") if field == "rope_scale" else {}
    with pytest.raises(ValueError, match=f"{field} must be a finite number"):
        GPTConfig(**fields, **{field: value})


@pytest.mark.parametrize("field, value", [
    ("rope_theta", "1e4"), ("fope_sigma", None), ("init_std", [0.02]), ("vocab_size", True),
    ("n_layer", 4.0), ("rope_clip", "yes"), ("fope_clip", 1), ("pe", ["rope"]),
])
def test_a_value_of_the_wrong_type_is_a_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field if field != "pe" else "pe must be one of"):
        GPTConfig(**{field: value})


def test_rope_scale_takes_effect_only_with_a_scaling():
    with pytest.raises(ValueError, match="rope_scale only takes effect with rope_scaling pi, ntk or yarn"):
        GPTConfig(rope_scale=4.0)
    assert GPTConfig(rope_scaling="yarn", rope_scale=4.0).rope_scale == 4.0


@pytest.mark.parametrize("fields", [
    dict(pe="rope"), dict(pe="fope", fope_dim=64), dict(pe="fope", fope_dim=64, fope_learnable=True),
    dict(pe="fope", fope_clip=False), dict(pe="alibi"), dict(pe="nope"), dict(pe="sinusoidal"),
], ids=["rope", "fope", "fope-learnable", "fope-unclipped", "alibi", "nope", "sinusoidal"])
def test_param_shapes_and_num_weights_are_those_of_a_real_model(fields):
    config = GPTConfig(vocab_size=13, n_layer=2, n_head=2, d_model=32, train_len=64, **fields)
    model = GPT(config)
    params, buffers = GPT.param_shapes(config)
    assert params == {name: p.shape for name, p in model.params.items()}
    assert buffers == {name: b.shape for name, b in model.buffers.items()}
    assert config.num_weights() == sum(map(math.prod, [*params.values(), *buffers.values()]))


# --- writing: a full disk, and the temporary files a crash leaves -------------------------------------

@pytest.mark.parametrize("where", ["while writing", "when flushing to disk"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path, monkeypatch, where):
    model = GPT(GPTConfig(**SMALL))
    tokenizer = CharTokenizer.from_text("abcde")
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, model, tokenizer, {"step": 1})
    before = path.read_bytes()
    full = OSError(errno.ENOSPC, "No space left on device")

    def savez_until_full(f, **arrays):
        f.write(b"PK\x03\x04" + bytes(4096))
        raise full

    def fsync(fd):
        raise full

    if where == "while writing":
        monkeypatch.setattr(np, "savez", savez_until_full)
    else:
        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as e:
        save_checkpoint(path, model, tokenizer, {"step": 2})
    assert e.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]


def test_remove_stale_temp_files_removes_only_what_atomic_write_leaves(tmp_path):
    leftovers = []
    for name in ("ckpt.npz", "log.jsonl"):  # atomic_write's own naming
        fd, tmp = tempfile.mkstemp(dir=tmp_path, prefix=name + ".", suffix=".tmp")
        os.close(fd)
        leftovers.append(tmp_path / os.path.basename(tmp))
    keep = ["ckpt.npz", "log.jsonl", "notes.tmp.txt", "draft.tmp", "ckpt.npz.NOT-MINE.tmp", "ckpt.npz.tmp",
            "log.jsonl.backup.tmp"]
    for name in keep:
        (tmp_path / name).write_text("keep me")
    (tmp_path / "folder.abcdefgh.tmp").mkdir()
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(leftovers)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep + ["folder.abcdefgh.tmp"])
    assert remove_stale_temp_files(tmp_path) == []
