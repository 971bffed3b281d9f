"""Loss past the training length: by sequence length and by position within the sequence.

A model trained on windows of N characters is evaluated on windows of L = N x {1, 2, 4,
8, 16} characters of held-out text. For every window the per-position loss

    loss[b, m] = -log softmax(logits[b, m])[target[b, m]]

is kept, so one pass gives both the mean loss at each length (and its perplexity,
exp(loss)) and the loss as a function of the position m, averaged over windows and
over buckets of positions: the curve shows where past N the model breaks. Long windows
go through the attention in blocks of query rows, with no weights kept for a backward
(there is none here), so 16 x N fits in memory.
"""

import math

import numpy as np

from .progress import progress_bar

DEFAULT_MULTIPLIERS = (1, 2, 4, 8, 16)


def token_losses(logits, targets):
    """-log softmax(logits)[target] per position: logits (B,T,V), targets (B,T) -> (B,T) float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    logsumexp = np.log(np.exp(z).sum(axis=-1))
    return logsumexp - np.take_along_axis(z, targets[..., None], axis=-1)[..., 0]


def eval_windows(data, length, n_windows):
    """n_windows windows of length + 1 tokens, evenly spread over data -> (n, length + 1)."""
    if len(data) < length + 1:
        raise ValueError(f"the evaluation text has {len(data)} tokens; length {length} needs {length + 1}")
    starts = np.linspace(0, len(data) - length - 1, n_windows).astype(np.int64)
    return data[starts[:, None] + np.arange(length + 1)]


def window_count(n_tokens, length, chars_per_length):
    """How many windows of `length` loss_by_length scores in a text of n_tokens: chars_per_length
    // length, or as many as fit without overlap (n_tokens // (length + 1)) if fewer; at least 1."""
    return max(1, min(chars_per_length // length, n_tokens // (length + 1)))


def loss_by_length(model, data, lengths, chars_per_length=32768, batch_size=8, n_buckets=16,
                   progress=True):
    """Evaluate `model` on `data` (int tokens) at each length in `lengths`.

    Each length gets window_count windows (chars_per_length // L, or as many as `data` holds
    without overlap if that is fewer), evenly spread and never overlapping, so every length sees
    about the same amount of text (the same windows for every model). Returns {L: {"loss", "ppl",
    "n_windows", "bucket_edges", "bucket_loss"}}, where bucket_loss[i] is the mean loss at
    positions bucket_edges[i] <= m < bucket_edges[i+1].
    """
    results = {}
    jobs = [(L, window_count(len(data), L, chars_per_length)) for L in lengths]
    bar = progress_bar(progress, sum(n for _, n in jobs), "loss by length", "window")
    for L, n_windows in jobs:
        windows = eval_windows(data, L, n_windows)
        losses = np.empty((n_windows, L))
        for b0 in range(0, n_windows, batch_size):
            w = windows[b0:b0 + batch_size]
            logits, _ = model.forward(w[:, :-1])
            losses[b0:b0 + batch_size] = token_losses(logits, w[:, 1:])
            bar.update(len(w))
        per_position = losses.mean(axis=0)
        edges = np.linspace(0, L, min(n_buckets, L) + 1).astype(int)
        bucket_loss = [float(per_position[a:b].mean()) for a, b in zip(edges[:-1], edges[1:])]
        mean = float(losses.mean())
        results[L] = dict(loss=mean, ppl=math.exp(mean), n_windows=n_windows,
                          bucket_edges=edges.tolist(), bucket_loss=bucket_loss)
    bar.close()
    return results


def _new_axes():
    # A Figure without pyplot: no global state, works without a display.
    from matplotlib.figure import Figure

    return Figure(figsize=(6, 4)).subplots()


def plot_loss_by_length(curves, train_len, ax=None, spread=None, ylabel=None, unit="character"):
    """curves: {label: (lengths, losses)}; spread: {label: stds} for error bars; unit: what
    lengths count, 'character' or 'token'. Returns the Figure."""
    if ax is None:
        ax = _new_axes()
    for label, (lengths, losses) in curves.items():
        err = None if spread is None else spread.get(label)
        ax.errorbar(lengths, losses, yerr=err, marker="o", capsize=3, label=label)
    # the marker is a legend entry, so that no legend placement can hide what it means
    ax.axvline(train_len, color="gray", linestyle="--", linewidth=1, label=f"N = {train_len}, the training length")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"evaluation length ({unit}s)")
    ax.set_ylabel(ylabel or f"validation loss (nats/{unit[:4] if unit == 'character' else unit})")
    legend_outside(ax)
    ax.grid(alpha=0.3)
    return ax.figure


def plot_loss_by_position(curves, train_len, ax=None, unit="character"):
    """curves: {label: (bucket_edges, bucket_loss)} for one long length. Returns the Figure."""
    if ax is None:
        ax = _new_axes()
    for label, (edges, losses) in curves.items():
        centres = (np.asarray(edges[:-1]) + np.asarray(edges[1:])) / 2
        ax.plot(centres, losses, marker=".", label=label)
    ax.axvline(train_len, color="gray", linestyle="--", linewidth=1, label=f"N = {train_len}, the training length")
    ax.set_xlabel(f"position in the window ({unit}s)")
    ax.set_ylabel(f"loss at that position (nats/{unit[:4] if unit == 'character' else unit})")
    legend_outside(ax)
    ax.grid(alpha=0.3)
    return ax.figure


def legend_outside(ax, **options):
    """The legend to the right of the axes, where it hides no curve (save with bbox_inches="tight")."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, **{"fontsize": 8, **options})
