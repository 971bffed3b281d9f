"""What both command lines share: the train flags, their checks, and how a command ends.

`python -m minifope` (cli.py) and `python -m minifope.torch.train` take the same train
flags and end the same way, so both import them from here; nothing here imports either
command line, which keeps the imports flowing one way: cli, torch.train -> flags -> train.

How a command ends (run_command): a UserError prints one line on stderr and exits 2, with
no traceback; so does an OSError (a disk that fills, a folder that cannot be written) and a
MemoryError (a size too large for the memory free);
Ctrl-C or SIGTERM exits 128 + the signal's number, after the trainer has saved; a reader
that closes the pipe (`| head`) ends the command quietly with 141, as a shell would.
"""

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import sys

from .config import POSITION_EMBEDDINGS
from .errors import UserError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# --- values a flag accepts: argparse types whose refusal is one line ---------------------------

def _number(kind, text, ok, what):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"{what}, got {text!r}")
    return value


def natural(text):
    """An integer >= 0 (seeds, character counts)."""
    return _number(int, text, lambda v: v >= 0, "must be an integer >= 0")


def positive_int(text):
    """An integer >= 1 (steps, sizes, counts)."""
    return _number(int, text, lambda v: v >= 1, "must be an integer >= 1")


def nonnegative_float(text):
    """A finite number >= 0 (NaN and inf refused)."""
    return _number(float, text, lambda v: math.isfinite(v) and v >= 0, "must be a finite number >= 0")


