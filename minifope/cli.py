"""The command line: python -m minifope COMMAND [options]; --help on each command.

A user's mistake (a UserError) prints one line on stderr and exits with status 2, without
a traceback. Config values are checked by GPTConfig, whose ValueError `make_config` turns
into a UserError.
"""

import argparse
import contextlib
import sys

import numpy as np

from .errors import UserError


def make_config(**fields):
    """GPTConfig(**fields), with a bad value reported as the user's mistake."""
    from .config import GPTConfig

    try:
        return GPTConfig(**fields)
    except ValueError as e:
        raise UserError(str(e)) from None


def add_threads_flag(p, note=""):
    p.add_argument("--threads", type=int, help="cores for NumPy: its BLAS, and the trainer's "
                   "micro-batch threads"
                   f"{note} (default: OPENBLAS_NUM_THREADS / OMP_NUM_THREADS if set, else every core)")


def blas_threads(threads):
    """A context in which NumPy's BLAS uses `threads` threads (None: leave it as it is).

    The BLAS reads OPENBLAS_NUM_THREADS and its kin once, when NumPy is imported, which
    `python -m minifope` has done before it reads its flags; threadpoolctl changes the
    running library's setting instead, and puts it back afterwards.
    """
    if threads is None:
        return contextlib.nullcontext()
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def cmd_gradcheck(args):
    from .gradcheck import check_model

    cases = {"rope": {}, "fope": {"fope_dim": 64}, "fope-learnable": {"fope_dim": 64, "fope_learnable": True},
             "alibi": {}, "nope": {}}
    selected = args.pe or list(cases)
    worst = {}
    all_ok = True
    for name in selected:
        pe = name.split("-")[0]
        config = make_config(vocab_size=13, n_layer=2, n_head=2, d_model=32, train_len=64, pe=pe,
                           dtype="float64", init_std=0.2, seed=args.seed, **cases[name])
        if args.verbose:
            print(f"\n== {name}")
        ok, worst[name] = check_model(config, seed=args.seed, verbose=args.verbose)
        all_ok &= ok
    print(f"\n{'pe':<16} {'largest relative error vs autograd':>36}   status")
    for name, err in worst.items():
        print(f"{name:<16} {err:>36.2e}   {'ok' if err <= 1e-8 else 'FAIL'}")
    return 0 if all_ok else 1


MODEL_FLAGS = {  # flag dest -> GPTConfig field
    "pe": "pe", "d_model": "d_model", "n_layer": "n_layer", "n_head": "n_head",
    "train_len": "train_len", "dtype": "dtype", "rope_theta": "rope_theta",
    "fope_sigma": "fope_sigma", "fope_dim": "fope_dim", "fope_learnable": "fope_learnable",
    "rope_scaling": "rope_scaling", "rope_scale": "rope_scale", "rope_clip": "rope_clip",
    "fope_clip": "fope_clip",
}
TRAIN_FLAGS = ("steps", "batch_size", "lr", "min_lr", "warmup", "weight_decay", "grad_clip",
               "eval_interval", "eval_batches", "seed", "passkey_frac", "passkey_digits", "passkey_loss",
               "micro_batches")


def train_configs(args):
    """(GPTConfig, TrainConfig, data) from the train flags: the defaults, then the checkpoint's
    values (with --resume, or --init-from), then every flag the user gave."""
    import dataclasses

    from .checkpoint import checkpoint_path, load_checkpoint
    from .config import GPTConfig
    from .train import TrainConfig

    given = {k: v for k, v in vars(args).items() if v is not None}
    model_fields = dataclasses.asdict(GPTConfig())
    train_fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    data = given.get("data", "shakespeare")
    if args.resume:
        saved, _, state, _ = load_checkpoint(checkpoint_path(args.out))
        model_fields = saved.config.to_dict()
        train_fields.update(state.get("train_config", {}))
        data = given.get("data", state.get("data") or "shakespeare")
    if args.init_from and not args.resume:
        source, _, _, _ = load_checkpoint(checkpoint_path(args.init_from))
        model_fields = source.config.to_dict()
        model_fields["rope_original_len"] = source.config.rope_original_len or source.config.train_len
        if given.get("pe", source.config.pe) != "fope":  # FoPE options do not carry over to another pe
            model_fields.update(fope_learnable=False, fope_clip=True)
    model_fields.update({MODEL_FLAGS[k]: v for k, v in given.items() if k in MODEL_FLAGS})
    train_fields.update({k: v for k, v in given.items() if k in TRAIN_FLAGS})
    model_fields["seed"] = train_fields["seed"]
    model_config = make_config(**model_fields)
    try:
        train_config = TrainConfig(**train_fields)
    except ValueError as e:
        raise UserError(str(e)) from None
    return model_config, train_config, data


