"""The training loop both trainers share: start a run, step it, evaluate, save, stop.

    run = prepare_run(model_config, tc, folder, train_text, val_text, ...)  # checks, builds
    records = train_loop(run, tc, folder, forward_backward=..., update=..., evaluate=..., save=...)

The NumPy trainer (train.py) and the torch trainer (torch/train.py) each supply four
callables, their own engine's step; everything else is written once, here:

- prepare_run: resume the checkpoint (its saved state checked, a conflicting config or a
  changed training text refused), or start from another run's weights (init_from), or
  build a fresh model and vocabulary; then encode the texts and check they fit. It reads
  and builds but writes nothing, so a run whose inputs are wrong is refused before
  anything on disk changes.
- train_loop: per step, the batch (get_batch from the run's seeded RNG, passkey rows at
  the end), forward_backward(x, y) -> loss, a NaN or inf stop, update(lr) -> grad norm;
  a progress bar (or a report to an experiment's display); the log; every eval_interval
  steps and at the end, evaluate() -> validation loss (logged with the UTC wall clock) and
  a checkpoint; Ctrl-C or SIGTERM finishes the step, saves, and raises Stopped.

A NaN or inf loss stops the run before anything is saved, so the last good checkpoint
stays on disk; it may then be resumed with a lower --lr or --grad-clip.
"""

import dataclasses
import hashlib
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from tqdm.auto import tqdm

from .bpe import BPETokenizer, check_vocab_size
from .config import is_finite_number, is_int
from .data import CharTokenizer, get_batch
from .errors import UserError
from .model import GPT
from .runfolder import notice


BPE_VOCAB = 512


