"""The trainer: one loop, no framework. Random windows of text, AdamW, warmup + cosine.

    model, history = train(GPTConfig(pe="fope"), train_text, val_text, TrainConfig(steps=500))

Each step: a batch of `batch_size` random windows of `train_len + 1` characters, forward,
backward (as `micro_batches` row blocks on parallel threads, see parallel.py), global-norm
clipping, AdamW at the scheduled learning rate. Every
`eval_interval` steps (and at the end) the validation loss is measured on fixed windows
of the validation text and, given an `out_dir`, the checkpoint DIR/ckpt.npz is rewritten
atomically and the metrics are appended to DIR/log.jsonl.

Reproducible: `seed` fixes the model's init (GPTConfig.seed is set to it) and the order of
the batches. The batch RNG's state is saved with the checkpoint, so a run stopped and
resumed draws the same batches as one that never stopped. Ctrl-C finishes the current
step, saves, and raises KeyboardInterrupt. A NaN or inf loss stops the run before
anything is saved, so the last good checkpoint stays on disk.
"""

import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .checkpoint import CKPT_NAME, atomic_write, load_checkpoint, save_checkpoint
from .data import CharTokenizer, get_batch
from .errors import UserError
from .lengthgen import eval_windows
from .model import GPT
from .optim import AdamW, clip_grad_norm, lr_schedule
from .parallel import MicroBatches

