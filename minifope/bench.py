"""Benchmarks: the NumPy engine against the torch path on the CPU, measured in one run.

    python -m minifope bench [--quick] [--sizes lesson default large] [--threads N] [--pe rope]
                             [--no-torch] [--rounds R] [--demo-run] [--json [PATH]]

Six measurements, all in one run, so that the figures compare on one machine under one load:

1. the float32 matmul peak: the best of a few np.matmul (and torch.mm) of 2048x2048 squares;
2. a training step (forward, backward, global-norm clipping, AdamW), in tokens/second, for
   the NumPy engine and for the torch path (minifope.torch, torch.optim.AdamW with the
   trainer's groups) from the same initial weights and the same batches of random tokens,
   at three sizes (SIZES), with the achieved model FLOP/s as a share of the matmul peak.
   The NumPy step is the trainer's: TrainConfig.micro_batches row blocks of the batch on
   up to --threads Python threads (parallel.py); torch splits each op over its own threads;
3. the attention core alone, forward and backward: minifope.attention against
   torch.nn.functional.scaled_dot_product_attention, causal, on the same (B,H,T,d) arrays
   (the bare core, without ALiBi's bias, whatever --pe says);
4. model.forward(x, y) + model.backward() as the lessons call them, no trainer and no
   optimizer, at PLAIN_SIZE (d256, 8 heads, T256, batch 8), against the torch model's
   forward and loss.backward() from the same weights;
5. the peak resident memory of evaluating one sequence of 16 x train_len characters with
   attn_impl 'chunked' and with 'full';
6. generation, greedy, in characters/second, from a 1024-character prompt, with the
   key/value cache (minifope.sample.generate) and without it (a full forward over the
   growing context for every new character).

With --demo-run, also one run of the demo (its first variant, seed 0: training, then the
whole evaluation) end to end, in a temporary folder: minutes, where the rest takes one or two.

Every process imports minifope, so torch's run with the same allocator settings as NumPy's
(malloc.py). Measurements 2 to 4 are taken --rounds times, NumPy and torch in turn, and each
engine's fastest is kept: on a shared machine a burst of load then does not fall on one side.

Timings are the median of --steps timed repetitions after --warmup untimed ones, float32
on both sides, with the position embedding --pe.

Threads. NumPy's BLAS reads OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS once,
when NumPy is first imported, and `python -m minifope` imports NumPy before it reads its
flags. So every measurement runs in a fresh subprocess started with those three set to
--threads, and the torch ones also call torch.set_num_threads(--threads). A subprocess per
measurement rather than one re-exec of the whole bench, because: a peak resident memory
cannot be reset, so the memory figures need a fresh process each anyway; torch (and its
OpenMP runtime) is imported only in the processes that time torch, never beside NumPy's
timings; and a measurement that fails (say, out of memory at the large size) is reported
without losing the others. The cost, an interpreter start per measurement, lies outside
every timed region.

Model FLOPs of one training step, forward and backward, matmuls only (see train_step_flops):

    N_mm  = n_layer * (4 C^2 + 3 C F) + C V
    FLOPs = 6 * N_mm * B * T  +  12 * n_layer * C * B * T (T + 1) / 2

with C = d_model, F = the SwiGLU hidden size, V = the vocabulary, B the batch, T the length.
This is the work the model needs, not what an engine performs: NumPy's blocked attention
multiplies each block of query rows with every key up to the block's last row, so it does
a little more than the causal half of the T x T square (3/4 of it at T = 128 and 5/8 at
T = 256, in blocks of 64). Utilisation = model FLOP/s divided by NumPy's measured matmul peak.
"""

import importlib.metadata
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .attention import attention_backward, attention_forward, keeps_weights
from .checkpoint import atomic_write
from .config import POSITION_EMBEDDINGS, GPTConfig
from .errors import UserError
from .model import GPT
from .optim import AdamW, clip_grad_norm
from .parallel import MicroBatches, usable_cpus
from .sample import generate
from .train import TrainConfig, no_decay

SIZES = {  # name -> (GPTConfig fields, batch size)
    "lesson": (dict(d_model=64, n_layer=4, n_head=4, train_len=128), 16),
    "default": (dict(), TrainConfig().batch_size),  # the trainer's defaults: GPTConfig(), TrainConfig()
    "large": (dict(d_model=512, n_layer=6, n_head=8, train_len=256), 8),
    "quick": (dict(d_model=32, n_layer=2, n_head=2, train_len=32), 4),
}
PLAIN_SIZE = (dict(d_model=256, n_layer=4, n_head=8, train_len=256), 8)  # the plain API's line
FULL_SIZES = ("lesson", "default", "large")
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
MEMORY_FACTOR = 16  # the memory figure evaluates one sequence of 16 x train_len characters
PROMPT_CHARS, NEW_CHARS = 1024, 64
QUICK_PROMPT_CHARS, QUICK_NEW_CHARS = 64, 8
PEAK_N, QUICK_PEAK_N, PEAK_REPEATS = 2048, 256, 3


