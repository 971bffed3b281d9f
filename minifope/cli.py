"""The command line: python -m minifope COMMAND [options]; --help on each command.

A user's mistake (a UserError) prints one line on stderr and exits with status 2, without
a traceback. Config values are checked by GPTConfig, whose ValueError `make_config` turns
into a UserError.
"""

import argparse
import sys

from .errors import UserError


def make_config(**fields):
    """GPTConfig(**fields), with a bad value reported as the user's mistake."""
    from .config import GPTConfig

    try:
        return GPTConfig(**fields)
    except ValueError as e:
        raise UserError(str(e)) from None


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


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m minifope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("gradcheck", help="check the whole model's hand-written gradients against autograd")
    p.add_argument("--pe", nargs="+", choices=["rope", "fope", "fope-learnable", "alibi", "nope"],
                   help="which position embeddings (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true", help="print the per-tensor tables")
    p.set_defaults(run=cmd_gradcheck)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