def cmd_train(args):
    from .checkpoint import checkpoint_path, load_checkpoint
    from .data import load_corpus
    from .sample import generate
    from .train import train

    model_config, train_config, data = train_configs(args)
    if args.overwrite and not args.resume:
        remove_previous_run(args.out)
    train_text, val_text = load_corpus(data)
    model, history = train(model_config, train_text, val_text, train_config, out_dir=args.out,
                           resume=args.resume, data_name=data, progress=not args.quiet,
                           init_from=None if args.resume else args.init_from)
    print(f"final validation loss {history['val_loss'][-1]:.4f} nats/char "
          f"({model.num_params():,} parameters); checkpoint in {checkpoint_path(args.out)}")
    if args.sample_chars:
        _, tokenizer, _, _ = load_checkpoint(checkpoint_path(args.out))
        prompt = tokenizer.encode("\n")[None] if "\n" in tokenizer.chars else np.zeros((1, 1), np.int64)
        ids = generate(model, prompt, args.sample_chars, temperature=0.8, seed=train_config.seed)
        print("\n--- sample ---" + tokenizer.decode(ids[0]))
    return 0


def remove_previous_run(out):
    from pathlib import Path

    from .checkpoint import CKPT_NAME
    from .train import LOG_NAME

    for name in (CKPT_NAME, LOG_NAME):
        path = Path(out) / name
        if path.exists():
            path.unlink()


def cmd_sample(args):
    from .checkpoint import load_checkpoint
    from .sample import generate

    model, tokenizer, _, _ = load_checkpoint(args.ckpt)
    prompt = args.prompt if args.prompt is not None else "\n"
    if prompt == "":
        raise UserError("--prompt is empty: give at least one character")
    ids = tokenizer.encode(prompt)[None]
    sys.stdout.write(prompt)
    sys.stdout.flush()

    def show(token):
        sys.stdout.write(tokenizer.decode(token))
        sys.stdout.flush()

    generate(model, ids, args.chars, temperature=args.temperature, top_k=args.top_k,
             seed=args.seed, on_token=show)
    sys.stdout.write("\n")
    return 0


def experiment_config(args, preset=None):
    """ExperimentConfig from the experiment/demo flags; unset flags keep the preset's values."""
    from .experiment import ExperimentConfig

    ec = preset or ExperimentConfig()
    variants = list(args.pe or ec.variants) + list(args.variants or [])
    variants += [f"fope:fope_sigma={x}" for x in args.sigma or []]
    variants += [f"fope:fope_dim={x}" for x in args.fope_dims or []]
    model = dict(ec.model)
    for flag in ("d_model", "n_layer", "n_head", "train_len"):
        if getattr(args, flag) is not None:
            model[flag] = getattr(args, flag)
    train = dict(ec.train)
    if args.lr is not None and train.get("min_lr") == train.get("lr"):
        train["min_lr"] = args.lr  # a constant rate stays constant
    for flag in ("steps", "batch_size", "lr", "passkey_frac", "passkey_loss"):
        if getattr(args, flag) is not None:
            train[flag] = getattr(args, flag)
    changes = dict(variants=list(dict.fromkeys(variants)), model=model, train=train)
    for flag, name in (("seeds", "seeds"), ("lengths", "multipliers"), ("passkey_lengths", "passkey_multipliers"),
                       ("depths", "depths"), ("trials", "trials"), ("extend", "extend"),
                       ("continue_at", "continue_factor"), ("continue_steps", "continue_steps"),
                       ("data", "data"), ("eval_data", "eval_data"), ("eval_chars", "eval_chars"),
                       ("retrieve_target", "retrieve_target"), ("max_steps", "max_steps")):
        if getattr(args, flag) is not None:
            changes[name] = getattr(args, flag)
    import dataclasses

    return dataclasses.replace(ec, **changes)