# --- FLOPs -------------------------------------------------------------------------------------

def matmul_params(config):
    """N_mm = n_layer * (4 C^2 + 3 C F) + C V: the weights that enter a matmul.

    Per block wqkv (C,3C), wo (C,C), w_in (C,2F), w_out (F,C); then lm_head (C,V). Not wte
    (a row lookup) nor the norm scales (elementwise).
    """
    C, F = config.d_model, config.hidden_dim
    return config.n_layer * (4 * C * C + 3 * C * F) + C * config.vocab_size


def attention_flops(B, H, T, d):
    """Forward + backward matmul FLOPs of the causal attention core on (B,H,T,d):

        12 * B * H * d * T (T + 1) / 2

    A causal sequence has T (T + 1) / 2 (query m, key n <= m) pairs. Per pair and head,
    the forward takes 2d for S = q.k and 2d for P v; the backward 2d each for dv = P^T dout,
    dP = dout v^T, dq = dS k and dk = dS^T q.
    """
    return 12 * B * H * d * T * (T + 1) // 2


def train_step_flops(config, batch_size, T=None):
    """Model FLOPs of one training step on (batch_size, T) tokens (T defaults to train_len):

        6 * N_mm * B * T  +  12 * n_layer * C * B * T (T + 1) / 2

    Every weight of N_mm (matmul_params) costs 2 FLOPs per token forward (x @ W) and 4
    backward (dx = dout W^T, dW = x^T dout); the second term is attention_flops summed over
    the layers (H * d = C). Softmax, norms, rotations, the loss and AdamW are not counted.
    """
    T = config.train_len if T is None else T
    return (6 * matmul_params(config) * batch_size * T
            + config.n_layer * attention_flops(batch_size, config.n_head, T, config.head_dim))


# --- generation with and without the cache ----------------------------------------------------

def generate_with_cache(model, prompt, n_new):
    """Greedy continuation through the key/value cache: prompt (B,T) -> (B, T + n_new).

    The window reaches past the end, so the cache is never cropped and every new character
    attends to the whole context, as it does without the cache.
    """
    return generate(model, prompt, n_new, temperature=0, window=prompt.shape[1] + n_new)


def generate_without_cache(model, prompt, n_new):
    """Greedy continuation by a full forward over the growing context for every character."""
    idx = prompt
    for _ in range(n_new):
        logits, _ = model.forward(idx)
        idx = np.concatenate([idx, np.argmax(logits[:, -1], axis=-1)[:, None]], axis=1)
    return idx


# --- the measurements, each run inside its own worker process ---------------------------------

def _config(fields, pe, **changes):
    return GPTConfig(**{**fields, "pe": pe, "dtype": "float32", **changes})


def _random_tokens(config, shape, seed=0):
    # timing does not depend on the text, so random characters of the vocabulary will do
    return np.random.default_rng(seed).integers(0, config.vocab_size, shape)


def _median_times(run, warmup, steps):
    # run(i) -> a tuple of seconds; the median of each over the timed calls
    for i in range(warmup):
        run(i)
    times = [run(warmup + i) for i in range(steps)]
    return [statistics.median(column) for column in zip(*times, strict=True)]