LOG_NAME = "log.jsonl"


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

    def __post_init__(self):
        if self.warmup is None and isinstance(self.steps, int):
            self.warmup = min(100, self.steps // 10)
        for name in ("steps", "batch_size", "eval_interval", "eval_batches", "log_interval",
                     "micro_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.warmup <= self.steps:
            raise ValueError(f"warmup must lie in [0, steps={self.steps}], got {self.warmup}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"min_lr must lie in [0, lr={self.lr}], got {self.min_lr!r}")
        if not 0.0 <= self.passkey_frac <= 1.0:
            raise ValueError(f"passkey_frac must lie in [0, 1], got {self.passkey_frac!r}")
        if self.passkey_loss not in ("all", "answer", "keys"):
            raise ValueError(f"passkey_loss must be 'all', 'answer' or 'keys', got {self.passkey_loss!r}")
        if not isinstance(self.passkey_digits, int) or not 1 <= self.passkey_digits <= 9:
            raise ValueError(f"passkey_digits must be an integer in 1..9, got {self.passkey_digits!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("weight_decay and grad_clip must be >= 0 (grad_clip 0 turns clipping off)")


def no_decay(name, param):
    """Weight decay only on matrices, and never on FoPE coefficients: decay would pull their
    step identity toward zero, which means no rotation rather than the initial series."""
    return param.ndim < 2 or ".fope." in name


def evaluate(model, data, batch_size, n_batches):
    """Mean loss over fixed, evenly spread windows of `data` (the same windows every time)."""
    windows = eval_windows(data, model.config.train_len, batch_size * n_batches)
    losses = [model.forward(w[:, :-1], w[:, 1:])[1] for w in np.split(windows, n_batches)]
    return float(np.mean(losses))


class StopOnSigint:
    """Turn Ctrl-C into a flag checked between steps, so no step is left half applied."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def read_log(out_dir, up_to_step):
    path = Path(out_dir) / LOG_NAME
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if r["step"] <= up_to_step]


def history_from(records):
    history = {"step": [], "loss": [], "val_step": [], "val_loss": []}
    for r in records:
        if "loss" in r:
            history["step"].append(r["step"])
            history["loss"].append(r["loss"])
        if "val_loss" in r:
            history["val_step"].append(r["step"])
            history["val_loss"].append(r["val_loss"])
    return history


def check_resume(saved_model, saved_train, model_config, train_config, data_name, saved_data):
    conflicts = []
    for name, value in dataclasses.asdict(model_config).items():
        if name not in ("vocab_size", "attn_impl", "attn_chunk") and saved_model[name] != value:
            conflicts.append(f"{name}: checkpoint {saved_model[name]!r}, asked {value!r}")
    for name, value in dataclasses.asdict(train_config).items():
        # a field newer than the checkpoint is not compared: micro_batches, say, which
        # changes only the float rounding of the same gradient
        if name not in ("steps", "eval_interval", "log_interval") and saved_train.get(name, value) != value:
            conflicts.append(f"{name}: checkpoint {saved_train[name]!r}, asked {value!r}")
    if data_name is not None and saved_data is not None and data_name != saved_data:
        conflicts.append(f"data: checkpoint {saved_data!r}, asked {data_name!r}")
    if conflicts:
        raise UserError("--resume with a config that differs from the checkpoint: "
                        + "; ".join(conflicts) + ". Drop those options or train into a new --out")


def init_model_from(path, model_config):
    """A GPT with model_config whose parameters come from the checkpoint at `path`.

    For continuing training under another config (a longer train_len, YaRN scaling, or
    FoPE in place of RoPE): every parameter the new model shares with the checkpoint is
    copied; FoPE coefficients the checkpoint lacks keep their fresh init. Returns
    (model, tokenizer).
    """
    source, tokenizer, _, _ = load_checkpoint(path)
    model = GPT(dataclasses.replace(model_config, vocab_size=source.config.vocab_size))
    for name, p in model.params.items():
        if name in source.params and source.params[name].shape == p.shape:
            p[...] = source.params[name]
        elif ".fope." not in name:
            raise UserError(f"cannot start from {path}: its {name} does not fit the new config "
                            "(d_model, n_layer, n_head and vocabulary must stay the same)")
    return model, tokenizer


def passkey_chars():
    """Every character a passkey prompt and its answer can contain."""
    from .passkey import FILLER, NEEDLE, QUESTION, TASK

    return "".join(sorted(set(TASK + FILLER + NEEDLE.format(key="") + QUESTION + " .0123456789\n")))


def start_run(model_config, tc, ckpt, resume, tokenizer, train_text, val_text, data_name,
              init_from):
    """Where a run starts, for this trainer and the torch one: resume the checkpoint at ckpt
    (refusing a conflicting config), start from init_from's weights, or build a fresh model
    and vocabulary; then encode the texts and check they and the passkey prompts fit
    train_len. Returns (NumPy GPT, tokenizer, state, optim_state, train_data, val_data);
    state and optim_state are empty unless resuming."""
    state, optim_state = {}, {}
    if resume:
        if ckpt is None or not ckpt.exists():
            raise UserError(f"--resume: there is no checkpoint at {ckpt} to continue from")
        model, tokenizer, state, optim_state = load_checkpoint(ckpt)
        check_resume(model.config.to_dict(), state.get("train_config", {}),
                     dataclasses.replace(model_config, vocab_size=model.config.vocab_size,
                                         seed=tc.seed),
                     tc, data_name, state.get("data"))
        model.config.attn_impl, model.config.attn_chunk = model_config.attn_impl, model_config.attn_chunk
    else:
        if ckpt is not None and ckpt.exists():
            raise UserError(f"{ckpt} already exists: pass --resume to continue it, or choose "
                            "another --out")
        if init_from is not None:
            model, tokenizer = init_model_from(init_from, dataclasses.replace(model_config, seed=tc.seed))
        else:
            extra = passkey_chars() if tc.passkey_frac > 0 else ""
            tokenizer = tokenizer or CharTokenizer.from_text(train_text + val_text + extra)
            model = GPT(dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, seed=tc.seed))

    T = model.config.train_len
    train_data, val_data = tokenizer.encode(train_text), tokenizer.encode(val_text)
    if round(tc.passkey_frac * tc.batch_size):
        from .passkey import min_prompt_length

        tokenizer.encode(passkey_chars())  # names any character the vocabulary lacks
        need = min_prompt_length(tc.passkey_digits) + tc.passkey_digits + 1
        if T < need:
            raise UserError(f"passkey prompts need train_len >= {need}; it is {T}")
    for name, data in (("training", train_data), ("validation", val_data)):
        if len(data) < T + 1:
            raise UserError(f"the {name} text has {len(data)} characters; train_len={T} needs at "
                            f"least {T + 1}. Use a longer text or a smaller --train-len")
    return model, tokenizer, state, optim_state, train_data, val_data


def train(model_config, train_text, val_text, train_config=None, out_dir=None, resume=False,
          tokenizer=None, data_name=None, progress=True, init_from=None):
    """Train a GPT on `train_text`, validating on `val_text`; return (model, history).

    history: dict of lists, "step"/"loss" (training loss every log_interval steps) and
    "val_step"/"val_loss". With out_dir, checkpoints and log.jsonl go there; resume=True
    continues from out_dir/ckpt.npz (the configs must agree; steps may grow). Without
    resume, an existing checkpoint in out_dir is never overwritten: UserError instead.
    init_from: start from that checkpoint's parameters (see init_model_from), with a fresh
    optimizer. With passkey_frac > 0 the vocabulary also holds the passkey's characters.
    """
    tc = train_config or TrainConfig()
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / CKPT_NAME if out is not None else None
    model, tokenizer, state, optim_state, train_data, val_data = start_run(
        model_config, tc, ckpt, resume, tokenizer, train_text, val_text, data_name, init_from)
    T = model.config.train_len
    n_passkey = round(tc.passkey_frac * tc.batch_size)
    if n_passkey:
        from .passkey import passkey_examples

    optim = AdamW(model.params, lr=tc.lr, weight_decay=tc.weight_decay, no_decay=no_decay)
    rng = np.random.default_rng(tc.seed)
    step = 0
    records = []
    if resume:
        optim.load_state_dict(optim_state)
        rng.bit_generator.state = state["rng"]
        step = state["step"]
        records = read_log(out, step)
        atomic_write(out / LOG_NAME, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records).encode()))

    def save():
        if ckpt is not None:
            save_checkpoint(ckpt, model, tokenizer, dict(
                step=step, rng=rng.bit_generator.state, train_config=dataclasses.asdict(tc),
                data=data_name, init_from=None if init_from is None else str(init_from)),
                optim.state_dict())

    def log(record):
        records.append(record)
        if out is not None:
            with open(out / LOG_NAME, "a") as f:
                f.write(json.dumps(record) + "\n")

    def diverged(what, value, at_step):
        kept = f"; the last good checkpoint is kept in {ckpt}" if ckpt and ckpt.exists() else ""
        return UserError(f"{what} became {value} at step {at_step}{kept}. Lower --lr (now {tc.lr}) "
                         "or --grad-clip")

    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    chars_per_step = tc.batch_size * T
    bar = tqdm(total=tc.steps, initial=step, disable=not progress, desc=f"train {model.config.pe}",
               unit="step", dynamic_ncols=True)
    val_loss = None
    # Overflow shows up as a non-finite loss, which stops the run with one clear message
    # below; NumPy's own warnings about it would only bury that message.
    with StopOnSigint() as sigint, np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
            MicroBatches(model, min(tc.micro_batches, tc.batch_size)) as micro:
        while step < tc.steps:
            t0 = time.perf_counter()
            lr = lr_schedule(step, tc.lr, tc.warmup, tc.steps, tc.min_lr)
            x, y = get_batch(train_data, tc.batch_size, T, rng)
            if n_passkey:
                x[-n_passkey:], y[-n_passkey:] = passkey_examples(
                    rng, n_passkey, T, tokenizer, tc.passkey_digits, loss=tc.passkey_loss)
            loss = micro.loss_and_grads(x, y)  # forward and backward: model.grads
            if not math.isfinite(loss):
                bar.close()
                raise diverged("the training loss", loss, step + 1)
            grad_norm = clip_grad_norm(model.grads, tc.grad_clip)
            optim.step(model.grads, lr)
            step += 1
            rate = chars_per_step / (time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val_loss:.3f}" if val_loss else "-",
                            chars_s=f"{rate:,.0f}")
            record = {"step": step}
            if step % tc.log_interval == 0:
                record.update(loss=loss, lr=lr, grad_norm=grad_norm, chars_per_s=rate)
            if step % tc.eval_interval == 0 or step == tc.steps:
                val_loss = evaluate(model, val_data, tc.batch_size, tc.eval_batches)
                if not math.isfinite(val_loss):
                    bar.close()
                    raise diverged("the validation loss", val_loss, step)
                record["val_loss"] = val_loss
                bar.write(f"step {step}: train loss {loss:.4f}, val loss {val_loss:.4f}")
            if len(record) > 1:
                log(record)
            if "val_loss" in record:
                save()
            if sigint.requested:
                save()
                bar.close()
                where = f"; checkpoint saved in {ckpt}, continue with --resume" if ckpt else ""
                raise KeyboardInterrupt(f"stopped at step {step}{where}")
    bar.close()
    return model, history_from(records)