def cmd_experiment(args):
    """`experiment` and `demo` (the same run with the demo's defaults)."""
    import time

    from .experiment import markdown_table, run_experiment

    start = time.time()
    summary = run_experiment(experiment_config(args), args.out, progress=not args.quiet,
                             jobs=args.jobs)
    print(markdown_table(summary))
    print(f"results: {args.out}/results.json and results.md; figures: {args.out}/figure.png, "
          f"needle_grid.png, loss_by_position.png ({time.time() - start:.0f} s)")
    return 0


def add_experiment_flags(p, default_out, default_jobs, default_max_steps=None):
    p.add_argument("--out", default=default_out, help=f"experiment folder (default: {default_out})")
    p.add_argument("--pe", nargs="+", choices=["rope", "fope", "alibi", "nope"],
                   help="position embeddings to compare (default: rope fope alibi)")
    p.add_argument("--variants", nargs="+", metavar="V",
                   help="more variants: clip-only, series-only, or NAME:field=value[,...]")
    p.add_argument("--sigma", nargs="+", type=float, help="FoPE sigma sweep (adds fope variants)")
    p.add_argument("--fope-dims", nargs="+", type=int, help="FoPE D sweep (adds fope variants)")
    p.add_argument("--seeds", type=int, help="seeds per variant (mean and spread over them)")
    p.add_argument("--d-model", type=int)
    p.add_argument("--n-layer", type=int)
    p.add_argument("--n-head", type=int)
    p.add_argument("--train-len", type=int, help="N, the training length")
    p.add_argument("--steps", type=int, help="steps every run trains (3000)")
    p.add_argument("--retrieve-target", type=float, help="then train on, 500 steps at a time, until "
                   "passkey accuracy at N on held-out prompts reaches this (0.9; 0: never)")
    p.add_argument("--max-steps", type=int, default=default_max_steps,
                   help=f"the most steps a run trains for that ({default_max_steps or 6000})")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate, constant after warmup (3e-3)")
    p.add_argument("--passkey-frac", type=float, help="share of each batch made of passkey prompts")
    p.add_argument("--passkey-loss", choices=["all", "answer", "keys"], help="which targets of a passkey row carry loss: all, answer, or keys (the answer "
                   "and the needle's second copy of the key)")
    p.add_argument("--lengths", nargs="+", type=int, help="loss at N x these (1 2 4 8 16)")
    p.add_argument("--eval-chars", type=int, help="characters of evaluation text per length")
    p.add_argument("--passkey-lengths", nargs="+", type=int, help="passkey at N x these (1 2 4)")
    p.add_argument("--depths", nargs="+", type=float, help="needle depths in [0, 1]")
    p.add_argument("--trials", type=int, help="passkey prompts per (length, depth) cell")
    p.add_argument("--extend", nargs="+", choices=["pi", "ntk", "yarn"],
                   help="also evaluate RoPE under these scalings, s = L / N")
    p.add_argument("--continue-at", type=int, metavar="K",
                   help="also train RoPE on at K x N with YaRN, and switched to FoPE (Figure 3)")
    p.add_argument("--continue-steps", type=int)
    p.add_argument("--data", help="training text: shakespeare (default) or a file")
    p.add_argument("--eval-data", help="evaluate the loss on this file instead (a data shift)")
    p.add_argument("--jobs", type=int, default=default_jobs,
                   help=f"runs trained at once, each in its own process with one BLAS thread "
                   f"(default: {default_jobs})")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_threads_flag(p, " with --jobs 1 (each of several jobs has one)")


