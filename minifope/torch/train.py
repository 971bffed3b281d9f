"""The torch trainer: minifope/train.py at GPU scale, on one device or on many with torchrun.

    python -m minifope.torch.train --device cuda --out runs/big --d-model 512 --n-layer 8 --n-head 8
    torchrun --standalone --nproc-per-node 8 -m minifope.torch.train --device cuda --out runs/big ...

The flags are `python -m minifope train`'s (its parser is reused), plus --device, --amp
(bfloat16 autocast, the default on a GPU) and --compile (torch.compile). Everything else
is the NumPy trainer's: the data and its batches (minifope.data.get_batch from the same
seeded RNG), AdamW's hyperparameters and decay groups (minifope.train.no_decay), the
warmup + cosine schedule (minifope.optim.lr_schedule), global-norm clipping, the fixed
validation windows, log.jsonl, and DIR/ckpt.npz in the NumPy format, written atomically
with the optimizer state as the NumPy AdamW keeps it. A run can therefore be resumed, and
its checkpoint sampled or evaluated, by either trainer.

Data parallel (torchrun, torch.distributed, DistributedDataParallel; nccl on GPUs, gloo on
CPU): every process draws the same global batch of --batch-size rows from the same RNG and
trains on its own contiguous slice of batch_size / world_size rows. DDP averages the
gradients over processes; each process weights its loss by its share of the counted
targets, so the average is the gradient of the global batch's mean loss, exactly what one
process would compute. (TrainConfig.micro_batches, the NumPy trainer's split of a batch
over threads, is not used here: torch spreads each op over its threads itself.) Every
process evaluates the same validation windows (no
communication, the same number on every rank); rank 0 writes the log and the checkpoint.
"""

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .. import cli
from ..checkpoint import CKPT_NAME, atomic_write, checkpoint_path, load_checkpoint
from ..data import get_batch, load_corpus
from ..errors import UserError
from ..lengthgen import eval_windows
from ..optim import AdamW as NumpyAdamW
from ..optim import lr_schedule
from ..sample import generate
from ..train import (LOG_NAME, TrainConfig, history_from, read_log, start_run, StopOnSigint,
                     no_decay)
from .checkpoint import save_checkpoint
from .convert import to_torch
from .numpy_view import NumpyView


def resolve_device(device):
    """'auto' | 'cpu' | 'cuda' (or a torch.device) -> torch.device; auto prefers a GPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA device (torch.cuda.is_available() "
                        "is False); use --device cpu")
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


def init_distributed(device):
    """Join torchrun's process group when there is one (WORLD_SIZE > 1): nccl with one GPU per
    process (cuda:LOCAL_RANK), gloo on CPU. Returns the device this process trains on."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def autocast(amp, device, dtype):
    """The autocast context for amp 'auto' | 'bf16' | 'off': auto means bfloat16 on a GPU with
    float32 weights, nothing otherwise."""
    if amp not in ("auto", "bf16", "off"):
        raise UserError(f"--amp must be auto, bf16 or off, got {amp!r}")
    if amp == "bf16" and dtype != "float32":
        raise UserError("--amp bf16 needs --dtype float32 (autocast leaves float64 alone)")
    if amp == "bf16" or (amp == "auto" and device.type == "cuda" and dtype == "float32"):
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


# --- the optimizer: the NumPy trainer's AdamW, as torch.optim.AdamW --------------------------

def make_optimizer(model, tc, device):
    """torch.optim.AdamW with the NumPy AdamW's betas and eps and the NumPy trainer's decay
    groups (decay only tensors with ndim >= 2, never FoPE coefficients). Returns the
    optimizer and the parameter names in the optimizer's order."""
    reference = NumpyAdamW({})
    named = list(model.named_parameters())
    decay = [(n, p) for n, p in named if not no_decay(n, p)]
    keep = [(n, p) for n, p in named if no_decay(n, p)]
    groups = [dict(params=[p for _, p in decay], weight_decay=tc.weight_decay),
              dict(params=[p for _, p in keep], weight_decay=0.0)]
    optimizer = torch.optim.AdamW(groups, lr=tc.lr, betas=reference.betas, eps=reference.eps,
                                  fused=True if device.type == "cuda" else None)
    return optimizer, [n for n, _ in decay + keep]


