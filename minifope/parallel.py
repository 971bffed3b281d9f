"""A training batch as micro-batches on parallel threads: the NumPy engine's data parallelism.

    runner = MicroBatches(model, parts=2)
    loss = runner.loss_and_grads(x, y)      # fills model.grads, as forward + backward would
    runner.close()

The rows of a batch are split into `parts` micro-batches of nearly equal size
(np.array_split). Micro-batch i has n_i counted targets (those that are not IGNORE_INDEX),
mean loss L_i and gradient g_i = dL_i/dtheta. The batch's mean loss and its gradient are

    L = sum_i n_i L_i / n,        g = sum_i (n_i / n) g_i,        n = sum_i n_i,

which is what one forward and backward over the whole batch computes, up to float
rounding: the same numbers in float64 to ~1e-15, and in float32 a different order of sums.
The result depends on `parts`, never on the number of threads, so a run reproduces on any
machine (TrainConfig.micro_batches fixes `parts`).

Why threads help. Each micro-batch runs on its own view of the model (GPT.with_config:
the same parameter arrays, its own gradients and caches), on its own thread. NumPy
releases the GIL inside its loops and its BLAS calls, so the views compute at once on
separate cores. The BLAS alone would use every core for the matrix products but leave
the elementwise work (softmax, norms, SwiGLU, the rotation) on one; split by rows, both
kinds of work run in parallel. While the workers run, the BLAS is given
threads // workers threads each, so that workers times BLAS threads never exceeds the
cores asked for.
"""

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from .layers import IGNORE_INDEX


def blas_thread_count():
    """The number of threads NumPy's BLAS uses now (OPENBLAS_NUM_THREADS and its kin, or
    a threadpoolctl limit in force); the number of CPUs if no BLAS reports one."""
    counts = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return max(counts) if counts else usable_cpus()


def usable_cpus():
    """The CPUs this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class MicroBatches:
    """Forward and backward of a batch as `parts` micro-batches, on up to `threads` threads.

    threads: how many cores to use, None for blas_thread_count(). With parts == 1, or one
    thread, the micro-batches run one after another on the calling thread.
    """

    def __init__(self, model, parts=2, threads=None):
        if not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts must be a positive integer, got {parts!r}")
        self.model, self.parts = model, parts
        self.threads = threads or blas_thread_count()
        self.workers = min(parts, self.threads)
        self.views = [model] if parts == 1 else [model.with_config() for _ in range(parts)]
        self.pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None

    def loss_and_grads(self, x, y):
        """x, y (B,T) -> the batch's mean loss L; model.grads holds dL/dtheta."""
        if self.parts == 1:
            _, loss = self.model.forward(x, y)
            self.model.backward()
            return loss
        if len(x) < self.parts:
            raise ValueError(f"a batch of {len(x)} rows cannot be split into {self.parts} micro-batches")
        xs, ys = np.array_split(x, self.parts), np.array_split(y, self.parts)
        counts = [int((part != IGNORE_INDEX).sum()) for part in ys]
        with self._blas_per_worker():
            if self.pool is None:
                losses = list(map(_forward_backward, self.views, xs, ys))
            else:
                losses = list(self.pool.map(_forward_backward, self.views, xs, ys))
        n = max(sum(counts), 1)
        weights = [c / n for c in counts]
        for name, g in self.model.grads.items():
            np.multiply(self.views[0].grads[name], weights[0], out=g)
            for view, w in zip(self.views[1:], weights[1:]):
                g += w * view.grads[name]
        return float(sum(w * loss for w, loss in zip(weights, losses)))

    def _blas_per_worker(self):
        if self.workers == 1:
            return contextlib.nullcontext()
        return threadpool_limits(limits=max(1, self.threads // self.workers), user_api="blas")

    def close(self):
        if self.pool is not None:
            self.pool.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _forward_backward(view, x, y):
    # np.errstate holds per thread: the trainer's "overflow shows as a non-finite loss" applies here too
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        _, loss = view.forward(x, y)
        view.backward()
    return loss
