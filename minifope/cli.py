"""The command line: python -m minifope COMMAND [options]; --help on each command.

A user's mistake (a UserError, or a flag value its type refuses) prints one line on stderr
and exits with status 2, without a traceback; how every command ends is
flags.run_command's. The train flags, shared with python -m minifope.torch.train, are in
flags.py.
"""

import sys
from pathlib import Path

from .errors import UserError
from .flags import (OneLineParser, add_threads_flag, add_train_flags, at_least_two, finish_train,
                    fraction, make_config, natural, nonnegative_float, path, positive_float,
                    positive_int, run_command, train_configs)



def cmd_train(args):
    from .data import load_corpus
    from .train import train

    model_config, train_config, data = train_configs(args)
    train_text, val_text = load_corpus(data)
    model, history = train(model_config, train_text, val_text, train_config, out_dir=args.out,
                           resume=args.resume, data_name=data, progress=not args.quiet,
                           init_from=None if args.resume else args.init_from,
                           overwrite=args.overwrite, allow_data_change=args.allow_data_change)
    finish_train(args, history, model.num_params(), model, train_config.seed)
    return 0


def cmd_gradcheck(args):
    from .gradcheck import check_model

    cases = {"rope": {}, "fope": {"fope_dim": 64}, "fope-learnable": {"fope_dim": 64, "fope_learnable": True},
             "alibi": {}, "nope": {}, "sinusoidal": {}}
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


def cmd_sample(args):
    from .checkpoint import load_checkpoint
    from .sample import generate

    model, tokenizer, _, _ = load_checkpoint(args.ckpt)
    prompt = args.prompt if args.prompt is not None else "\n"
    if prompt == "":
        raise UserError("--prompt is empty: give at least one character")
    ids = tokenizer.encode(prompt)[None]

    def write(text):
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            raise  # the reader has gone (`| head`): flags.run_command ends quietly
        except OSError as e:
            raise UserError(f"cannot write the sample to standard output ({e.strerror})") from None

    write(prompt)
    generate(model, ids, args.chars, temperature=args.temperature, top_k=args.top_k,
             seed=args.seed, on_token=_streamer(tokenizer, write))
    write("\n")
    return 0


def _streamer(tokenizer, write):
    """on_token for generate: writes each new token's text. A byte-level BPE token may end
    inside a character (its UTF-8 bytes split over tokens): such tokens wait until the
    character is whole, then go out together."""
    if tokenizer.kind == "char":
        return lambda token: write(tokenizer.decode(token))
    pending = []  # ids after the last whole character written

    def on_token(token):
        pending.extend(int(i) for i in token)
        text = tokenizer.decode(pending)
        if not text.endswith("\ufffd"):
            write(text)
            pending.clear()

    return on_token


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
    for flag in ("steps", "batch_size", "lr", "passkey_frac", "passkey_loss", "tokenizer", "bpe_vocab"):
        if getattr(args, flag) is not None:
            train[flag] = getattr(args, flag)
    if args.bpe_vocab is not None and train.get("tokenizer") != "bpe":
        raise UserError("--bpe-vocab only takes effect with --tokenizer bpe")
    if args.steps is not None and train.get("warmup", 0) > args.steps:
        train["warmup"] = args.steps // 10  # the preset's warmup, shortened to fit fewer steps
    changes = dict(variants=list(dict.fromkeys(variants)), model=model, train=train)
    for flag, name in (("seeds", "seeds"), ("lengths", "multipliers"), ("passkey_lengths", "passkey_multipliers"),
                       ("prompts", "prompts"), ("extend", "extend"),
                       ("continue_at", "continue_factor"), ("continue_steps", "continue_steps"),
                       ("continue_yarn_scale", "continue_yarn_scale"),
                       ("data", "data"), ("eval_data", "eval_data"), ("eval_chars", "eval_chars"),
                       ("backend", "backend"), ("device", "device")):
        if getattr(args, flag) is not None:
            changes[name] = getattr(args, flag)
    import dataclasses

    return dataclasses.replace(ec, **changes)


def cmd_flip(args):
    from .flip import flip_map, write

    points = []
    for item in args.point:
        if len(item) not in (3, 4):
            raise UserError(f"--point takes AXIS VALUE DIR [SUFFIX], got {len(item)} item(s): {' '.join(item)}")
        axis, value, folder, *suffix = item
        points.append((axis, value, Path(folder), suffix[0] if suffix else ""))
    result = flip_map(points, args.fope, args.alibi, *([args.embeddings] if args.embeddings else []))
    write(result, args.out)
    print(f"the map of {len(points)} point(s): {args.out}/flip.md, flip.json, flip.png")
    return 0