def optimizer_state(optimizer, names):
    """The torch AdamW's state in the NumPy AdamW's state_dict format: t, m.<name>, v.<name>."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = {"t": np.array(0, dtype=np.int64)}
    for name, p in zip(names, params):
        s = optimizer.state.get(p, {})
        if "step" in s:
            state["t"] = np.array(int(s["step"]), dtype=np.int64)
        zeros = torch.zeros_like(p, device="cpu")
        state["m." + name] = s.get("exp_avg", zeros).detach().cpu().numpy()
        state["v." + name] = s.get("exp_avg_sq", zeros).detach().cpu().numpy()
    return state


def load_optimizer_state(optimizer, names, arrays, numpy_params):
    """Restore a NumPy-format optimizer state; the NumPy AdamW checks it (UserError if it does
    not fit) before anything changes."""
    check = NumpyAdamW(numpy_params)
    check.load_state_dict(arrays)
    if check.t == 0:
        return
    state = optimizer.state_dict()
    state["state"] = {i: {"step": torch.tensor(float(check.t)),
                          "exp_avg": torch.from_numpy(check.m[n]),
                          "exp_avg_sq": torch.from_numpy(check.v[n])} for i, n in enumerate(names)}
    optimizer.load_state_dict(state)


def clip_grad_norm(params, max_norm):
    """minifope.optim.clip_grad_norm on torch gradients: the global L2 norm, summed in float64,
    scaled down to max_norm when above it (not when non-finite); returns the norm before."""
    grads = [p.grad for p in params if p.grad is not None]
    squares = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float64) ** 2 for g in grads])
    norm = math.sqrt(squares.sum().item())
    if max_norm is not None and max_norm > 0 and math.isfinite(norm) and norm > max_norm:
        for g in grads:
            g.mul_(max_norm / norm)
    return norm


@torch.no_grad()
def evaluate(model, data, train_len, batch_size, n_batches, amp, device):
    """minifope.train.evaluate for a torch GPT: mean loss over the same fixed windows."""
    windows = torch.from_numpy(eval_windows(data, train_len, batch_size * n_batches))
    losses = []
    for w in windows.to(device).chunk(n_batches):
        with amp():
            losses.append(model(w[:, :-1], w[:, 1:])[1].item())
    return float(np.mean(losses))


# --- the run ------------------------------------------------------------------------------------

def train(model_config, train_text, val_text, train_config=None, out_dir=None, resume=False,
          tokenizer=None, data_name=None, progress=True, init_from=None, device="auto",
          amp="auto", compile=False):
    """minifope.train.train with a torch GPT: same arguments, plus device ('auto' | 'cpu' |
    'cuda'), amp ('auto' | 'bf16' | 'off') and compile. Returns (torch GPT, history).

    Under torchrun, call init_distributed(resolve_device(...)) first (the command line
    does): each process then trains on its slice of every batch, and batch_size must be
    divisible by the number of processes.
    """
    tc = train_config or TrainConfig()
    device = resolve_device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if tc.batch_size % world:
        raise UserError(f"--batch-size {tc.batch_size} is the global batch: it must be divisible "
                        f"by the {world} processes")
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / CKPT_NAME if out is not None else None
    mirror, tokenizer, state, optim_state, train_data, val_data = start_run(
        model_config, tc, ckpt, resume, tokenizer, train_text, val_text, data_name, init_from)
    T = mirror.config.train_len
    n_passkey = round(tc.passkey_frac * tc.batch_size)
    if n_passkey:
        from ..passkey import passkey_examples

    model = to_torch(mirror, device)
    amp = autocast(amp, device, mirror.config.dtype)
    optimizer, names = make_optimizer(model, tc, device)
    rng = np.random.default_rng(tc.seed)
    step, records = 0, []
    if resume:
        load_optimizer_state(optimizer, names, optim_state, mirror.params)
        rng.bit_generator.state = state["rng"]
        step = state["step"]
        records = read_log(out, step)
        if rank == 0:
            atomic_write(out / LOG_NAME,
                         lambda f: f.write("".join(json.dumps(r) + "\n" for r in records).encode()))
    compiled = torch.compile(model) if compile else model
    run = compiled
    if world > 1:
        run = DistributedDataParallel(compiled, device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)  # the buffers never change
    params = list(model.parameters())

    def save():
        if ckpt is not None and rank == 0:
            save_checkpoint(ckpt, model, tokenizer, dict(
                step=step, rng=rng.bit_generator.state, train_config=dataclasses.asdict(tc),
                data=data_name, init_from=None if init_from is None else str(init_from)),
                optimizer_state(optimizer, names), into=mirror)

    def log(record):
        records.append(record)
        if out is not None and rank == 0:
            with open(out / LOG_NAME, "a") as f:
                f.write(json.dumps(record) + "\n")

    def diverged(what, value, at_step):
        kept = f"; the last good checkpoint is kept in {ckpt}" if ckpt and ckpt.exists() else ""
        return UserError(f"{what} became {value} at step {at_step}{kept}. Lower --lr (now {tc.lr}) "
                         "or --grad-clip")

    def all_ranks(value, op=dist.ReduceOp.SUM):
        if world == 1:
            return value
        t = torch.tensor(value, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=op)
        return t.item()

    if out is not None and rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    local = tc.batch_size // world
    rows = slice(rank * local, (rank + 1) * local)
    chars_per_step = tc.batch_size * T
    bar = tqdm(total=tc.steps, initial=step, disable=not progress or rank != 0,
               desc=f"train {mirror.config.pe} ({device.type} x{world})", unit="step", dynamic_ncols=True)
    val_loss = None
    with StopOnSigint() as sigint:
        while step < tc.steps:
            t0 = time.perf_counter()
            lr = lr_schedule(step, tc.lr, tc.warmup, tc.steps, tc.min_lr)
            x, y = get_batch(train_data, tc.batch_size, T, rng)  # the global batch, on every rank
            if n_passkey:
                x[-n_passkey:], y[-n_passkey:] = passkey_examples(
                    rng, n_passkey, T, tokenizer, tc.passkey_digits, loss=tc.passkey_loss)
            count, local_count = int((y != -1).sum()), int((y[rows] != -1).sum())
            xb = torch.from_numpy(x[rows]).to(device, non_blocking=True)
            yb = torch.from_numpy(y[rows]).to(device, non_blocking=True)
            with amp():
                _, loss = run(xb, yb)
            # DDP averages over ranks: weight this rank's mean by its share of the counted targets
            weight = local_count * world / max(count, 1)
            loss_value = loss.item() if world == 1 else all_ranks(loss.item() * local_count) / max(count, 1)
            if not math.isfinite(loss_value):
                bar.close()
                raise diverged("the training loss", loss_value, step + 1)
            (loss * weight).backward()
            grad_norm = clip_grad_norm(params, tc.grad_clip)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            rate = chars_per_step / (time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{val_loss:.3f}" if val_loss else "-",
                            chars_s=f"{rate:,.0f}")
            record = {"step": step}
            if step % tc.log_interval == 0:
                record.update(loss=loss_value, lr=lr, grad_norm=grad_norm, chars_per_s=rate)
            if step % tc.eval_interval == 0 or step == tc.steps:
                val_loss = evaluate(compiled, val_data, T, tc.batch_size, tc.eval_batches, amp, device)
                if not math.isfinite(val_loss):
                    bar.close()
                    raise diverged("the validation loss", val_loss, step)
                record["val_loss"] = val_loss
                if rank == 0:
                    bar.write(f"step {step}: train loss {loss_value:.4f}, val loss {val_loss:.4f}")
            if len(record) > 1:
                log(record)
            if "val_loss" in record:
                save()
            if all_ranks(float(sigint.requested), dist.ReduceOp.MAX):
                save()
                bar.close()
                where = f"; checkpoint saved in {ckpt}, continue with --resume" if ckpt else ""
                raise KeyboardInterrupt(f"stopped at step {step}{where}")
    bar.close()
    return model, history_from(records)


# --- the command line ----------------------------------------------------------------------------

def build_parser():
    """`python -m minifope train`'s flags (same names, same defaults), plus the torch flags."""
    parser = cli.OneLineParser(prog="python -m minifope.torch.train",
                               description="Train the character-level GPT with PyTorch, on one "
                               "device or, under torchrun, on several.")
    cli.add_train_flags(parser)
    g = parser.add_argument_group("torch")
    g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to train (auto: a GPU if there is one); under torchrun, one GPU per process")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"],
                   help="bfloat16 autocast (auto: on a GPU with float32 weights)")
    g.add_argument("--compile", action="store_true", help="compile the model with torch.compile")
    parser.set_defaults(run=cmd_train)
    return parser