def positive_float(text):
    """A finite number > 0."""
    return _number(float, text, lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0")


def path(text):
    """A file or folder name; an empty one (a shell variable that was never set) is refused
    rather than read as the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def at_least_two(text):
    """An integer >= 2 (a factor of the training length: 1 would be the same length)."""
    return _number(int, text, lambda v: v >= 2, "must be an integer >= 2")


def fraction(text):
    """A number in [0, 1]."""
    return _number(float, text, lambda v: 0 <= v <= 1, "must be a number in [0, 1]")


# --- threads ----------------------------------------------------------------------------------

def add_threads_flag(p, note=""):
    p.add_argument("--threads", type=positive_int, help="cores for NumPy: its BLAS, and minifope's "
                   f"threads for micro-batches and the attention core{note} (default: "
                   "OPENBLAS_NUM_THREADS / OMP_NUM_THREADS if set, else every core)")


def numpy_threads(threads):
    """A context in which NumPy uses `threads` threads, for its BLAS and for minifope's parts
    of a batch (parallel.threads; None: leave it as it is).

    The BLAS reads OPENBLAS_NUM_THREADS and its kin once, when NumPy is imported, which
    `python -m minifope` has done before it reads its flags; threadpoolctl changes the
    running library's setting instead, and it is put back afterwards.
    """
    if threads is None:
        return contextlib.nullcontext()
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    from .parallel import threads as parallel_threads

    return parallel_threads(threads)


# --- the train flags ---------------------------------------------------------------------------

# each flag's dest is its GPTConfig field
MODEL_FLAGS = ("pe", "d_model", "n_layer", "n_head", "train_len", "dtype", "rope_theta",
               "fope_sigma", "fope_dim", "fope_learnable", "rope_scaling", "rope_scale",
               "rope_yarn_ramp", "rope_yarn_temperature", "rope_clip", "fope_clip")
TRAIN_FLAGS = ("steps", "batch_size", "lr", "min_lr", "warmup", "weight_decay", "grad_clip",
               "eval_interval", "eval_batches", "seed", "passkey_frac", "passkey_digits",
               "passkey_loss", "micro_batches", "tokenizer", "bpe_vocab")  # and these are TrainConfig fields


def add_train_flags(p):
    """The flags of `python -m minifope train` (also `python -m minifope.torch.train`'s)."""
    p.add_argument("--data", type=path, help="'shakespeare' (the default: the embedded plays), "
                   "'pydoc' (the language reference of this Python) or a UTF-8 text file")
    p.add_argument("--out", type=path, default="runs/shakespeare", help="run folder for ckpt.npz "
                   "and log.jsonl (default: runs/shakespeare)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out (once "
                   "the new run's inputs have been checked)")
    p.add_argument("--allow-data-change", action="store_true", help="with --resume: continue even "
                   "though the training text differs from the one the checkpoint was trained on")
    add_threads_flag(p, "; the torch trainer also sets torch.set_num_threads")
    p.add_argument("--init-from", type=path, metavar="DIR", help="start from this run's parameters "
                   "(its config is the default; e.g. continue at a longer --train-len with "
                   "--rope-scaling yarn, or switch to --pe fope)")
    g = p.add_argument_group("model")
    g.add_argument("--pe", choices=POSITION_EMBEDDINGS, help="position embedding (rope)")
    g.add_argument("--d-model", type=positive_int)
    g.add_argument("--n-layer", type=positive_int)
    g.add_argument("--n-head", type=positive_int)
    g.add_argument("--train-len", type=positive_int, help="training length N in characters")
    g.add_argument("--dtype", choices=["float32", "float64"])
    g.add_argument("--rope-theta", type=positive_float)
    g.add_argument("--fope-sigma", type=nonnegative_float)
    g.add_argument("--fope-dim", type=natural, help="D: FoPE's frequency set is computed over D dims")
    g.add_argument("--fope-learnable", action="store_const", const=True)
    g.add_argument("--fope-no-clip", dest="fope_clip", action="store_const", const=False,
                   help="keep FoPE's frequencies below 2*pi/N (the 'series only' ablation)")
    g.add_argument("--rope-clip", action="store_const", const=True,
                   help="zero RoPE's frequencies below 2*pi/N (the 'clip only' ablation)")
    g.add_argument("--rope-scaling", choices=["none", "pi", "ntk", "yarn"],
                   help="extend RoPE past its training length (with --rope-scale)")
    g.add_argument("--rope-scale", type=positive_float, help="s = target length / training length "
                   "(with --rope-scaling)")
    g.add_argument("--rope-yarn-ramp", choices=["index", "rotations"], help="YaRN's ramp: linear in "
                   "the pair index as YaRN's code and transformers compute it (index, the default) or "
                   "in the turns within N, the YaRN paper's equation (rotations)")
    g.add_argument("--no-yarn-temperature", dest="rope_yarn_temperature", action="store_const",
                   const=False, help="leave out YaRN's attention temperature, as the FoPE authors' "
                   "YaRN baseline does")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--lr", type=positive_float, help="peak learning rate (may change on --resume)")
    g.add_argument("--min-lr", type=nonnegative_float, help="learning rate at the end of the cosine "
                   "(may change on --resume)")
    g.add_argument("--warmup", type=natural, help="linear warmup steps")
    g.add_argument("--weight-decay", type=nonnegative_float)
    g.add_argument("--grad-clip", type=nonnegative_float, help="global gradient norm clip (0: off; "
                   "may change on --resume)")
    g.add_argument("--eval-interval", type=positive_int)
    g.add_argument("--eval-batches", type=positive_int)
    g.add_argument("--seed", type=natural, help="fixes the init and the batch order")
    g.add_argument("--micro-batches", type=positive_int, help="split each batch into this many row "
                   "blocks, run on parallel threads; the same gradient up to rounding (default 2)")
    g.add_argument("--passkey-frac", type=fraction, help="share of each batch made of passkey prompts")
    g.add_argument("--passkey-digits", type=positive_int, help="digits of the passkey (5)")
    g.add_argument("--passkey-loss", choices=["all", "answer", "keys"], help="which targets of a "
                   "passkey row carry loss: all, answer, or keys (the answer and the needle's "
                   "second copy of the key)")
    g = p.add_argument_group("tokens")
    g.add_argument("--tokenizer", choices=["char", "bpe"], help="char: one token per character (the "
                   "default); bpe: a byte-level BPE learned on the training text (bpe.py)")
    g.add_argument("--bpe-vocab", type=positive_int, help="with --tokenizer bpe: its vocabulary size, "
                   "256 bytes plus the merges (512)")
    p.add_argument("--sample-chars", type=natural, default=300,
                   help="print a sample of this many tokens at the end (characters, unless --tokenizer "
                   "bpe; 0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def checked(make, **fields):
    """make(**fields) (GPTConfig, TrainConfig), with a bad value reported as the user's mistake."""
    try:
        return make(**fields)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None


def make_config(**fields):
    """GPTConfig(**fields), with a bad value reported as the user's mistake."""
    from .config import GPTConfig

    return checked(GPTConfig, **fields)


def train_configs(args):
    """(GPTConfig, TrainConfig, data) from the train flags: the defaults, then the checkpoint's
    values (with --resume, or --init-from), then every flag the user gave."""
    from .checkpoint import checkpoint_path, load_checkpoint
    from .config import GPTConfig
    from .loop import TrainConfig, resume_state

    given = {k: v for k, v in vars(args).items() if v is not None}
    model_fields = dataclasses.asdict(GPTConfig())
    train_fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    data = given.get("data", "shakespeare")
    if args.resume:
        ckpt = checkpoint_path(args.out)
        saved, _, state, _ = load_checkpoint(ckpt)
        _, _, saved_train = resume_state(state, ckpt)  # a damaged state is refused before it is used
        model_fields = saved.config.to_dict()
        train_fields.update(saved_train)
        data = given.get("data", state.get("data") or "shakespeare")
    if args.init_from and not args.resume:
        source, _, _, _ = load_checkpoint(checkpoint_path(args.init_from))
        model_fields = source.config.to_dict()
        model_fields["rope_original_len"] = source.config.rope_original_len or source.config.train_len
        if given.get("pe", source.config.pe) != "fope":  # FoPE options do not carry over to another pe
            model_fields.update(fope_learnable=False, fope_clip=True)
    model_fields.update({k: v for k, v in given.items() if k in MODEL_FLAGS})
    if "rope_scaling" in given and given["rope_scaling"] == "none" and "rope_scale" not in given:
        model_fields["rope_scale"] = 1.0  # turning the scaling off turns its factor off too
    train_fields.update({k: v for k, v in given.items() if k in TRAIN_FLAGS})
    if "bpe_vocab" in given and train_fields["tokenizer"] != "bpe":
        raise UserError("--bpe-vocab only takes effect with --tokenizer bpe")
    model_fields["seed"] = train_fields["seed"]
    return checked(GPTConfig, **model_fields), checked(TrainConfig, **train_fields), data


def finish_train(args, history, num_params, model, seed):
    """What `train` prints at the end, for either trainer: the final validation loss and,
    with --sample-chars, a sample from `model` (a NumPy GPT, or a view of a torch one)."""
    import numpy as np

    from .checkpoint import checkpoint_path, load_checkpoint
    from .sample import generate

    _, tokenizer, _, _ = load_checkpoint(checkpoint_path(args.out))
    per = "char" if tokenizer.kind == "char" else "token"
    print(f"final validation loss {history['val_loss'][-1]:.4f} nats/{per} "
          f"({num_params:,} parameters); checkpoint in {checkpoint_path(args.out)}")
    if args.sample_chars:
        try:
            prompt = tokenizer.encode("\n")[None]
        except UserError:  # a character vocabulary without a newline
            prompt = np.zeros((1, 1), np.int64)
        ids = generate(model, prompt, args.sample_chars, temperature=0.8, seed=seed)
        print("\n--- sample ---" + tokenizer.decode(ids[0]))


# --- how a command ends ----------------------------------------------------------------------

def _silence_stdout():
    """Point stdout at /dev/null if what it holds cannot be written (a closed pipe, a full
    disk), so that the interpreter's last flush does not print a second error after ours."""
    try:
        sys.stdout.flush()
        return
    except (OSError, ValueError):
        pass
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def run_command(run, args):
    """run(args) -> exit status, with a user's mistake, a signal or a failing disk ending the
    command in one line (see the module's docstring)."""
    try:
        with numpy_threads(getattr(args, "threads", None)):
            status = run(args)
        sys.stdout.flush()
        return status
    except UserError as e:
        _silence_stdout()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:
        _silence_stdout()
        return 128 + getattr(signal, "SIGPIPE", 13)
    except OSError as e:
        _silence_stdout()
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        # a size no check could foresee (a batch or an evaluation too large for what is free)
        print("error: out of memory: choose smaller sizes (--batch-size, --eval-batches, "
              "--train-len, --d-model) or free some memory", file=sys.stderr)
        return 2
