"""The length-generalization experiment: train at N, evaluate at N x {1, 2, 4, 8, 16}.

    run_experiment(ExperimentConfig(variants=["rope", "fope", "alibi"], seeds=3), "runs/exp")

For every variant and seed a model is trained (train.py, passkey prompts mixed into the
batches) into OUT/runs/<variant>/seed<k>/, for train["steps"] steps and then on, 500 at a
time, until it retrieves the passkey at N (ExperimentConfig.retrieve_target), then evaluated:

- the validation loss at each length L = N x multiplier, and per position (lengthgen.py);
- passkey retrieval accuracy on a length x depth grid, greedy decoding (passkey.py);
- for RoPE, optionally, the same weights under PI, NTK-aware or YaRN scaling with
  s = L / N at each length (rope_scaling.py), with no retraining;
- optionally, the paper's Figure 3 setup: the trained RoPE model trained further at a
  longer length, once with YaRN and once switched to FoPE, from the same checkpoint.

OUT/results.json holds every number (mean and standard deviation over seeds), OUT/results.md
the table, and OUT/*.png the figures. Everything finished is kept: a crashed or stopped
experiment, run again with the same command, resumes training where the checkpoints stop
and skips every evaluation already written (eval.json per run).

Variants: a position embedding (rope, fope, alibi, nope), an ablation (clip-only: RoPE with
FoPE's clip and no Fourier series; series-only: FoPE without the clip), or any of these
with GPTConfig fields changed, written NAME:field=value[,field=value], e.g. fope:fope_sigma=0.1.
"""

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint import CKPT_NAME, atomic_write, load_checkpoint
from .config import GPTConfig
from .errors import UserError
from .lengthgen import eval_windows, loss_by_length, plot_loss_by_length, plot_loss_by_position
from .passkey import needle_grid, passkey_accuracy, plot_needle_grid
from .parallel import get_threads, set_threads
from .progress import RunBoard
from .runfolder import RunFolder
from .train import TrainConfig, train

ALIASES = {
    "rope": {"pe": "rope"},
    "fope": {"pe": "fope"},
    "alibi": {"pe": "alibi"},
    "nope": {"pe": "nope"},
    "clip-only": {"pe": "rope", "rope_clip": True},
    "series-only": {"pe": "fope", "fope_clip": False},
}
EXTENSIONS = ("pi", "ntk", "yarn")


def parse_variant(spec):
    """'fope:fope_sigma=0.1,fope_dim=64' -> GPTConfig fields {'pe': 'fope', 'fope_sigma': 0.1, ...}."""
    name, _, rest = spec.partition(":")
    if name not in ALIASES:
        raise UserError(f"unknown variant {spec!r}: start with one of {', '.join(ALIASES)}")
    fields = dict(ALIASES[name])
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in known:
            raise UserError(f"variant {spec!r}: {item!r} is not FIELD=VALUE with a GPTConfig field")
        fields[key] = _parse_value(value)
    return fields


def _parse_value(text):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


DEMO_MAX_STEPS = 3500  # the demo's cap on training on (ExperimentConfig.max_steps)