def cmd_experiment(args):
    """`experiment` and `demo` (the same run with the demo's defaults)."""
    import time

    from .experiment import markdown_table, run_experiment

    start = time.time()
    ec = experiment_config(args, args.preset())
    if args.mechanism_to is not None:
        from .mechanism_lab import run_lab_mechanism

        run_lab_mechanism(ec, args.out, args.mechanism_to)
        print(f"the mechanism measures of {args.out}'s finished runs: {args.mechanism_to}/mechanism.md, "
              f"mechanism.json, mechanism.png ({time.time() - start:.0f} s)")
        return 0
    if args.report_to is not None:
        from .experiment import report_finished

        summary = report_finished(ec, args.out, args.report_to)
        print(markdown_table(summary))
        print(f"the runs of {args.out} finished so far (seeds {summary['variants'][ec.variants[0]]['seeds']}): "
              f"results and figures in {args.report_to}, the records of every run evaluated so far "
              f"(eval*.json, log.jsonl) in {args.report_to}/runs")
        return 0
    summary = run_experiment(ec, args.out, progress=not args.quiet, jobs=args.jobs)
    print(markdown_table(summary))
    print(f"results: {args.out}/results.json and results.md; figures: {args.out}/figure.png, "
          f"passkey_by_distance.png, retrieval_curves.png, loss_by_position.png "
          f"({time.time() - start:.0f} s)")
    return 0


def add_experiment_flags(p, default_out, preset):
    """The flags of `experiment` and `demo`; preset() -> the ExperimentConfig whose values the
    unset flags keep (the defaults in the help are the experiment's)."""
    from .experiment import ALIASES, DEFAULT_COMPARISON

    p.set_defaults(preset=preset)
    p.add_argument("--out", type=path, default=default_out, help=f"experiment folder (default: {default_out})")
    p.add_argument("--pe", nargs="+", choices=list(ALIASES), metavar="VARIANT",
                   help=f"variants to compare, in place of the default ({' '.join(DEFAULT_COMPARISON)}): "
                   f"{', '.join(ALIASES)}")
    p.add_argument("--variants", nargs="+", metavar="V",
                   help="more variants: any of --pe's, or NAME:field=value[,...]")
    p.add_argument("--sigma", nargs="+", type=nonnegative_float, help="FoPE sigma sweep (adds fope variants)")
    p.add_argument("--fope-dims", nargs="+", type=natural, help="FoPE D sweep (adds fope variants)")
    p.add_argument("--seeds", type=positive_int, help="seeds per variant (3; demo 1)")
    p.add_argument("--d-model", type=positive_int)
    p.add_argument("--n-layer", type=positive_int)
    p.add_argument("--n-head", type=positive_int)
    p.add_argument("--train-len", type=positive_int, help="N, the training length")
    p.add_argument("--steps", type=positive_int, help="the steps every run trains, the same for all (8000; demo 1400)")
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr", type=positive_float, help="learning rate, constant after warmup (3e-3)")
    p.add_argument("--passkey-frac", type=fraction, help="share of each batch made of passkey prompts")
    p.add_argument("--passkey-loss", choices=["all", "answer", "keys"],
                   help="which targets of a passkey row carry loss: all, answer, or keys (the answer "
                   "and the needle's second copy of the key)")
    p.add_argument("--tokenizer", choices=["char", "bpe"], help="char: one token per character (the "
                   "default); bpe: a byte-level BPE learned on the training text, every length, distance "
                   "and --eval-chars then counted in its tokens")
    p.add_argument("--bpe-vocab", type=positive_int, help="with --tokenizer bpe: its vocabulary size (512)")
    p.add_argument("--lengths", nargs="+", type=positive_int, help="loss at N x these (1 2 4 8 16; demo 1 2 4 8)")
    p.add_argument("--eval-chars", type=positive_int, help="characters (tokens, with --tokenizer bpe) of "
                   "evaluation text per length, in non-overlapping windows (262144; demo 65536; or as much "
                   "as the text holds)")
    p.add_argument("--passkey-lengths", nargs="+", type=positive_int,
                   help="passkey at N x these (1 2 4 8 16; demo 1 2 4 8)")
    p.add_argument("--prompts", type=positive_int, help="passkey prompts per (length, distance) cell and "
                   "seed, each with a fresh key (32; demo 16)")
    p.add_argument("--extend", nargs="+", choices=["pi", "ntk", "yarn"],
                   help="also evaluate RoPE under these scalings, s = L / N")
    p.add_argument("--continue-at", type=at_least_two, metavar="K",
                   help="also train each RoPE model on at K x N with YaRN and switched to FoPE, and "
                   "each FoPE model on with FoPE, from its checkpoint (Figure 3)")
    p.add_argument("--continue-steps", type=positive_int, help="steps of each continued run (200)")
    p.add_argument("--continue-yarn-scale", type=positive_float, metavar="S",
                   help="YaRN's fixed scale in the continued RoPE runs (16, as the FoPE authors' "
                   "baseline; no attention temperature)")
    p.add_argument("--data", type=path, help="training text: shakespeare (default), pydoc or a file")
    p.add_argument("--eval-data", type=path, help="evaluate the loss on this text instead (a data shift): "
                   "a file, or a corpus (shakespeare, pydoc) whose characters join the vocabulary")
    p.add_argument("--jobs", type=positive_int,
                   help="runs trained at once, each in its own process (default: one per core, at "
                   "most one per run); the cores are shared among the runs still going")
    p.add_argument("--backend", choices=["numpy", "torch"], help="train and evaluate with the NumPy "
                   "engine (the default) or the torch model (minifope.torch; bfloat16 autocast on a GPU); "
                   "the results files are the same, and either resumes the other's runs")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="with --backend torch: where to run "
                   "(auto, the default: a GPU if there is one); on a GPU one run at a time unless --jobs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report-to", type=path, metavar="DIR", help="train nothing: write the results of "
                   "the runs of --out finished so far (every variant of a seed evaluated) into DIR, "
                   "and every evaluated run's records (eval*.json, log.jsonl) into DIR/runs, from "
                   "which an experiment resumes without training them again; give the flags the "
                   "experiment was started with")
    p.add_argument("--mechanism-to", type=path, metavar="DIR", help="train nothing: measure spectrum "
                   "damage in the finished runs of --out and at their init (mechanism_lab.py) and write "
                   "mechanism.md, .json, .png into DIR; give the flags the experiment was started with")
    add_threads_flag(p, ", shared among the jobs")