def _timed(fn, *args):
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def _status_bytes(field):
    """A memory figure of this process from /proc/self/status (Linux), in bytes; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss():
    # Linux: writing 5 to clear_refs resets the peak (VmHWM) to the current resident size, so
    # what the imports and setup once touched does not hide the peak of what comes next.
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_bytes():
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes


def _peak_numpy(spec):
    n = spec["n"]
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    np.matmul(a, b)
    best = min(_timed(np.matmul, a, b) for _ in range(spec["repeats"]))
    return dict(gflops=2 * n**3 / best / 1e9, seconds=best)


def _peak_torch(spec):
    import torch

    n = spec["n"]
    a, b = (torch.from_numpy(np.random.default_rng(i).standard_normal((n, n), dtype=np.float32))
            for i in range(2))
    torch.mm(a, b)
    best = min(_timed(torch.mm, a, b) for _ in range(spec["repeats"]))
    return dict(gflops=2 * n**3 / best / 1e9, seconds=best)


def _batches(config, batch_size, count):
    tokens = _random_tokens(config, (count, batch_size, config.train_len + 1))
    return [(t[:, :-1], t[:, 1:]) for t in tokens]


def _train_numpy(spec):
    # the step of minifope.train.train, at a constant learning rate: the trainer's
    # micro-batches on the worker's threads (parallel.py)
    config, B = _config(spec["fields"], spec["pe"]), spec["batch_size"]
    tc = TrainConfig()
    model = GPT(config)
    optim = AdamW(model.params, lr=tc.lr, weight_decay=tc.weight_decay, no_decay=no_decay)
    batches = _batches(config, B, spec["warmup"] + spec["steps"])
    micro = MicroBatches(model, min(tc.micro_batches, B))

    def step(i):
        t0 = time.perf_counter()
        micro.loss_and_grads(*batches[i])
        clip_grad_norm(model.grads, tc.grad_clip)
        optim.step(model.grads, tc.lr)
        return (time.perf_counter() - t0,)

    (seconds,) = _median_times(step, spec["warmup"], spec["steps"])
    micro.close()
    return dict(seconds=seconds, tokens_per_s=B * config.train_len / seconds,
                micro_batches=micro.parts, workers=micro.workers)


def _train_torch(spec):
    # the step of minifope.torch.train.train on the CPU, without autocast
    import torch

    from .torch import to_torch
    from .torch.train import clip_grad_norm as torch_clip_grad_norm
    from .torch.train import make_optimizer

    config, B = _config(spec["fields"], spec["pe"]), spec["batch_size"]
    tc = TrainConfig()
    model = to_torch(GPT(config))
    optimizer, _ = make_optimizer(model, tc, torch.device("cpu"))
    params = list(model.parameters())
    count = spec["warmup"] + spec["steps"]
    batches = [tuple(map(torch.from_numpy, b)) for b in _batches(config, B, count)]

    def step(i):
        t0 = time.perf_counter()
        _, loss = model(*batches[i])
        loss.backward()
        torch_clip_grad_norm(params, tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return (time.perf_counter() - t0,)

    (seconds,) = _median_times(step, spec["warmup"], spec["steps"])
    return dict(seconds=seconds, tokens_per_s=B * config.train_len / seconds,
                torch_threads=torch.get_num_threads())


def _attention_arrays(shape):
    # q, k, v, dout (B,H,T,d) float32, the same on both sides
    rng = np.random.default_rng(0)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(4)]


def _attention_numpy(spec):
    q, k, v, dout = _attention_arrays(spec["shape"])

    def once(i):
        t0 = time.perf_counter()
        _, cache = attention_forward(q, k, v, chunk=GPTConfig.attn_chunk)
        t1 = time.perf_counter()
        attention_backward(dout, cache)
        return t1 - t0, time.perf_counter() - t1

    forward, backward = _median_times(once, spec["warmup"], spec["steps"])
    B, H, T, _ = spec["shape"]
    chunk = GPTConfig.attn_chunk
    kept = "P kept" if keeps_weights("auto", B, H, T, T, q.itemsize, chunk) else "P recomputed"
    path = f"{-(-T // chunk)} blocks, {kept}"
    return dict(forward_s=forward, backward_s=backward, seconds=forward + backward, path=path)


def _attention_torch(spec):
    import torch
    import torch.nn.functional as F

    q, k, v, dout = (torch.from_numpy(a) for a in _attention_arrays(spec["shape"]))
    for t in (q, k, v):
        t.requires_grad_()

    def once(i):
        q.grad = k.grad = v.grad = None
        t0 = time.perf_counter()
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        t1 = time.perf_counter()
        out.backward(dout)
        return t1 - t0, time.perf_counter() - t1

    forward, backward = _median_times(once, spec["warmup"], spec["steps"])
    return dict(forward_s=forward, backward_s=backward, seconds=forward + backward)


def _plain_numpy(spec):
    # model.forward(x, y); model.backward(), as the lessons call them: no trainer, no optimizer
    config, B = _config(spec["fields"], spec["pe"]), spec["batch_size"]
    model = GPT(config)
    batches = _batches(config, B, spec["warmup"] + spec["steps"])

    def once(i):
        t0 = time.perf_counter()
        model.forward(*batches[i])
        model.backward()
        return (time.perf_counter() - t0,)

    (seconds,) = _median_times(once, spec["warmup"], spec["steps"])
    return dict(seconds=seconds)


def _plain_torch(spec):
    # the same model in torch (minifope.torch, the same weights): forward, loss.backward()
    import torch

    from .torch import to_torch

    config, B = _config(spec["fields"], spec["pe"]), spec["batch_size"]
    model = to_torch(GPT(config))
    batches = [tuple(map(torch.from_numpy, b))
               for b in _batches(config, B, spec["warmup"] + spec["steps"])]

    def once(i):
        t0 = time.perf_counter()
        _, loss = model(*batches[i])
        loss.backward()
        seconds = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
        return (seconds,)

    (seconds,) = _median_times(once, spec["warmup"], spec["steps"])
    return dict(seconds=seconds)


def _demo_run(spec):
    # one run of the demo (its first variant, seed 0), trained and evaluated in a new folder
    import tempfile

    from .data import shakespeare
    from .experiment import ExperimentConfig, demo_config, parse_variant, run_one
    from .lengthgen import window_count
    from .passkey import distance_grid

    ec = demo_config()
    if spec["quick"]:
        ec = ExperimentConfig(model=dict(d_model=16, n_layer=1, n_head=2, train_len=128),
                              train=dict(ec.train, steps=20, warmup=2, eval_interval=10),
                              multipliers=[1, 2], passkey_multipliers=[1], prompts=2, eval_chars=256)
    label = ec.variants[0]
    with tempfile.TemporaryDirectory() as out:
        start = time.time()
        rows = run_one(ec, Path(out), label, 0)
        seconds = time.time() - start
        # the checkpoint is last written when training ends; the evaluation comes after
        trained = (Path(out) / "runs" / label / "seed0" / "ckpt.npz").stat().st_mtime - start
    model, train = ec.model, ec.train
    steps = rows[label]["steps"]
    train_tokens = steps * train["batch_size"] * model["train_len"]
    N = model["train_len"]
    # the tokens the evaluation reads: its windows of loss by length, its passkey prompts, and
    # for a rotating embedding the 256 windows of N of the leakage measure (experiment._leakage)
    text = len(shakespeare()[1])
    eval_tokens = (sum(window_count(text, m * N, ec.eval_chars) * m * N for m in ec.multipliers)
                   + ec.prompts * sum(len(distance_grid(m * N, N)) * m * N for m in ec.passkey_multipliers)
                   + (256 * N if parse_variant(label)["pe"] in ("rope", "fope") else 0))
    return dict(seconds=seconds, train_seconds=trained, eval_seconds=seconds - trained,
                train_tokens_per_s=train_tokens / trained,
                eval_tokens_per_s=eval_tokens / max(seconds - trained, 1e-9), variant=label, steps=steps,
                model=f"d{model['d_model']} L{model['n_layer']} H{model['n_head']} "
                      f"T{model['train_len']} B{train['batch_size']}")


def _memory(spec):
    # the peak resident memory of this process, which does nothing but this one forward
    config = _config(spec["fields"], spec["pe"], attn_impl=spec["impl"])
    model = GPT(config)
    idx = _random_tokens(config, (1, spec["length"]))
    _reset_peak_rss()
    before = _peak_rss_bytes()
    model.forward(idx)
    peak = _peak_rss_bytes()
    return dict(peak_mb=peak / 1e6, forward_mb=(peak - before) / 1e6)


def _generation(spec):
    config = _config(spec["fields"], spec["pe"])
    model = GPT(config)
    prompt = _random_tokens(config, (1, spec["prompt_chars"]))
    n = spec["new_chars"]
    generate_with_cache(model, prompt[:, :8], 2)  # page in the code paths before timing
    t0 = time.perf_counter()
    cached = generate_with_cache(model, prompt, n)
    t1 = time.perf_counter()
    recomputed = generate_without_cache(model, prompt, n)
    t2 = time.perf_counter()
    return dict(with_cache_chars_per_s=n / (t1 - t0), without_cache_chars_per_s=n / (t2 - t1),
                same_text=bool(np.array_equal(cached, recomputed)))


TASKS = {"peak_numpy": _peak_numpy, "peak_torch": _peak_torch, "train_numpy": _train_numpy,
         "train_torch": _train_torch, "attention_numpy": _attention_numpy,
         "attention_torch": _attention_torch, "plain_numpy": _plain_numpy, "plain_torch": _plain_torch,
         "memory": _memory, "generation": _generation, "demo_run": _demo_run}


def worker(spec_json):
    """Run one measurement in this (fresh) process and print its result as one JSON line."""
    spec = json.loads(spec_json)
    if spec["task"].endswith("_torch"):
        import torch

        torch.set_num_threads(spec["threads"])
    print(json.dumps(TASKS[spec["task"]](spec)))


def run_worker(spec, threads):
    """One measurement in a fresh subprocess with `threads` BLAS / OpenMP / torch threads.

    Returns its result dict, or {"error": the last line it wrote on stderr} if it failed.
    """
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARS},
               PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    code = "import sys; from minifope.bench import worker; worker(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, json.dumps({**spec, "threads": threads})],
                            env=env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        return {"error": lines[-1]}
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the run -----------------------------------------------------------------------------------

def machine_info():
    """The CPU, the core counts, the load, and the versions of Python, NumPy, its BLAS and torch."""
    cpu = platform.processor() or platform.machine()
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first CPU's
        cpu = fields.get("model name", cpu)
        # a VM may name only the brand: the family and model tell the generation apart
        flags = fields.get("flags", "").split()
        simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
        detail = [f"family {fields['cpu family']}, model {fields['model']}"] if "cpu family" in fields else []
        detail += [f"{fields['cpu MHz'].split('.')[0]} MHz"] if "cpu MHz" in fields else []
        detail += [simd] if simd else []
        if detail:
            cpu = f"{cpu} ({', '.join(detail)})"
    except OSError:
        pass
    usable = usable_cpus()
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        blas = f"{info['name']} {info.get('version', '')}".strip()
    except (KeyError, TypeError):  # the layout of show_config's dict is not a stable API
        blas = None
    return dict(cpu=cpu, logical_cpus=os.cpu_count(), usable_cpus=usable,
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                python=platform.python_version(), numpy=np.__version__, blas=blas,
                torch=_installed_version("torch"))


def _installed_version(name):
    """The installed distribution's version, or None where it is not installed (its metadata
    decides, not whether a module of that name can be found)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _model_label(fields):
    c = GPTConfig(**fields)
    return f"d{c.d_model} L{c.n_layer} H{c.n_head}"