def add_train_flags(p):
    """The flags of `python -m minifope train` (also used by `python -m minifope.torch.train`)."""
    p.add_argument("--data", help="'shakespeare' (the default: the embedded plays) or a UTF-8 text file")
    p.add_argument("--out", default="runs/shakespeare", help="run folder for ckpt.npz and log.jsonl "
                   "(default: runs/shakespeare)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run in --out")
    add_threads_flag(p, "; the torch trainer also sets torch.set_num_threads")
    p.add_argument("--init-from", metavar="DIR", help="start from this run's parameters (its config "
                   "is the default; e.g. continue at a longer --train-len with --rope-scaling yarn, "
                   "or switch to --pe fope)")
    g = p.add_argument_group("model")
    g.add_argument("--pe", choices=["rope", "fope", "alibi", "nope"], help="position embedding (rope)")
    g.add_argument("--d-model", type=int)
    g.add_argument("--n-layer", type=int)
    g.add_argument("--n-head", type=int)
    g.add_argument("--train-len", type=int, help="training length N in characters")
    g.add_argument("--dtype", choices=["float32", "float64"])
    g.add_argument("--rope-theta", type=float)
    g.add_argument("--fope-sigma", type=float)
    g.add_argument("--fope-dim", type=int, help="D: FoPE's frequency set is computed over D dims")
    g.add_argument("--fope-learnable", action="store_const", const=True)
    g.add_argument("--fope-no-clip", dest="fope_clip", action="store_const", const=False,
                   help="keep FoPE's frequencies below 2*pi/N (the 'series only' ablation)")
    g.add_argument("--rope-clip", action="store_const", const=True,
                   help="zero RoPE's frequencies below 2*pi/N (the 'clip only' ablation)")
    g.add_argument("--rope-scaling", choices=["none", "pi", "ntk", "yarn"],
                   help="extend RoPE past its training length (with --rope-scale)")
    g.add_argument("--rope-scale", type=float, help="s = target length / training length")
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine")
    g.add_argument("--warmup", type=int, help="linear warmup steps")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--grad-clip", type=float, help="global gradient norm clip (0: off)")
    g.add_argument("--eval-interval", type=int)
    g.add_argument("--eval-batches", type=int)
    g.add_argument("--seed", type=int, help="fixes the init and the batch order")
    g.add_argument("--micro-batches", type=int, help="split each batch into this many row blocks, "
                   "run on parallel threads; the same gradient up to rounding (default 2)")
    g.add_argument("--passkey-frac", type=float, help="share of each batch made of passkey prompts")
    g.add_argument("--passkey-digits", type=int, help="digits of the passkey (5)")
    g.add_argument("--passkey-loss", choices=["all", "answer", "keys"], help="which targets of a passkey row carry loss: all, answer, or keys (the answer "
                   "and the needle's second copy of the key)")
    p.add_argument("--sample-chars", type=int, default=300, help="print a sample this long at the end (0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = OneLineParser(prog="python -m minifope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("train", help="train a character-level GPT and save DIR/ckpt.npz",
                       description="Train a character-level GPT. Unset options take the defaults "
                       "(or, with --resume, the checkpoint's values).")
    add_train_flags(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--ckpt", required=True, help="run folder (or .npz file) to load")
    p.add_argument("--prompt", help="text to continue (default: a newline)")
    p.add_argument("--chars", type=int, default=500, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=int, help="sample among the k most likely characters only")
    p.add_argument("--seed", type=int, default=0)
    add_threads_flag(p)
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("experiment", help="train position embeddings at N and compare them past N",
                       description="Train each variant for each seed, evaluate loss by length and "
                       "passkey retrieval, write results.json, results.md and figures. Run it again "
                       "to resume an interrupted experiment.")
    add_experiment_flags(p, "runs/experiment", default_jobs=2)
    p.set_defaults(run=cmd_experiment)

    p = sub.add_parser("demo", help="the scaled-down Figure 1: RoPE, FoPE, ALiBi past N (about 12 min)")
    # one process per embedding; at most 3500 steps keeps it under 15 minutes on 2 cores
    add_experiment_flags(p, "runs/demo", default_jobs=3, default_max_steps=3500)
    p.set_defaults(run=cmd_experiment)

    p = sub.add_parser("gradcheck", help="check the whole model's hand-written gradients against autograd")
    p.add_argument("--pe", nargs="+", choices=["rope", "fope", "fope-learnable", "alibi", "nope"],
                   help="which position embeddings (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="print the per-tensor tables")
    p.set_defaults(run=cmd_gradcheck)

    from .bench import add_bench_flags, cmd_bench

    p = sub.add_parser("bench", help="time the NumPy engine against the torch path on this CPU",
                       description="Time a training step, the attention core, memory and generation: "
                       "the NumPy engine against torch on the CPU, in one run (see minifope/bench.py).")
    add_bench_flags(p)
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv=None, parser=None):
    """Run a command; a UserError becomes one line on stderr and exit status 2. `parser`
    defaults to this module's (python -m minifope.torch.train passes its own)."""
    args = (parser or build_parser()).parse_args(argv)
    try:
        with blas_threads(getattr(args, "threads", None)):
            return args.run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 130