@dataclass
class TrainConfig:
    """How to train. The defaults train the default model on a 2-core laptop in minutes."""

    steps: int = 2000
    batch_size: int = 32
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int | None = None  # None: min(100, steps // 10)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_batches: int = 16
    log_interval: int = 10
    seed: int = 0
    passkey_frac: float = 0.0  # share of each batch replaced by passkey prompts (passkey.py)
    passkey_digits: int = 5
    passkey_loss: str = "all"  # 'answer': passkey rows carry loss on their answer only
    micro_batches: int = 2  # each batch as this many row blocks (at most batch_size) on threads: parallel.py
    tokenizer: str = "char"  # 'char': one token per character; 'bpe': byte-level BPE (bpe.py)
    bpe_vocab: int = BPE_VOCAB  # with tokenizer='bpe': its tokens (256 bytes + merges), learned on the training text

    def __post_init__(self):
        if self.warmup is None and is_int(self.steps):
            self.warmup = min(100, self.steps // 10)
        for name in ("steps", "batch_size", "eval_interval", "eval_batches", "log_interval",
                     "micro_batches"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup", "seed"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "passkey_frac"):
            value = getattr(self, name)
            if not is_finite_number(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.warmup > self.steps:
            raise ValueError(f"warmup must lie in [0, steps={self.steps}], got {self.warmup}")
        if not self.lr > 0:
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must lie in [0, lr={self.lr}], got {self.min_lr!r}")
        if not 0.0 <= self.passkey_frac <= 1.0:
            raise ValueError(f"passkey_frac must lie in [0, 1], got {self.passkey_frac!r}")
        if self.passkey_loss not in ("all", "answer", "keys"):
            raise ValueError(f"passkey_loss must be 'all', 'answer' or 'keys', got {self.passkey_loss!r}")
        if not is_int(self.passkey_digits) or not 1 <= self.passkey_digits <= 9:
            raise ValueError(f"passkey_digits must be an integer in 1..9, got {self.passkey_digits!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0 (grad_clip 0 turns clipping off)")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        try:
            check_vocab_size(self.bpe_vocab)
        except UserError as e:
            raise ValueError(str(e)) from None


TOKENIZERS = ("char", "bpe")

# On --resume these may differ from the checkpoint: steps (train further), how often to
# evaluate and log, and what a diverging run needs to go on (a lower rate or a tighter clip).
# Every other TrainConfig field must match, or the resumed run would not be the same run.
RESUME_MAY_CHANGE = ("steps", "eval_interval", "log_interval", "lr", "min_lr", "grad_clip")


# --- a checkpoint's trainer state ----------------------------------------------------------------

def saved_train_config(state, path):
    """The TrainConfig fields a checkpoint's state.json holds, checked: a field this version
    does not know (a newer minifope's) or a value of the wrong kind is refused."""
    saved = state.get("train_config", {})
    if not isinstance(saved, dict):
        raise UserError(f"{path}: state.json's train_config is not an object; the checkpoint is damaged")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise UserError(f"{path}: its train_config has field(s) this minifope does not know "
                        f"({', '.join(unknown)}): written by a newer version? Upgrade minifope")
    try:
        TrainConfig(**saved)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: its train_config is damaged ({e})") from None
    return saved


def resume_state(state, path):
    """(step, rng state, saved TrainConfig fields) of a checkpoint to resume, checked before
    anything uses them."""
    step, rng_state = state.get("step"), state.get("rng")
    if step is None or rng_state is None:
        raise UserError(f"{path} holds no trainer state (step and RNG) to resume from; start a new "
                        "run from its weights with --init-from instead")
    if not is_int(step) or step < 0:
        raise UserError(f"{path}: state.json's step is {step!r}, not an integer >= 0; "
                        "the checkpoint is damaged")
    try:
        np.random.default_rng().bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        raise UserError(f"{path}: state.json's rng is not a PCG64 state ({type(e).__name__}); "
                        "the checkpoint is damaged") from None
    for name in ("data", "init_from", "data_sha256"):
        if state.get(name) is not None and not isinstance(state[name], str):
            raise UserError(f"{path}: state.json's {name} is {state[name]!r}, not text; "
                            "the checkpoint is damaged")
    return step, rng_state, saved_train_config(state, path)


def config_conflicts(saved_model, saved_train, model_config, train_config, data_name, saved_data,
                     may_change=RESUME_MAY_CHANGE):
    """Where a checkpoint's configs and data differ from the ones asked for: a list of
    'field: checkpoint X, asked Y' (TrainConfig fields in may_change are not compared)."""
    conflicts = []
    for name, value in dataclasses.asdict(model_config).items():
        if name not in ("vocab_size", "attn_impl", "attn_chunk") and saved_model.get(name) != value:
            conflicts.append(f"{name}: checkpoint {saved_model.get(name)!r}, asked {value!r}")
    for name, value in dataclasses.asdict(train_config).items():
        # a field newer than the checkpoint is not compared: micro_batches, say, which
        # changes only the float rounding of the same gradient
        if name not in may_change and saved_train.get(name, value) != value:
            conflicts.append(f"{name}: checkpoint {saved_train[name]!r}, asked {value!r}")
    if data_name is not None and saved_data is not None and data_name != saved_data:
        conflicts.append(f"data: checkpoint {saved_data!r}, asked {data_name!r}")
    return conflicts


def check_resume(saved_model, saved_train, model_config, train_config, data_name, saved_data):
    """Refuse to resume a checkpoint under configs that differ from its own."""
    conflicts = config_conflicts(saved_model, saved_train, model_config, train_config, data_name,
                                 saved_data)
    if conflicts:
        raise UserError("--resume with a config that differs from the checkpoint: "
                        + "; ".join(conflicts) + ". Drop those options or train into a new --out")


def data_fingerprint(train_text, val_text):
    """sha256 of the training and validation text: a resumed run checks it trains on the same."""
    digest = hashlib.sha256(train_text.encode())
    digest.update(b"\0")
    digest.update(val_text.encode())
    return digest.hexdigest()


# --- where a run starts ----------------------------------------------------------------------

def passkey_chars():
    """Every character a passkey prompt and its answer can contain."""
    from .passkey import FILLER, NEEDLE, QUESTION, TASK

    return "".join(sorted(set(TASK + FILLER + NEEDLE.format(key="") + QUESTION + " .0123456789\n")))


def available_memory():
    """Bytes of memory free for a new model: MemAvailable on Linux, else the free pages,
    else None (unknown: nothing is refused)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(config):
    """Refuse a model whose weights, gradients and two AdamW moments alone exceed the memory
    this machine has free: better one line now than a MemoryError, or the kernel's OOM
    killer, halfway through building it. (Activations come on top; this is a floor.)"""
    free = available_memory()
    need = 4 * config.num_weights() * np.dtype(config.dtype).itemsize
    if free is not None and need > free:
        raise UserError(f"this model has {config.num_weights():,} weights: training it needs at least "
                        f"{need / 2**30:.1f} GiB for weights, gradients and optimizer state, and "
                        f"this machine has {free / 2**30:.1f} GiB free. Choose smaller sizes")


def init_model_from(path, model_config):
    """A GPT with model_config whose parameters come from the checkpoint at `path`.

    For continuing training under another config (a longer train_len, YaRN scaling, or
    FoPE in place of RoPE): every parameter the new model shares with the checkpoint is
    copied; the new embedding's own weights the checkpoint lacks (FoPE's coefficients) keep
    their fresh init. FoPE's coefficients of another shape (a longer train_len lowers the clip
    floor, so more frequencies F; another D) keep the checkpoint's values where the two
    overlap (the first frequencies and rotating pairs) and their fresh init elsewhere, as the
    FoPE authors' checkpoint loader expands them. Returns (model, tokenizer).
    """
    from .checkpoint import load_checkpoint

    source, tokenizer, _, _ = load_checkpoint(path)
    config = dataclasses.replace(model_config, vocab_size=source.config.vocab_size)
    check_memory(config)
    model = GPT(config)
    embedding_weights = {f"blocks.{l}.{name}" for l in range(config.n_layer) for name in model.pe.block_shapes()}
    theirs = {**source.params, **source.buffers}  # FoPE's coefficients: buffers unless learnable
    for name, p in {**model.params, **model.buffers}.items():
        if name in theirs and theirs[name].shape == p.shape:
            p[...] = theirs[name]
        elif name in theirs and name in embedding_weights and theirs[name].ndim == p.ndim:
            overlap = tuple(slice(0, min(a, b)) for a, b in zip(theirs[name].shape, p.shape))
            p[overlap] = theirs[name][overlap]
        elif name not in embedding_weights:
            raise UserError(f"cannot start from {path}: its {name} does not fit the new config "
                            "(d_model, n_layer, n_head and vocabulary must stay the same)")
    return model, tokenizer


@dataclass
class Run:
    """A run ready to train: the NumPy model (the torch trainer copies it), its vocabulary and
    encoded texts, and where it stands (step 0 and the seed's RNG unless resuming)."""

    model: GPT
    tokenizer: CharTokenizer
    train_data: np.ndarray
    val_data: np.ndarray
    step: int
    rng: np.random.Generator
    data_name: str | None
    data_sha256: str
    init_from: str | None
    optim_state: dict = field(default_factory=dict)
    records: list = field(default_factory=list)


def prepare_run(model_config, tc, folder, train_text, val_text, *, resume=False, overwrite=False,
                tokenizer=None, data_name=None, init_from=None, allow_data_change=False):
    """Check everything a run needs and build it (see the module's docstring). folder is the
    RunFolder (or None: nothing is saved). Writes nothing."""
    from .checkpoint import load_checkpoint

    ckpt = folder.checkpoint if folder is not None else None
    sha = data_fingerprint(train_text, val_text)
    step, rng, optim_state, records = 0, np.random.default_rng(tc.seed), {}, []
    if resume:
        if ckpt is None or not ckpt.exists():
            raise UserError(f"--resume: there is no checkpoint at {ckpt} to continue from")
        model, tokenizer, state, optim_state = load_checkpoint(ckpt)
        step, rng_state, saved_train = resume_state(state, ckpt)
        check_resume(model.config.to_dict(), saved_train,
                     dataclasses.replace(model_config, vocab_size=model.config.vocab_size,
                                         seed=tc.seed),
                     tc, data_name, state.get("data"))
        if state.get("data_sha256") not in (None, sha) and not allow_data_change:
            raise UserError(f"the training text ({data_name or 'given'}) is not the one {ckpt} was "
                            "trained on (its sha256 differs). Pass --allow-data-change to continue "
                            "on the new text anyway")
        if step >= tc.steps:
            raise UserError(f"{ckpt} is already at step {step} of --steps {tc.steps}: ask for more "
                            "steps to train on")
        rng.bit_generator.state = rng_state
        model.config.attn_impl, model.config.attn_chunk = model_config.attn_impl, model_config.attn_chunk
        init_from = state.get("init_from")
        records = folder.read_log(step)
        if not records and step > 0:
            notice(f"{folder.log_path} is missing or empty: the new log starts at step {step + 1}")
    else:
        if ckpt is not None and ckpt.exists() and not overwrite:
            raise UserError(f"{ckpt} already exists: pass --resume to continue it, --overwrite to "
                            "replace it, or choose another --out")
        if init_from is not None:
            model, tokenizer = init_model_from(init_from, dataclasses.replace(model_config, seed=tc.seed))
            init_from = str(init_from)
        else:
            if tokenizer is None and tc.tokenizer == "bpe":
                tokenizer = BPETokenizer.train(train_text, tc.bpe_vocab)
            extra = passkey_chars() if tc.passkey_frac > 0 else ""
            tokenizer = tokenizer or CharTokenizer.from_text(train_text + val_text + extra)
            config = dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, seed=tc.seed)
            check_memory(config)
            model = GPT(config)

    if tokenizer.kind != tc.tokenizer:
        if resume or init_from is not None:
            raise UserError(f"{ckpt if resume else init_from} reads {tokenizer.kind} tokens, not "
                            f"{tc.tokenizer} ones: drop --tokenizer, or train from scratch into a new --out")
        raise UserError(f"the tokenizer given reads {tokenizer.kind} tokens, but the training config "
                        f"asks for {tc.tokenizer!r} ones")
    T = model.config.train_len
    train_data, val_data = tokenizer.encode(train_text), tokenizer.encode(val_text)
    if round(tc.passkey_frac * tc.batch_size):
        from .passkey import min_prompt_length

        tokenizer.encode(passkey_chars())  # names any character the vocabulary lacks
        need = min_prompt_length(tc.passkey_digits, tokenizer=tokenizer) + tc.passkey_digits + 1
        if T < need:
            raise UserError(f"passkey prompts need train_len >= {need} {tokenizer.unit}s; it is {T}")
    for name, data in (("training", train_data), ("validation", val_data)):
        if len(data) < T + 1:
            raise UserError(f"the {name} text has {len(data)} {tokenizer.unit}s; train_len={T} needs "
                            f"at least {T + 1}. Use a longer text or a smaller --train-len")
    return Run(model, tokenizer, train_data, val_data, step, rng, data_name, sha, init_from,
               optim_state, records)


# --- stopping on a signal --------------------------------------------------------------------------

class Stopped(KeyboardInterrupt):
    """Training stopped by Ctrl-C (SIGINT) or SIGTERM after saving; signum says which."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


class StopOnSignals:
    """Turn Ctrl-C and SIGTERM (what a scheduler sends before it kills a job) into a flag
    checked between steps, so no step is left half applied and the run saves first."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    @property
    def requested(self):
        return self.signum is not None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)