def _ratio(numpy_seconds, torch_seconds):
    # numpy_time / torch_time: above 1, torch is faster
    return None if numpy_seconds is None or torch_seconds is None else numpy_seconds / torch_seconds


def run_bench(sizes=FULL_SIZES, threads=1, pe="rope", use_torch=True, warmup=2, steps=5, quick=False,
              log=None, rounds=2, demo_run=False):
    """Every measurement, each in its own subprocess; returns the results as a JSON-ready dict.

    quick: a small matmul peak, and the plain-API, memory and generation figures on the
    'quick' model (the full run uses PLAIN_SIZE and the default trainer model, GPTConfig()).
    rounds: each NumPy / torch pair is measured this many times, alternating, and each
    engine's fastest is kept, so that a burst of load on a shared machine does not land on
    one side only. demo_run: also time one run of the demo end to end. log(message) reports
    progress.
    """
    log = log or (lambda message: None)
    machine = machine_info()
    notes, failures = [], []
    if use_torch and importlib.util.find_spec("torch") is None:
        use_torch = False
        notes.append("torch is not installed (pip install -r requirements-torch.txt): torch skipped")
    elif not use_torch:
        notes.append("--no-torch: torch skipped")
    engines = ("numpy", "torch") if use_torch else ("numpy",)  # a skipped engine's entries are None
    timing = dict(warmup=warmup, steps=steps, pe=pe)

    def measure(what, spec):
        log(f"bench: {what}")
        result = run_worker(spec, threads)
        if "error" in result:
            failures.append(f"{what}: {result['error']}")
        return result

    def fastest(what, task, spec):
        # {engine: result}: task_numpy and task_torch, `rounds` times in turn; each one's fastest
        best = {engine: None for engine in ("numpy", "torch")}
        for r in range(rounds):
            for engine in engines:
                note = f" (round {r + 1} of {rounds})" if rounds > 1 else ""
                result = measure(f"{what}, {engine}{note}", dict(task=f"{task}_{engine}", **spec))
                kept = best[engine]  # a failure, once seen, is kept: a later success does not hide it
                if kept is None or ("error" not in kept and ("error" in result
                                                             or result["seconds"] < kept["seconds"])):
                    best[engine] = result
        return best

    n = QUICK_PEAK_N if quick else PEAK_N
    peak = dict(n=n, repeats=PEAK_REPEATS, numpy_gflops=None, torch_gflops=None)
    for engine in engines:
        result = measure(f"matmul peak, {engine}",
                         dict(task=f"peak_{engine}", n=n, repeats=PEAK_REPEATS))
        peak[engine + "_gflops"] = result.get("gflops")
    peak_flops = peak["numpy_gflops"] * 1e9 if peak.get("numpy_gflops") else None

    train = []
    for size in sizes:
        fields, B = SIZES[size]
        config = _config(fields, pe)
        flops = train_step_flops(config, B)
        row = dict(size=size, model=f"{_model_label(fields)} T{config.train_len} B{B}",
                   config=config.to_dict(), batch_size=B, tokens_per_step=B * config.train_len,
                   model_flops_per_step=flops, numpy=None, torch=None)
        for engine, result in fastest(f"training step, {size}", "train",
                                      dict(fields=fields, batch_size=B, **timing)).items():
            if result is not None and "error" not in result:
                result["gflops"] = flops / result["seconds"] / 1e9
                result["utilisation"] = flops / result["seconds"] / peak_flops if peak_flops else None
            row[engine] = result
        row["numpy_over_torch_time"] = _ratio(row["numpy"].get("seconds"),
                                              (row["torch"] or {}).get("seconds"))
        train.append(row)

    attention = []
    for size in sizes:
        fields, B = SIZES[size]
        config = _config(fields, pe)
        shape = [B, config.n_head, config.train_len, config.head_dim]
        row = dict(size=size, shape=shape, flops=attention_flops(*shape), numpy=None, torch=None)
        for engine, result in fastest(f"attention core, {size}", "attention",
                                      dict(shape=shape, **timing)).items():
            if result is not None and "error" not in result:
                result["gflops"] = row["flops"] / result["seconds"] / 1e9
            row[engine] = result
        row["numpy_over_torch_time"] = _ratio(row["numpy"].get("seconds"),
                                              (row["torch"] or {}).get("seconds"))
        attention.append(row)

    fields, B = SIZES["quick"] if quick else PLAIN_SIZE
    config = _config(fields, pe)
    plain = dict(model=f"{_model_label(fields)} T{config.train_len} B{B}", config=config.to_dict(),
                 batch_size=B, **fastest("model.forward + backward", "plain",
                                         dict(fields=fields, batch_size=B, **timing)))
    plain["numpy_over_torch_time"] = _ratio((plain["numpy"] or {}).get("seconds"),
                                            (plain["torch"] or {}).get("seconds"))

    fields = SIZES["quick"][0] if quick else SIZES["default"][0]
    length = MEMORY_FACTOR * _config(fields, pe).train_len
    memory = dict(model=_model_label(fields), length=length)
    for impl in ("chunked", "full"):
        memory[impl] = measure(f"peak memory, {length} chars, attn_impl {impl}",
                               dict(task="memory", fields=fields, pe=pe, impl=impl, length=length))

    prompt_chars, new_chars = ((QUICK_PROMPT_CHARS, QUICK_NEW_CHARS) if quick
                               else (PROMPT_CHARS, NEW_CHARS))
    generation = dict(model=memory["model"], prompt_chars=prompt_chars, new_chars=new_chars)
    generation.update(measure(f"generation, {prompt_chars}-char prompt",
                              dict(task="generation", fields=fields, pe=pe, prompt_chars=prompt_chars,
                                   new_chars=new_chars)))
    if "error" not in generation:
        generation["speedup"] = (generation["with_cache_chars_per_s"]
                                 / generation["without_cache_chars_per_s"])
        if not generation["same_text"]:
            notes.append("generation: the cached and the recomputed greedy texts differ")

    demo = None
    if demo_run:
        demo = measure("one demo run, trained and evaluated", dict(task="demo_run", quick=quick))

    if machine["load_average"] is not None:
        machine["load_average_end"] = list(os.getloadavg())
    settings = dict(threads=threads, pe=pe, dtype="float32", warmup=warmup, steps=steps, quick=quick,
                    rounds=rounds)
    return dict(machine=machine, settings=settings, notes=notes, failures=failures, peak=peak,
                train=train, attention=attention, plain=plain, memory=memory, generation=generation,
                demo_run=demo)