def cmd_train(args):
    if args.threads is not None:
        torch.set_num_threads(args.threads)  # cli.main has checked it is at least 1
    device = init_distributed(resolve_device(args.device))
    rank = dist.get_rank() if dist.is_initialized() else 0
    model_config, train_config, data = cli.train_configs(args)
    if args.overwrite and not args.resume and rank == 0:
        cli.remove_previous_run(args.out)
    if dist.is_initialized():
        dist.barrier()  # no rank looks for a previous run before rank 0 has removed it
    train_text, val_text = load_corpus(data)
    model, history = train(model_config, train_text, val_text, train_config, out_dir=args.out,
                           resume=args.resume, data_name=data, progress=not args.quiet,
                           init_from=None if args.resume else args.init_from, device=device,
                           amp=args.amp, compile=args.compile)
    if rank != 0:
        return 0
    print(f"final validation loss {history['val_loss'][-1]:.4f} nats/char "
          f"({model.num_params():,} parameters); checkpoint in {checkpoint_path(args.out)}")
    if args.sample_chars:
        _, tokenizer, _, _ = load_checkpoint(checkpoint_path(args.out))
        prompt = tokenizer.encode("\n")[None] if "\n" in tokenizer.chars else np.zeros((1, 1), np.int64)
        view = NumpyView(model, torch.bfloat16 if device.type == "cuda" and args.amp != "off"
                         and model_config.dtype == "float32" else None)
        ids = generate(view, prompt, args.sample_chars, temperature=0.8, seed=train_config.seed)
        print("\n--- sample ---" + tokenizer.decode(ids[0]))
    return 0


def main(argv=None):
    try:
        return cli.main(argv, build_parser())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