# --- the loop ------------------------------------------------------------------------------------

def train_loop(run, tc, folder, *, forward_backward, update, evaluate, save, desc,
               progress=True, main_process=True, any_process=bool, probe=None):
    """Train run from run.step to tc.steps; return the log's records (see the module's docstring).

    forward_backward(x, y) -> the batch's mean loss, gradients left for update
    update(lr) -> the gradient norm before clipping, after clipping and one optimizer step
    evaluate() -> the validation loss on the fixed windows
    save(state) -> write the checkpoint with this trainer state (only on the main process)
    progress: True (a bar), False, or report(stage, done, total, **info) (progress.py)
    main_process: only it shows the bar, writes the log and saves (rank 0 under torchrun)
    any_process(flag) -> whether any process has flag set (a stop asked of one stops all)
    probe() -> a number logged as "probe" beside each val_loss (the lab's passkey accuracy at N)
    """
    from .optim import lr_schedule

    report = progress if callable(progress) else None
    T = run.model.config.train_len
    n_passkey = round(tc.passkey_frac * tc.batch_size)
    if n_passkey:
        from .passkey import passkey_examples
    records = list(run.records)
    ckpt = folder.checkpoint if folder is not None else None
    writes = folder is not None and main_process
    step = run.step

    def save_now():
        if not writes:
            return
        state = dict(step=step, rng=run.rng.bit_generator.state, train_config=dataclasses.asdict(tc),
                     data=run.data_name, data_sha256=run.data_sha256, init_from=run.init_from)
        try:
            save(state)
        except OSError as e:
            raise UserError(f"cannot save the checkpoint {ckpt} ({e.strerror}); the previous one "
                            "is kept. Free some space and continue with --resume") from None

    def log(record):
        records.append(record)
        if writes:
            try:
                folder.append_log(record)
            except OSError as e:
                raise UserError(f"cannot write {folder.log_path} ({e.strerror}); the last checkpoint "
                                "is kept. Free some space and continue with --resume") from None

    def diverged(what, value, at_step):
        kept = f"; the last good checkpoint is kept in {ckpt}" if ckpt and ckpt.exists() else ""
        again = " and continue with --resume" if kept else ""
        return UserError(f"{what} became {value} at step {at_step}{kept}. Lower --lr (now {tc.lr}) "
                         f"or --grad-clip{again}")

    chars_per_step = tc.batch_size * T
    bar = tqdm(total=tc.steps, initial=step, disable=not progress or not main_process or report is not None,
               desc=desc, unit="step", dynamic_ncols=True)
    val_loss = None
    # Overflow shows up as a non-finite loss, which stops the run with one clear message
    # below; NumPy's own warnings about it would only bury that message.
    with bar, StopOnSignals() as stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while step < tc.steps:
            t0 = time.perf_counter()
            lr = lr_schedule(step, tc.lr, tc.warmup, tc.steps, tc.min_lr)
            x, y = get_batch(run.train_data, tc.batch_size, T, run.rng)
            if n_passkey:
                x[-n_passkey:], y[-n_passkey:] = passkey_examples(
                    run.rng, n_passkey, T, run.tokenizer, tc.passkey_digits, loss=tc.passkey_loss)
            loss = forward_backward(x, y)
            if not math.isfinite(loss):
                raise diverged("the training loss", loss, step + 1)
            grad_norm = update(lr)
            step += 1
            rate = chars_per_step / (time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_loss:.3f}" if val_loss else "-",
                            chars_s=f"{rate:,.0f}", refresh=False)
            if report is not None:
                report("train", step, tc.steps, loss=loss, val=val_loss, chars_s=rate)
            record = {"step": step}
            if step % tc.log_interval == 0:
                record.update(loss=loss, lr=lr, grad_norm=grad_norm, chars_per_s=rate)
            if step % tc.eval_interval == 0 or step == tc.steps:
                val_loss = evaluate()
                if not math.isfinite(val_loss):
                    raise diverged("the validation loss", val_loss, step)
                record["val_loss"] = val_loss
                # the wall clock (UTC) beside each evaluation: a run's log says when it trained
                record["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                if probe is not None:
                    record["probe"] = probe()
                if main_process and report is None:
                    bar.write(f"step {step}: train loss {loss:.4f}, val loss {val_loss:.4f}")
            if len(record) > 1:
                log(record)
            if "val_loss" in record:
                save_now()
            if any_process(stop.requested):
                save_now()
                where = f"; checkpoint saved in {ckpt}, continue with --resume" if ckpt else ""
                raise Stopped(f"stopped at step {step}{where}", stop.signum or signal.SIGINT)
    return records


def history_from(records):
    """The log's records as lists: step/loss (every log_interval steps), val_step/val_loss."""
    history = {"step": [], "loss": [], "val_step": [], "val_loss": []}
    for r in records:
        if "loss" in r:
            history["step"].append(r["step"])
            history["loss"].append(r["loss"])
        if "val_loss" in r:
            history["val_step"].append(r["step"])
            history["val_loss"].append(r["val_loss"])
    return history
