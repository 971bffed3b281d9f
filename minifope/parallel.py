"""Threads for the NumPy engine: parts of a batch (or of an attention core) computed at once.

    from minifope import parallel
    parallel.set_threads(2)              # default: as many as NumPy's BLAS uses
    logits, loss = model.forward(x, y)   # the batch's rows in 2 parts, on 2 threads
    model.backward()

Why threads help. NumPy releases the GIL inside its loops and its BLAS calls, so parts of
a batch compute at once on separate cores. The BLAS alone would use every core for the
matrix products but leave the elementwise work (softmax, norms, SwiGLU, the rotation) on
one; split by rows, both kinds of work run in parallel. While parts run, the BLAS gets
threads // workers threads in each, so that workers times BLAS threads never exceeds the
threads asked for, and work inside a part never splits again (map_parts runs inline there).

Where it is used: GPT.forward and GPT.backward split a batch's rows into GPT.micro_batches
parts (one per thread when that is None), and the attention core splits its batch rows, or
its heads for a single sequence, when it is called outside such a part (attention.py).

What the numbers depend on. Micro-batch i has n_i counted targets (those that are not
IGNORE_INDEX), mean loss L_i and gradient g_i. The batch's mean loss and gradient are

    L = sum_i n_i L_i / n,        g = sum_i (n_i / n) g_i,        n = sum_i n_i,

what one forward and backward over the whole batch computes, up to float rounding: the
same numbers in float64 to ~1e-15, and in float32 a different order of sums. The result
depends on the number of parts, never on the threads that run them, so the trainer fixes
the parts (TrainConfig.micro_batches) and a run reproduces on a machine with other cores.
"""

import contextlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_info

_settings = {"threads": None}  # set_threads; None: blas_thread_count(), read once
_in_part = threading.local()  # .active is True on a thread running a part of map_parts
_pools = {}  # workers -> ThreadPoolExecutor, kept for the life of the process
_controller = None


def usable_cpus():
    """The CPUs this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def blas_thread_count():
    """The number of threads NumPy's BLAS uses now (OPENBLAS_NUM_THREADS and its kin, or
    a threadpoolctl limit in force); the number of CPUs if no BLAS reports one."""
    counts = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return max(counts) if counts else usable_cpus()


def get_threads():
    """How many threads minifope's own parallel work may use: set_threads(n), else the BLAS's
    thread count when first asked; 1 on a thread that is already running a part."""
    if getattr(_in_part, "active", False):
        return 1
    if _settings["threads"] is None:
        _settings["threads"] = blas_thread_count()
    return _settings["threads"]


def set_threads(n):
    """Use up to n threads from now on, for the parts and for the BLAS between them, and for
    torch's operations when torch is loaded (the torch backend of `experiment`)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    _settings["threads"] = n
    _blas(refresh=True).limit(limits=n, user_api="blas")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


@contextlib.contextmanager
def threads(n):
    """set_threads(n) for the body of a with-statement, then the previous setting back."""
    before = get_threads()
    set_threads(n)
    try:
        yield
    finally:
        set_threads(before)


def parts_for(work, least):
    """How many parts to cut `work` units into: one per thread, but none with fewer than
    `least` units (a thread's start and the GIL would cost more than the part saves)."""
    return max(1, min(get_threads(), work // least))


def split(n, parts):
    """[(start, stop), ...]: range(n) in min(parts, n) nearly equal slices (np.array_split's)."""
    parts = max(1, min(parts, n))
    size, longer = divmod(n, parts)  # the first `longer` slices get one more
    edges = np.cumsum([0] + [size + (i < longer) for i in range(parts)])
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def map_parts(fn, items):
    """[fn(item) for item in items], with up to get_threads() items at once on threads.

    Inside fn, get_threads() is 1 (a part never splits again) and the BLAS has
    get_threads() // workers threads; NumPy's error state (np.errstate) is the caller's.
    """
    items = list(items)
    workers = min(len(items), get_threads())
    if workers <= 1:
        return [fn(item) for item in items]
    err = np.geterr()

    def part(item):
        _in_part.active = True
        try:
            with np.errstate(**err):
                return fn(item)
        finally:
            _in_part.active = False

    pool = _pools.get(workers) or _pools.setdefault(workers, ThreadPoolExecutor(workers))
    with _blas_limit(max(1, get_threads() // workers)):
        return list(pool.map(part, items))


def _blas(refresh=False):
    # the BLAS libraries loaded so far; refresh=True looks again (scipy, say, may load its own
    # after the first look), cheap enough for set_threads, too slow for every parallel_map
    global _controller
    if _controller is None or refresh:
        _controller = ThreadpoolController()
    return _controller


def _blas_limit(n):
    # applied at once; used in a with-statement, the previous setting comes back at its end
    return _blas().limit(limits=n, user_api="blas")


class MicroBatches:
    """The trainer's step: forward and backward of a batch as `parts` micro-batches, on up to
    `threads` threads (None: get_threads()). The same as GPT.forward and GPT.backward with
    model.micro_batches = parts; a fixed `parts` makes the result independent of the threads.
    """

    def __init__(self, model, parts=2, threads=None):
        if not isinstance(parts, int) or parts < 1:
            raise ValueError(f"parts must be a positive integer, got {parts!r}")
        self.model, self.parts = model, parts
        self.threads = threads or get_threads()
        self.workers = min(parts, self.threads)

    def loss_and_grads(self, x, y):
        """x, y (B,T) -> the batch's mean loss L; model.grads holds dL/dtheta."""
        if len(x) < self.parts:
            raise ValueError(f"a batch of {len(x)} rows cannot be split into {self.parts} micro-batches")
        saved = self.model.micro_batches
        self.model.micro_batches = self.parts
        try:
            with threads(self.threads):
                _, loss = self.model.forward(x, y)
                self.model.backward()
        finally:
            self.model.micro_batches = saved
        return loss

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