# --- the report --------------------------------------------------------------------------------

def _num(x, spec, scale=1.0):
    return "-" if x is None else format(x * scale, spec)


def _cell(result, key, spec, scale=1.0):
    # one figure of a measurement: '-' when skipped, 'failed' when its process failed
    if result is None:
        return "-"
    if "error" in result:
        return "failed"
    return _num(result.get(key), spec, scale)


def _table(header, rows, left=2):
    # the first `left` columns aligned left, the others right, each as wide as its widest cell
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i < left else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in [header, *rows]]


def format_table(results):
    """The results as the plain-text report `python -m minifope bench` prints."""
    m, s, p = results["machine"], results["settings"], results["peak"]
    load = "?"
    if m["load_average"] is not None:
        load = " -> ".join("/".join(f"{x:.1f}" for x in m[key])
                           for key in ("load_average", "load_average_end"))
    lines = [
        f"minifope bench: NumPy engine vs torch on the CPU, float32, pe={s['pe']}, "
        f"{s['threads']} thread(s) each",
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
        f"load average (1/5/15 min) {load} from start to end",
        f"Python {m['python']}, numpy {m['numpy']} (BLAS: {m['blas'] or '?'}), "
        f"torch {m['torch'] or '-'}",
        f"median of {s['steps']} timed steps after {s['warmup']} warm-up; "
        "each measurement in its own process"
        + (f"; the faster of {s['rounds']} rounds, NumPy and torch in turn" if s.get("rounds", 1) > 1
           else ""),
        "",
        f"float32 matmul peak, {p['n']}x{p['n']}, best of {p['repeats']}: "
        f"numpy {_num(p['numpy_gflops'], '.1f')} GFLOP/s"
        + ("" if p["torch_gflops"] is None else f", torch {p['torch_gflops']:.1f} GFLOP/s"),
        "",
        "training step (forward, backward, clip, AdamW) on random tokens",
    ]

    def flops(r):
        if r is None or "error" in r:
            return _cell(r, "gflops", ".1f")
        return f"{_cell(r, 'gflops', '.1f')} ({_cell(r, 'utilisation', '.0f', 100)}%)"

    lines += _table(["size", "model", "numpy tok/s", "torch tok/s", "numpy/torch", "numpy GFLOP/s",
                     "torch GFLOP/s"],
                    [[row["size"], row["model"], _cell(row["numpy"], "tokens_per_s", ",.0f"),
                      _cell(row["torch"], "tokens_per_s", ",.0f"),
                      _num(row["numpy_over_torch_time"], ".2f"), flops(row["numpy"]),
                      flops(row["torch"])]
                     for row in results["train"]])
    split = next((f"numpy: the batch as {r['micro_batches']} micro-batches on {r['workers']} "
                  f"thread(s) (parallel.py); " for r in (row["numpy"] for row in results["train"])
                  if r and "micro_batches" in r), "")
    lines += [f"{split}numpy/torch: numpy's step time over torch's;",
              "GFLOP/s: model FLOPs (see bench.py) per second, (% of numpy's matmul peak)",
              "",
              "attention core, causal: minifope.attention vs torch's scaled_dot_product_attention "
              "(numpy/torch: of fwd + bwd)"]
    lines += _table(["size", "(B,H,T,d)", "numpy path", "numpy fwd ms", "numpy bwd ms", "torch fwd ms",
                     "torch bwd ms", "numpy/torch"],
                    [[row["size"], "(" + ",".join(map(str, row["shape"])) + ")",
                      row["numpy"].get("path", "-"),
                      *(_cell(row[engine], key, ".2f", 1e3) for engine in ("numpy", "torch")
                        for key in ("forward_s", "backward_s")),
                      _num(row["numpy_over_torch_time"], ".2f")]
                     for row in results["attention"]])
    plain = results["plain"]
    lines += ["",
              f"model.forward(x, y) + model.backward(), as the lessons call them (no trainer, no "
              f"optimizer), {plain['model']}: minifope.GPT vs minifope.torch's model, loss.backward()"]
    lines += _table(["", "numpy ms", "torch ms", "numpy/torch"],
                    [["forward + backward", _cell(plain["numpy"], "seconds", ".1f", 1e3),
                      _cell(plain["torch"], "seconds", ".1f", 1e3),
                      _num(plain["numpy_over_torch_time"], ".2f")]], left=1)
    mem, g = results["memory"], results["generation"]
    lines += ["",
              f"peak resident memory, NumPy forward of 1 x {mem['length']} chars ({mem['model']}), "
              "each in a fresh process"]
    lines += _table(["attn_impl", "peak MB", "of which the forward MB"],
                    [[impl, _cell(mem[impl], "peak_mb", ".1f"), _cell(mem[impl], "forward_mb", ".1f")]
                     for impl in ("chunked", "full")], left=1)
    same = "" if "error" in g else f" (the same text both ways: {'yes' if g['same_text'] else 'NO'})"
    lines += ["",
              f"generation, NumPy, greedy, {g['prompt_chars']}-char prompt + {g['new_chars']} new chars "
              f"({g['model']})"]
    lines += _table(["", "chars/s"],
                    [["with the KV cache", _cell(g, "with_cache_chars_per_s", ",.1f")],
                     ["without (recompute)", _cell(g, "without_cache_chars_per_s", ",.1f")]], left=1)
    lines.append(f"the cache is {_cell(g, 'speedup', '.1f')}x faster{same}")
    demo = results.get("demo_run")
    if demo is not None:
        lines.append("")
        if "error" in demo:
            lines.append("one demo run: failed")
        else:
            lines.append(f"one demo run ({demo['variant']}, seed 0, {demo['model']}, {demo['steps']} steps, "
                         f"then its evaluation), end to end on {s['threads']} thread(s): "
                         f"{demo['seconds']:.0f} s ({demo['seconds'] / 60:.1f} min)")
            lines.append(f"  training {demo['train_seconds']:.0f} s ({demo['train_tokens_per_s']:,.0f} tokens/s, "
                         f"forward and backward), evaluation {demo['eval_seconds']:.0f} s "
                         f"({demo['eval_tokens_per_s']:,.0f} tokens/s, forward only)")
    lines += [""] * bool(results["notes"] or results["failures"])
    lines += [f"note: {note}" for note in results["notes"]]
    lines += [f"failed: {failure}" for failure in results["failures"]]
    return "\n".join(lines)