def build_parser():
    # the name it was called by: the `minifope` command, or python -m minifope
    prog = "minifope" if Path(sys.argv[0]).name == "minifope" else "python -m minifope"
    parser = OneLineParser(prog=prog, description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    p = sub.add_parser("train", help="train a character-level GPT and save DIR/ckpt.npz",
                       description="Train a character-level GPT. Unset options take the defaults "
                       "(or, with --resume, the checkpoint's values).")
    add_train_flags(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("sample", help="generate text from a checkpoint")
    p.add_argument("--ckpt", type=path, required=True, help="run folder (or .npz file) to load")
    p.add_argument("--prompt", help="text to continue (default: a newline)")
    p.add_argument("--chars", type=natural, default=500, help="tokens to generate: characters, or "
                   "subword tokens for a model trained with --tokenizer bpe")
    p.add_argument("--temperature", type=nonnegative_float, default=0.8, help="0 means greedy")
    p.add_argument("--top-k", type=positive_int, help="sample among the k most likely tokens only")
    p.add_argument("--seed", type=natural, default=0)
    add_threads_flag(p)
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser("experiment", help="train position embeddings at N and compare them past N",
                       description="Train each variant for each seed, evaluate loss by length and "
                       "passkey retrieval, write results.json, results.md and figures. Run it again "
                       "to resume an interrupted experiment.")
    from .experiment import ExperimentConfig, demo_config

    add_experiment_flags(p, "runs/experiment", ExperimentConfig)
    p.set_defaults(run=cmd_experiment)

    p = sub.add_parser("demo", help="the scaled-down Figure 1: RoPE, FoPE, ALiBi past N (about 13 min on 2 "
                       "cores)", description="The experiment's design at a smaller scale: rope, fope "
                       "as the authors ran it and alibi, one seed, lengths to 8N, 16 passkey prompts "
                       "per cell (experiment.demo_config). The flags change it as they change experiment's.")
    add_experiment_flags(p, "runs/demo", demo_config)
    p.set_defaults(run=cmd_experiment)

    p = sub.add_parser("gradcheck", help="check the whole model's hand-written gradients against autograd")
    p.add_argument("--pe", nargs="+", choices=["rope", "fope", "fope-learnable", "alibi", "nope", "sinusoidal"],
                   help="which position embeddings (default: all)")
    p.add_argument("--seed", type=natural, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="print the per-tensor tables")
    p.set_defaults(run=cmd_gradcheck)

    p = sub.add_parser("flip", help="the map of where the ordering flips, from experiment reports",
                       description="Rank the embeddings at every point (an experiment report written by "
                       "experiment --report-to) on loss at 4N and 16N and on retrieval past N, and say where "
                       "FoPE and ALiBi separate, on loss at every length with where the lead changes hands; write "
                       "flip.md, flip.json and flip.png (minifope/flip.py).")
    p.add_argument("--out", type=path, required=True, help="folder for flip.md, flip.json and flip.png")
    p.add_argument("--point", nargs="+", action="append", required=True, metavar="ITEM",
                   help="AXIS VALUE DIR [SUFFIX]: DIR/results.json at VALUE of AXIS, its variants those "
                   "whose label ends with SUFFIX (e.g. :n_head=2; none: the labels without one); repeat per point")
    p.add_argument("--fope", default="fope-authors", help="the FoPE variant set against ALiBi (fope-authors)")
    p.add_argument("--alibi", default="alibi", help="the ALiBi variant (alibi)")
    p.add_argument("--embeddings", nargs="+", metavar="NAME", help="the variants ranked at every point "
                   "(rope fope-authors alibi nope clip-only; others in a report are left out)")
    p.set_defaults(run=cmd_flip)

    from .bench import add_bench_flags, cmd_bench

    p = sub.add_parser("bench", help="time the NumPy engine against the torch path on this CPU",
                       description="Time a training step, the attention core, memory and generation: "
                       "the NumPy engine against torch on the CPU, in one run (see minifope/bench.py).")
    add_bench_flags(p)
    p.set_defaults(run=cmd_bench)
    return parser


def main(argv=None):
    """Run a command; how it ends (exit status, one-line errors) is flags.run_command's."""
    args = build_parser().parse_args(argv)
    return run_command(args.run, args)