@dataclass
class ExperimentConfig:
    """What to train and how to evaluate it. The defaults are the demo's scale."""

    variants: list = field(default_factory=lambda: ["rope", "fope", "alibi"])
    seeds: int = 1
    model: dict = field(default_factory=lambda: dict(d_model=64, n_layer=4, n_head=4, train_len=256))
    train: dict = field(default_factory=lambda: dict(steps=3000, batch_size=16, lr=3e-3, min_lr=3e-3,
                                                     warmup=50, passkey_frac=0.5,
                                                     passkey_loss="keys", eval_interval=500,
                                                     eval_batches=8))
    multipliers: list = field(default_factory=lambda: [1, 2, 4, 8, 16])
    eval_chars: int = 32768
    passkey_multipliers: list = field(default_factory=lambda: [1, 2, 4])
    depths: list = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    trials: int = 8
    extend: list = field(default_factory=list)
    continue_factor: int = 0
    continue_steps: int = 200
    data: str = "shakespeare"
    eval_data: str | None = None
    # The step budget: every run trains train["steps"], then on, extend_steps at a time,
    # until its passkey accuracy at N on held-out prompts reaches retrieve_target (0: never
    # extend), or max_steps. A run that has not learned to retrieve at N says nothing about
    # retrieval past N, and when retrieval appears varies by seed (see the README).
    # Not part of training_key: a run stopped under one rule is continued under another.
    retrieve_target: float = 0.9
    extend_steps: int = 500
    max_steps: int = 6000

    def check(self):
        """Raise UserError naming the first setting that cannot work, before anything runs."""
        def fail(message):
            raise UserError(f"experiment settings: {message}")

        def ints(name, values, least):
            if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= least
                                     for v in values):
                fail(f"{name} must be one or more integers >= {least}, got {values!r}")

        if not self.variants:
            fail("no variants to train")
        ints("seeds", [self.seeds], 1)
        ints("lengths (multipliers)", self.multipliers, 1)
        ints("passkey lengths (passkey_multipliers)", self.passkey_multipliers, 1)
        ints("trials", [self.trials], 1)
        ints("eval_chars", [self.eval_chars], 1)
        ints("continue_steps", [self.continue_steps], 1)
        ints("extend_steps", [self.extend_steps], 1)
        if not self.depths or not all(isinstance(d, (int, float)) and 0 <= d <= 1 for d in self.depths):
            fail(f"depths must be one or more numbers in [0, 1], got {self.depths!r}")
        factor = self.continue_factor
        if not (factor == 0 or (isinstance(factor, int) and factor >= 2)):
            fail(f"continue_factor must be 0 (off) or an integer >= 2, got {factor!r}")
        unknown = sorted(set(self.extend) - set(EXTENSIONS))
        if unknown:
            fail(f"unknown extension(s) {unknown}: choose among {', '.join(EXTENSIONS)}")
        if not (isinstance(self.retrieve_target, (int, float)) and 0 <= self.retrieve_target <= 1):
            fail(f"retrieve_target must lie in [0, 1], got {self.retrieve_target!r}")
        try:
            for label in self.variants:
                GPTConfig(**{**self.model, **parse_variant(label)})
            tc = TrainConfig(**self.train)
        except (TypeError, ValueError) as e:
            fail(str(e))
        if self.retrieve_target and tc.min_lr != tc.lr:
            raise UserError("training on until a run retrieves needs a constant learning rate after "
                            f"warmup (min_lr = lr; here {tc.min_lr} and {tc.lr}): a longer cosine "
                            "would change the steps already taken. Or turn it off with --retrieve-target 0")
        if not isinstance(self.max_steps, int) or self.max_steps < tc.steps:
            fail(f"max_steps must be an integer >= steps ({tc.steps}), got {self.max_steps!r}")
        from .passkey import min_prompt_length

        need = min_prompt_length(tc.passkey_digits) + tc.passkey_digits + 1  # prompt and answer
        N = self.model.get("train_len", GPTConfig().train_len)
        windows = [N * m for m in self.passkey_multipliers]  # evaluated
        if round(tc.passkey_frac * tc.batch_size):
            windows.append(N)  # trained
        if windows and min(windows) < need:
            fail(f"a passkey window of {min(windows)} characters is too short: the prompt and its "
                 f"answer need {need}. Use a longer --train-len or larger --passkey-lengths")

    def training_key(self):
        """The settings a trained run depends on: two experiments sharing them share runs."""
        return dict(model=self.model, train=self.train, data=self.data,
                    continue_factor=self.continue_factor, continue_steps=self.continue_steps)

    def eval_key(self):
        # `extend` is not part of it: each scaling has its own eval-<kind>.json per run.
        keys = ("multipliers", "eval_chars", "passkey_multipliers", "depths", "trials", "eval_data")
        # version 3: passkey prompts laid out as in training (passkey.prompt_length)
        text = json.dumps({"version": 3, **{k: getattr(self, k) for k in keys}}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _slug(label):
    return "".join(c if c.isalnum() or c in "-_.=+@" else "_" for c in label)


def _write_json(path, obj):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def _read_cache(path):
    """A cached result file as a dict; None when absent or damaged (then it is recomputed)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def _train_run(run_dir, model_config, train_config, corpus, data_name, progress, init_from=None):
    """Train into run_dir, or resume it, or reuse it when it has trained train_config.steps
    or more. Returns (model, tokenizer, the checkpoint's step)."""
    ckpt = run_dir / CKPT_NAME
    saved = _check_run_folder(run_dir, (model_config, train_config), data_name)
    if saved is not None:
        model, tokenizer, state, _ = saved
        if state.get("step", 0) >= train_config.steps:
            return model, tokenizer, state["step"]
    train(model_config, *corpus, train_config, out_dir=run_dir, resume=saved is not None,
          data_name=data_name, progress=progress, init_from=init_from)
    model, tokenizer, state, _ = load_checkpoint(ckpt)
    return model, tokenizer, state["step"]


RETRIEVAL_FILE = "retrieval.json"
RETRIEVAL_TRIALS, RETRIEVAL_SEED = 4, 4321  # held out: the evaluation's keys come from seed 1234


def _train_until_it_retrieves(run_dir, config, tc, ec, corpus, progress):
    """Train tc.steps; then, while passkey accuracy at N on held-out prompts (every depth of
    ec.depths, RETRIEVAL_TRIALS keys each) is below ec.retrieve_target, train on to the next
    multiple of ec.extend_steps past tc.steps, up to ec.max_steps. Every check is kept in
    run_dir/retrieval.json ({step: accuracy}). Returns (model, tokenizer, step, reached):
    reached is False for a run stopped at max_steps below the target, else True."""
    model, tokenizer, step = _train_run(run_dir, config, tc, corpus, ec.data, progress)
    if not ec.retrieve_target or not round(tc.passkey_frac * tc.batch_size):
        return model, tokenizer, step, True
    path = run_dir / RETRIEVAL_FILE
    checks = _read_cache(path) or {}
    while True:
        on_grid = (step - tc.steps) % ec.extend_steps == 0
        if on_grid or step >= ec.max_steps:  # a check point (off it: an interrupted extension)
            if str(step) not in checks:
                accuracy = passkey_accuracy(model, tokenizer, config.train_len, ec.depths,
                                            RETRIEVAL_TRIALS, seed=RETRIEVAL_SEED)
                checks[str(step)] = float(accuracy.mean())
                _write_json(path, checks)
            reached = checks[str(step)] >= ec.retrieve_target
            if reached or step >= ec.max_steps:
                return model, tokenizer, step, reached
        target = min(tc.steps + ((step - tc.steps) // ec.extend_steps + 1) * ec.extend_steps,
                     ec.max_steps)  # the next check point
        model, tokenizer, step = _train_run(run_dir, config, dataclasses.replace(tc, steps=target),
                                            corpus, ec.data, progress)


def _evaluate_run(model, tokenizer, ec, eval_tokens, N, progress, passkey=True):
    lengths = [N * m for m in ec.multipliers]
    result = {"loss": {str(L): r for L, r in loss_by_length(model, eval_tokens, lengths,
                                                           ec.eval_chars, progress=progress).items()}}
    if model.config.pe in ("rope", "fope"):
        result["leakage"] = _leakage(model, eval_tokens, N)
    if passkey:
        pk_lengths = [N * m for m in ec.passkey_multipliers]
        grid = needle_grid(model, tokenizer, pk_lengths, ec.depths, ec.trials, seed=1234,
                           progress=progress)
        result["passkey"] = {"lengths": pk_lengths, "depths": ec.depths, "trials": ec.trials,
                             "grid": grid.tolist()}
    return result


def _leakage(model, eval_tokens, N, n_windows=256):
    """Per layer, the mean share of query and key energy away from each rotating pair's own
    frequency (spectrum.model_leakage, over n_windows windows of N characters)."""
    from .spectrum import model_leakages, pair_frequencies

    windows = eval_windows(eval_tokens, N, n_windows)[:, :-1]
    rotating = np.nan_to_num(pair_frequencies(model)) > 0
    out = []
    for q, k in model_leakages(model, windows):
        out.append(dict(q=float(np.nanmean(q[rotating])), k=float(np.nanmean(k[rotating])),
                        q_per_pair=np.nan_to_num(q, nan=-1.0).tolist()))
    return out


def _extension_losses(model, ec, eval_tokens, N, kind, progress):
    """Loss at each length L of the RoPE model under `kind` scaling with s = L / N."""
    out = {}
    for m in ec.multipliers:
        scaled = model.with_config(rope_scaling=kind, rope_scale=float(max(m, 1)), rope_original_len=N)
        out.update({str(L): r for L, r in loss_by_length(scaled, eval_tokens, [N * m], ec.eval_chars,
                                                        progress=progress).items()})
    return {"loss": out}


def run_experiment(ec, out_dir, progress=True, jobs=1, cores=None):
    """Train and evaluate everything ec asks for into out_dir; return the summary dict.

    Every setting, the texts and every run folder already in out_dir are checked first, so
    a mistake is refused before any training. The folder is locked while the experiment
    runs (a second experiment on it is refused). progress shows a board with a line per
    run: its stage, step or evaluation count, loss and speed (progress.RunBoard).

    cores: how many cores to use (None: parallel.get_threads(), every core unless limited).
    jobs: how many runs train and evaluate at once (None, as `experiment` and `demo` pass
    unless told: one per core, at most one per run; 1: one after the other, in this process).
    With jobs > 1 each run has its own process, and cores // min(jobs, runs not yet done)
    threads: one each while every process has a run, more for the last runs when the others
    are done, so that no core idles and none has two threads. The results are the same with
    any jobs and cores, since they depend on TrainConfig.micro_batches, not on the threads.
    """
    ec.check()
    _check_texts(ec)
    out = Path(out_dir)
    with RunFolder(out) as folder:
        saved = out / "experiment.json"
        if saved.exists():
            try:
                previous = json.loads(saved.read_text())
            except ValueError:
                raise UserError(f"{saved} is damaged (not JSON); move it away to start this "
                                "experiment afresh in that folder") from None
            training = json.loads(json.dumps(ec.training_key()))  # as JSON would give it back
            if not isinstance(previous, dict) or previous.get("training") != training:
                raise UserError(f"{out} holds an experiment trained with other settings ({saved}); "
                                "use another --out, or the same settings to resume it")
        todo = [(label, seed) for label in ec.variants for seed in range(ec.seeds)]
        for label, seed in todo:
            _check_run_folder(_run_dir(out, label, seed), _run_configs(ec, label, seed), ec.data)
        _write_json(saved, {"training": ec.training_key(), "config": dataclasses.asdict(ec)})

        board = RunBoard([f"{label} seed{seed}" for label, seed in todo], enabled=progress)
        try:
            cores = cores or get_threads()
            jobs = jobs or min(len(todo), cores)
            if jobs > 1:
                results = _run_in_processes(ec, out, todo, jobs, cores, board)
            else:
                results = [run_one(ec, out, label, seed,
                                   functools.partial(board.report, f"{label} seed{seed}"))
                           for label, seed in todo]
        finally:
            board.close()
        runs = {}
        for (label, seed), rows in zip(todo, results):
            for name, result in rows.items():
                runs.setdefault(name, {})[seed] = result
        summary = summarise(runs, ec, ec.model["train_len"])
        write_report(summary, folder.path)
    return summary


def _run_dir(out, label, seed):
    return Path(out) / "runs" / _slug(label) / f"seed{seed}"


def _run_configs(ec, label, seed):
    """(GPTConfig, TrainConfig) of one variant and seed."""
    return GPTConfig(**{**ec.model, **parse_variant(label)}), TrainConfig(**{**ec.train, "seed": seed})


def _check_texts(ec):
    """Load the texts and build the vocabulary the runs will have; refuse, before any training,
    an evaluation text with characters outside it, one too short for the longest length, or a
    passkey evaluation whose characters the vocabulary lacks."""
    from .data import CharTokenizer, load_corpus, load_text
    from .loop import passkey_chars

    train_text, val_text = load_corpus(ec.data)
    eval_text = load_text(ec.eval_data) if ec.eval_data else val_text
    extra = passkey_chars() if ec.train.get("passkey_frac", 0) > 0 else ""
    tokenizer = CharTokenizer.from_text(train_text + val_text + extra)
    try:
        tokenizer.encode(eval_text)
    except UserError as e:
        raise UserError(f"the evaluation text {ec.eval_data or '(validation)'} has {e}, which the "
                        f"training text {ec.data} lacks") from None
    if ec.passkey_multipliers:
        try:
            tokenizer.encode(passkey_chars())
        except UserError as e:
            raise UserError(f"the passkey evaluation needs {e}, which the training text {ec.data} "
                            "lacks: train with --passkey-frac above 0 (which adds them), or turn "
                            "the passkey off") from None
    longest = ec.model.get("train_len", GPTConfig().train_len) * max(ec.multipliers)
    if len(eval_text) < longest + 1:
        raise UserError(f"the evaluation text has {len(eval_text)} characters; the longest length "
                        f"evaluated, {longest}, needs {longest + 1}. Use a longer text or smaller --lengths")


def _check_run_folder(run_dir, configs, data_name):
    """Refuse a run folder whose checkpoint was trained with another config (left there by
    hand, or by another experiment), rather than reuse it under this run's name. Returns
    the checkpoint as load_checkpoint gives it, or None when there is none."""
    from .loop import config_conflicts, saved_train_config

    ckpt = run_dir / CKPT_NAME
    if not ckpt.exists():
        return None
    loaded = load_checkpoint(ckpt)
    model, _, state, _ = loaded
    config, tc = configs
    conflicts = config_conflicts(model.config.to_dict(), saved_train_config(state, ckpt),
                                 dataclasses.replace(config, vocab_size=model.config.vocab_size,
                                                     seed=tc.seed),
                                 tc, data_name, state.get("data"), may_change=("steps",))
    if conflicts:
        raise UserError(f"{run_dir} holds a run of another config ({'; '.join(conflicts)}); move it "
                        "away, or use another --out")
    return loaded


def run_one(ec, out, label, seed, progress=False):
    """Train (or resume, or reuse) and evaluate one variant and seed: {row label: result}.
    progress: True, False, or a report callable (progress.py)."""
    from .data import load_corpus, load_text

    N = ec.model["train_len"]
    config, tc = _run_configs(ec, label, seed)
    corpus = load_corpus(ec.data)
    eval_text = load_text(ec.eval_data) if ec.eval_data else corpus[1]
    run_dir = _run_dir(out, label, seed)
    model, tokenizer, step, reached = _train_until_it_retrieves(run_dir, config, tc, ec, corpus, progress)
    eval_tokens = tokenizer.encode(eval_text)
    rows = {label: _cached_eval(run_dir, ec, step, lambda: _evaluate_run(model, tokenizer, ec,
                                                                        eval_tokens, N, progress))}
    if config.pe == "rope" and not config.rope_clip:
        for kind in ec.extend:
            rows[f"{label}+{kind}"] = _cached_eval(
                run_dir, ec, step, lambda: _extension_losses(model, ec, eval_tokens, N, kind, progress),
                name=f"eval-{kind}")
    # the same weights in every row
    rows = {name: {**result, "steps": step, "reached": reached} for name, result in rows.items()}
    if config.pe == "rope" and not config.rope_clip and ec.continue_factor:
        rows.update(_continued_runs(label, run_dir, ec, tc, corpus, eval_tokens, N, progress))
    return rows


_worker = {}  # in a worker process: the report queue, the count of runs not done, cores, jobs


def _start_worker(queue, unfinished, cores, jobs):
    _worker.update(queue=queue, unfinished=unfinished, cores=cores, jobs=jobs)


def _fit_threads():
    # cores // min(jobs, runs not yet done): the cores of the processes whose runs are done
    # go to those still running; checked at every progress report, between steps
    w = _worker
    threads = max(1, w["cores"] // max(1, min(w["jobs"], w["unfinished"].value)))
    if threads != get_threads():
        set_threads(threads)


def _run_one_in_worker(ec, out, label, seed):
    name = f"{label} seed{seed}"

    def report(*args, **info):
        _fit_threads()
        _worker["queue"].put((name, args, info))

    try:
        _fit_threads()
        return run_one(ec, out, label, seed, report)
    finally:
        with _worker["unfinished"].get_lock():
            _worker["unfinished"].value -= 1


def _run_in_processes(ec, out, todo, jobs, cores, board):
    """run_one for every (label, seed) of todo, `jobs` at a time in spawned processes, each
    with cores // min(jobs, runs not yet done) threads (_fit_threads); their progress
    reaches `board` through a queue. Ctrl-C or SIGTERM is passed on to the workers, whose
    trainers save before they stop; then Stopped is raised."""
    import concurrent.futures
    import multiprocessing
    import os
    import signal
    import threading

    from .loop import Stopped, StopOnSignals

    single_thread = {k: "1" for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    saved_env = {k: os.environ.get(k) for k in single_thread}
    os.environ.update(single_thread)  # spawned workers read these when they import NumPy
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    unfinished = context.Value("i", len(todo))

    def show():
        for item in iter(queue.get, None):
            name, args, info = item
            board.report(name, *args, **info)

    listener = threading.Thread(target=show, daemon=True)
    listener.start()
    pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                                  initargs=(queue, unfinished, cores, jobs))
    try:
        with StopOnSignals() as stop:
            futures = [pool.submit(_run_one_in_worker, ec, out, label, seed) for label, seed in todo]
            passed_on = False
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.2)
                for future in done:
                    if future.exception() is not None and not stop.requested:
                        raise future.exception()
                if stop.requested and not passed_on:
                    passed_on = True
                    for future in futures:
                        future.cancel()
                    for process in multiprocessing.active_children():  # the pool's workers
                        try:
                            os.kill(process.pid, stop.signum)
                        except OSError:
                            pass
            if stop.requested:
                raise Stopped("stopped; the runs that were training saved their checkpoints: run "
                              "the same command again to resume", stop.signum or signal.SIGINT)
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        queue.put(None)
        listener.join()
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cached_eval(run_dir, ec, step, compute, name="eval"):
    # kept while the evaluation settings and the checkpoint's step are the same
    path = run_dir / f"{name}.json"
    stored = _read_cache(path)
    if stored is not None:
        if stored.get("eval_key") == ec.eval_key() and stored.get("step") == step:
            return stored["result"]
    result = compute()
    _write_json(path, {"eval_key": ec.eval_key(), "step": step, "result": result})
    return result


def _continued_runs(label, run_dir, ec, tc, corpus, eval_tokens, N, progress):
    """Figure 3: from the trained RoPE checkpoint, train on at factor * N with YaRN, and with FoPE."""
    longer = N * ec.continue_factor
    source = load_checkpoint(run_dir)[0].config
    base = dict(source.to_dict(), train_len=longer, rope_original_len=N)
    settings = {
        f"{label}+yarn@{ec.continue_factor}N": dict(base, rope_scaling="yarn",
                                                    rope_scale=float(ec.continue_factor)),
        f"{label}-to-fope@{ec.continue_factor}N": dict(base, pe="fope", rope_original_len=0),
    }
    ctc = dataclasses.replace(tc, steps=ec.continue_steps, warmup=min(20, ec.continue_steps // 10),
                              eval_interval=ec.continue_steps)
    rows = {}
    for name, fields in settings.items():
        sub = run_dir.parent.parent / _slug(name) / run_dir.name
        model, tokenizer, step = _train_run(sub, GPTConfig(**fields), ctc, corpus, ec.data, progress,
                                            init_from=run_dir)
        rows[name] = _cached_eval(
            sub, ec, step, lambda: _evaluate_run(model, tokenizer, ec, eval_tokens, N, progress))
    return rows


def summarise(runs, ec, N):
    """Mean and standard deviation over seeds of every number, per variant."""
    summary = {"train_len": N, "seeds": ec.seeds, "variants": {}}
    for label, by_seed in runs.items():
        seeds = sorted(by_seed)
        entry = {"seeds": seeds, "loss": {}}
        if all("steps" in by_seed[s] for s in seeds):
            entry["steps"] = [by_seed[s]["steps"] for s in seeds]
            entry["reached"] = [by_seed[s].get("reached", True) for s in seeds]
        lengths = sorted({int(L) for s in seeds for L in by_seed[s]["loss"]})
        for L in lengths:
            values = [by_seed[s]["loss"][str(L)]["loss"] for s in seeds]
            curves = np.array([by_seed[s]["loss"][str(L)]["bucket_loss"] for s in seeds])
            entry["loss"][str(L)] = dict(mean=float(np.mean(values)), std=float(np.std(values)),
                                         values=values,
                                         bucket_edges=by_seed[seeds[0]]["loss"][str(L)]["bucket_edges"],
                                         bucket_loss=curves.mean(axis=0).tolist())
        if all("passkey" in by_seed[s] for s in seeds):
            grids = np.array([by_seed[s]["passkey"]["grid"] for s in seeds])  # (seeds, lengths, depths)
            by_length = grids.mean(axis=2)
            first = by_seed[seeds[0]]["passkey"]
            entry["passkey"] = dict(lengths=first["lengths"], depths=first["depths"],
                                    trials=first["trials"], mean=by_length.mean(axis=0).tolist(),
                                    std=by_length.std(axis=0).tolist(),
                                    grid=grids.mean(axis=0).tolist())
        if all("leakage" in by_seed[s] for s in seeds):
            layers = len(by_seed[seeds[0]]["leakage"])
            entry["leakage"] = [dict(q=float(np.mean([by_seed[s]["leakage"][l]["q"] for s in seeds])),
                                     k=float(np.mean([by_seed[s]["leakage"][l]["k"] for s in seeds])))
                                for l in range(layers)]
        summary["variants"][label] = entry
    return summary


def markdown_table(summary):
    """The results as a markdown table: loss (nats/char) and passkey accuracy, mean ± std."""
    N = summary["train_len"]
    variants = summary["variants"]
    lengths = sorted({int(L) for v in variants.values() for L in v["loss"]})
    pk_lengths = sorted({L for v in variants.values() if "passkey" in v for L in v["passkey"]["lengths"]})
    head = (["variant", "steps"] + [f"loss @{L // N}N" for L in lengths]
            + [f"passkey @{L // N}N" for L in pk_lengths])
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, v in variants.items():
        reached = v.get("reached", [True] * len(v.get("steps", [])))
        cells = [label, "/".join(f"{n}{'' if ok else '*'}" for n, ok in zip(v.get("steps", []), reached))]
        for L in lengths:
            r = v["loss"].get(str(L))
            cells.append(f"{r['mean']:.3f} ± {r['std']:.3f}" if r else "")
        for L in pk_lengths:
            pk = v.get("passkey")
            if pk and L in pk["lengths"]:
                i = pk["lengths"].index(L)
                cells.append(f"{pk['mean'][i]:.2f} ± {pk['std'][i]:.2f}")
            else:
                cells.append("")
        rows.append("| " + " | ".join(cells) + " |")
    trials = next((v["passkey"]["trials"] for v in variants.values() if "passkey" in v), None)
    note = (f"\nN = {N} characters; {summary['seeds']} seed(s), mean ± std over seeds; steps: "
            f"trained, per seed. Passkey: {trials} trials per (length, depth) cell, accuracy "
            "averaged over depths.\n") if trials else ""
    if any(not ok for v in variants.values() for ok in v.get("reached", [])):
        note += ("\n*: stopped at max_steps before its passkey accuracy at N on held-out prompts "
                 "reached the target.\n")
    with_leak = {k: v["leakage"] for k, v in variants.items() if "leakage" in v}
    if with_leak:
        layers = max(len(v) for v in with_leak.values())
        note += ("\nSpectral leakage: share of the rotated queries' energy away from each rotating "
                 "pair's own frequency (spectrum.model_leakage over 256 windows of N), mean over "
                 "pairs and seeds:\n\n| variant | " + " | ".join(f"layer {l}" for l in range(layers))
                 + " |\n|" + "---|" * (layers + 1) + "\n")
        for label, leak in with_leak.items():
            note += f"| {label} | " + " | ".join(f"{x['q']:.3f}" for x in leak) + " |\n"
    return "\n".join(rows) + "\n" + note


def write_report(summary, out):
    """results.json, results.md and the figures."""
    from matplotlib.figure import Figure

    out = Path(out)
    _write_json(out / "results.json", summary)
    table = markdown_table(summary)
    atomic_write(out / "results.md", lambda f: f.write(table.encode()))
    N = summary["train_len"]
    variants = summary["variants"]

    fig = Figure(figsize=(11, 4))
    ax_loss, ax_pk = fig.subplots(1, 2)
    curves = {k: ([int(L) for L in v["loss"]], [r["mean"] for r in v["loss"].values()])
              for k, v in variants.items()}
    spread = {k: [r["std"] for r in v["loss"].values()] for k, v in variants.items()}
    plot_loss_by_length(curves, N, ax=ax_loss, spread=spread)
    ax_loss.set_title("validation loss past the training length")
    for i, (label, v) in enumerate(variants.items()):
        if "passkey" in v:  # the colour of the same variant in the loss panel
            pk = v["passkey"]
            ax_pk.errorbar(pk["lengths"], pk["mean"], yerr=pk["std"], marker="o", capsize=3, label=label,
                           color=f"C{i}")
    ax_pk.axvline(N, color="gray", linestyle="--", linewidth=1)
    ax_pk.set_xscale("log", base=2)
    ax_pk.set_ylim(-0.05, 1.05)
    ax_pk.set_xlabel("prompt length (characters)")
    ax_pk.set_ylabel("passkey accuracy")
    ax_pk.set_title("passkey retrieval")
    ax_pk.legend()
    ax_pk.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "figure.png", dpi=120)

    longest = max(int(L) for v in variants.values() for L in v["loss"])
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    plot_loss_by_position({k: (v["loss"][str(longest)]["bucket_edges"], v["loss"][str(longest)]["bucket_loss"])
                           for k, v in variants.items() if str(longest) in v["loss"]}, N, ax=ax)
    ax.set_title(f"loss by position in {longest}-character windows")
    fig.tight_layout()
    fig.savefig(out / "loss_by_position.png", dpi=120)

    with_grid = [(k, v["passkey"]) for k, v in variants.items() if "passkey" in v]
    if with_grid:
        fig = Figure(figsize=(4 * len(with_grid), 3.6))
        axes = np.atleast_1d(fig.subplots(1, len(with_grid)))
        for ax, (label, pk) in zip(axes, with_grid):
            plot_needle_grid(np.array(pk["grid"]), pk["lengths"], pk["depths"], trials=pk["trials"],
                             ax=ax, title=label)
        fig.tight_layout()
        fig.savefig(out / "needle_grid.png", dpi=120)