# --- the command line --------------------------------------------------------------------------

def add_bench_flags(p):
    """The flags of `python -m minifope bench`."""
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes and few steps, in seconds: checks that everything runs")
    p.add_argument("--sizes", nargs="+", choices=list(SIZES),
                   help=f"training sizes to time (default: {' '.join(FULL_SIZES)}; with --quick: quick)")
    p.add_argument("--threads", type=int, help="BLAS threads for NumPy and torch.set_num_threads for "
                   "torch (default: the CPUs this process may use)")
    p.add_argument("--pe", choices=POSITION_EMBEDDINGS, default="rope", help="position embedding (rope)")
    p.add_argument("--no-torch", action="store_true", help="time the NumPy engine only")
    p.add_argument("--warmup", type=int, help="untimed steps before timing (2; with --quick 1)")
    p.add_argument("--steps", type=int, help="timed steps; their median is reported (5; with --quick 3)")
    p.add_argument("--rounds", type=int, help="measure each NumPy / torch pair this many times in turn "
                   "and keep each one's fastest (2; with --quick 1)")
    p.add_argument("--demo-run", action="store_true", help="also time one run of the demo, trained "
                   "and evaluated (about a third of `demo` on one core: minutes; with --quick, seconds)")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH",
                   help="print the results as JSON instead of the table, or with PATH write them there")


