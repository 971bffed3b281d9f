"""The NumPy trainer: random windows of text, AdamW, warmup + cosine, in one loop.

    model, history = train(GPTConfig(pe="fope"), train_text, val_text, TrainConfig(steps=500))

Each step: a batch of `batch_size` random windows of `train_len + 1` characters, forward,
backward (as `micro_batches` row blocks on parallel threads, see parallel.py), global-norm
clipping, AdamW at the scheduled learning rate. Every `eval_interval` steps (and at the
end) the validation loss is measured on fixed windows of the validation text and, given an
`out_dir`, the checkpoint DIR/ckpt.npz is rewritten atomically and the metrics are
appended to DIR/log.jsonl. The loop itself (batches, progress, log, checkpoints, Ctrl-C
and SIGTERM, the NaN stop) is loop.py's, shared with the torch trainer; this file
supplies the NumPy engine's step.

Reproducible: `seed` fixes the model's init (GPTConfig.seed is set to it) and the order of
the batches. The batch RNG's state is saved with the checkpoint, so a run stopped and
resumed draws the same batches as one that never stopped.
"""

import contextlib

import numpy as np

from .lengthgen import eval_windows
from .loop import (TrainConfig, check_resume, history_from, passkey_chars, prepare_run,  # noqa: F401
                   train_loop)
from .optim import AdamW, clip_grad_norm
from .parallel import MicroBatches
from .runfolder import RunFolder


def no_decay(name, param):
    """Weight decay only on matrices, and never on FoPE coefficients: decay would pull their
    step identity toward zero, which means no rotation rather than the initial series."""
    return param.ndim < 2 or ".fope." in name


def evaluate(model, data, batch_size, n_batches):
    """Mean loss over fixed, evenly spread windows of `data` (the same windows every time)."""
    windows = eval_windows(data, model.config.train_len, batch_size * n_batches)
    losses = [model.forward(w[:, :-1], w[:, 1:])[1] for w in np.split(windows, n_batches)]
    return float(np.mean(losses))


def train(model_config, train_text, val_text, train_config=None, out_dir=None, resume=False,
          tokenizer=None, data_name=None, progress=True, init_from=None, overwrite=False,
          allow_data_change=False, probe=None):
    """Train a GPT on `train_text`, validating on `val_text`; return (model, history).

    history: dict of lists, "step"/"loss" (training loss every log_interval steps) and
    "val_step"/"val_loss". With out_dir, checkpoints and log.jsonl go there, and the folder
    is locked while training (a second trainer on it is refused); resume=True continues
    from out_dir/ckpt.npz (the configs and the training text must agree; steps may grow).
    An existing checkpoint in out_dir is kept unless resume or overwrite; overwrite removes
    it only once the new run's inputs have been checked. init_from: start from that
    checkpoint's parameters (loop.init_model_from), with a fresh optimizer. With
    passkey_frac > 0 the vocabulary also holds the passkey's characters. progress: True,
    False, or a report callable (progress.py). probe(model, tokenizer) -> a number logged as
    "probe" with every validation loss (the lab logs passkey.probe_accuracy there).
    """
    tc = train_config or TrainConfig()
    folder = RunFolder(out_dir) if out_dir is not None else None
    with folder or contextlib.nullcontext():
        run = prepare_run(model_config, tc, folder, train_text, val_text, resume=resume,
                          overwrite=overwrite, tokenizer=tokenizer, data_name=data_name,
                          init_from=init_from, allow_data_change=allow_data_change)
        model = run.model
        optim = AdamW(model.params, lr=tc.lr, weight_decay=tc.weight_decay, no_decay=no_decay)
        if resume:
            optim.load_state_dict(run.optim_state)
        if folder is not None:
            folder.start(run.records, new=not resume)

        def save(state):
            from .checkpoint import save_checkpoint

            save_checkpoint(folder.checkpoint, model, run.tokenizer, state, optim.state_dict())

        def update(lr):
            grad_norm = clip_grad_norm(model.grads, tc.grad_clip)
            optim.step(model.grads, lr)
            return grad_norm

        with MicroBatches(model, min(tc.micro_batches, tc.batch_size)) as micro:
            records = train_loop(
                run, tc, folder, forward_backward=micro.loss_and_grads, update=update,
                evaluate=lambda: evaluate(model, run.val_data, tc.batch_size, tc.eval_batches),
                save=save, desc=f"train {model.config.pe}", progress=progress,
                probe=(lambda: probe(model, run.tokenizer)) if probe is not None else None)
    return model, history_from(records)

