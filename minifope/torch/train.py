"""The torch trainer: minifope/train.py at GPU scale, on one device or on many with torchrun.

    python -m minifope.torch.train --device cuda --out runs/big --d-model 512 --n-layer 8 --n-head 8
    torchrun --standalone --nproc-per-node 8 -m minifope.torch.train --device cuda --out runs/big ...

The flags are `python -m minifope train`'s (flags.py, shared by both), plus --device, --amp
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
import math
import os

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .. import flags
from ..data import load_corpus
from ..errors import UserError
from ..lengthgen import eval_windows
from ..loop import TrainConfig, history_from, prepare_run, train_loop
from ..optim import AdamW as NumpyAdamW
from ..runfolder import RunFolder
from ..train import no_decay
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


def eval_dtype(amp, device, dtype):
    """The autocast dtype evaluation runs under, as training did: bfloat16 where autocast
    (amp) is on, None (the weights' own dtype) where it is off."""
    on = amp == "bf16" or (amp == "auto" and device.type == "cuda" and dtype == "float32")
    return torch.bfloat16 if on else None


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
          amp="auto", compile=False, overwrite=False, allow_data_change=False, probe=None):
    """minifope.train.train with a torch GPT: same arguments, plus device ('auto' | 'cpu' |
    'cuda'), amp ('auto' | 'bf16' | 'off') and compile. Returns (torch GPT, history).
    probe(model, tokenizer), as for minifope.train.train, gets a NumpyView of the torch GPT
    that runs under the training's autocast.

    The loop is loop.train_loop, the NumPy trainer's; this supplies the torch step. Under
    torchrun, call init_distributed(resolve_device(...)) first (the command line does):
    each process then trains on its slice of every batch, and batch_size must be divisible
    by the number of processes. Rank 0 holds the run folder's lock, writes the log and saves.
    """
    tc = train_config or TrainConfig()
    device = resolve_device(device)
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if tc.batch_size % world:
        raise UserError(f"--batch-size {tc.batch_size} is the global batch: it must be divisible "
                        f"by the {world} processes")
    folder = RunFolder(out_dir) if out_dir is not None else None
    with (folder if folder is not None and rank == 0 else contextlib.nullcontext()):
        run = prepare_run(model_config, tc, folder, train_text, val_text, resume=resume,
                          overwrite=overwrite, tokenizer=tokenizer, data_name=data_name,
                          init_from=init_from, allow_data_change=allow_data_change)
        mirror = run.model
        model = to_torch(mirror, device)
        amp, view = (autocast(amp, device, mirror.config.dtype),
                     NumpyView(model, eval_dtype(amp, device, mirror.config.dtype)))
        optimizer, names = make_optimizer(model, tc, device)
        if resume:
            load_optimizer_state(optimizer, names, run.optim_state, mirror.params)
        if folder is not None and rank == 0:
            folder.start(run.records, new=not resume)
        compiled = torch.compile(model) if compile else model
        step_model = compiled
        if world > 1:
            step_model = DistributedDataParallel(
                compiled, device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False)  # the buffers never change
        params = list(model.parameters())
        local = tc.batch_size // world
        rows = slice(rank * local, (rank + 1) * local)

        def all_ranks(value, op=dist.ReduceOp.SUM):
            if world == 1:
                return value
            t = torch.tensor(value, dtype=torch.float64, device=device)
            dist.all_reduce(t, op=op)
            return t.item()

        def forward_backward(x, y):
            # x, y: the global batch, the same on every rank; this rank trains on its rows
            count, local_count = int((y != -1).sum()), int((y[rows] != -1).sum())
            xb = torch.from_numpy(x[rows]).to(device, non_blocking=True)
            yb = torch.from_numpy(y[rows]).to(device, non_blocking=True)
            with amp():
                _, loss = step_model(xb, yb)
            # DDP averages over ranks: weight this rank's mean by its share of the counted targets
            weight = local_count * world / max(count, 1)
            value = loss.item() if world == 1 else all_ranks(loss.item() * local_count) / max(count, 1)
            if math.isfinite(value):
                (loss * weight).backward()
            return value

        def update(lr):
            grad_norm = clip_grad_norm(params, tc.grad_clip)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return grad_norm

        def save(state):
            save_checkpoint(folder.checkpoint, model, run.tokenizer, state,
                            optimizer_state(optimizer, names), into=mirror)

        records = train_loop(
            run, tc, folder, forward_backward=forward_backward, update=update,
            evaluate=lambda: evaluate(compiled, run.val_data, mirror.config.train_len, tc.batch_size,
                                      tc.eval_batches, amp, device),
            save=save, desc=f"train {mirror.config.pe} ({device.type} x{world})",
            progress=progress, main_process=rank == 0,
            any_process=lambda flag: bool(all_ranks(float(flag), dist.ReduceOp.MAX)),
            probe=(lambda: probe(view, run.tokenizer)) if probe is not None else None)
    return model, history_from(records)


# --- the command line ----------------------------------------------------------------------------

def build_parser():
    """`python -m minifope train`'s flags (same names, same defaults), plus the torch flags."""
    parser = flags.OneLineParser(prog="python -m minifope.torch.train",
                                 description="Train the character-level GPT with PyTorch, on one "
                                 "device or, under torchrun, on several.")
    flags.add_train_flags(parser)
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
        torch.set_num_threads(args.threads)  # its flag type has checked it is at least 1
    device = init_distributed(resolve_device(args.device))
    rank = dist.get_rank() if dist.is_initialized() else 0
    model_config, train_config, data = flags.train_configs(args)
    train_text, val_text = load_corpus(data)
    model, history = train(model_config, train_text, val_text, train_config, out_dir=args.out,
                           resume=args.resume, data_name=data, progress=not args.quiet,
                           init_from=None if args.resume else args.init_from, device=device,
                           amp=args.amp, compile=args.compile, overwrite=args.overwrite,
                           allow_data_change=args.allow_data_change)
    if rank == 0:
        view = NumpyView(model, eval_dtype(args.amp, device, model_config.dtype))
        flags.finish_train(args, history, model.num_params(), view, train_config.seed)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return flags.run_command(args.run, args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