def check_json_path(path):
    """Refuse a --json PATH that cannot be written before the bench runs, not after."""
    if path.is_dir():
        raise UserError(f"--json {path} is a folder; give the path of a file to write")
    if not path.resolve().parent.is_dir():
        raise UserError(f"--json {path}: its folder does not exist")
    if not os.access(path.resolve().parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--json {path}: not writable here")


def cmd_bench(args):
    usable = usable_cpus()
    threads = usable if args.threads is None else args.threads
    warmup = args.warmup if args.warmup is not None else 1 if args.quick else 2
    steps = args.steps if args.steps is not None else 3 if args.quick else 5
    rounds = args.rounds if args.rounds is not None else 1 if args.quick else 2
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    if threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    if warmup < 0 or steps < 1:
        raise UserError(f"--warmup must be >= 0 and --steps >= 1, got {warmup} and {steps}")
    if args.json not in (None, "-"):
        check_json_path(Path(args.json))
    sizes = args.sizes or (["quick"] if args.quick else list(FULL_SIZES))
    results = run_bench(sizes, threads, args.pe, not args.no_torch, warmup, steps, args.quick,
                        log=lambda message: print(message, file=sys.stderr, flush=True), rounds=rounds,
                        demo_run=args.demo_run)
    if args.json is not None and args.json != "-":
        atomic_write(args.json, lambda f: f.write((json.dumps(results, indent=2) + "\n").encode()))
    if args.json == "-":
        print(json.dumps(results, indent=2))
    else:
        print(format_table(results))
    return 1 if results["failures"] else 0


def main(argv=None):
    """`python -m minifope.bench`, the same command as `python -m minifope bench`."""
    from .flags import OneLineParser, run_command

    parser = OneLineParser(prog="python -m minifope.bench", description=__doc__.splitlines()[0])
    add_bench_flags(parser)
    args = parser.parse_args(argv)
    return run_command(cmd_bench, args)


if __name__ == "__main__":
    raise SystemExit(main())
