"""The length-generalization experiment: train at N, evaluate at N x {1, 2, 4, 8, 16}.

    run_experiment(ExperimentConfig(), "runs/lab")     # the default comparison, 3 seeds

For every variant and seed a model is trained (train.py, passkey prompts mixed into the
batches) into OUT/runs/<variant>/seed<k>/ for exactly train["steps"] steps: one fixed budget
for every run, never stopped or extended on a metric. Every eval_interval steps the run's
log.jsonl gets its validation loss and its passkey accuracy at N on the probe set
(passkey.probe_accuracy: 32 fixed keys that no evaluation prompt uses), the retrieval curve.
Then each run is evaluated:

- the validation loss at each length L = N x multiplier and per position (lengthgen.py), on
  the same non-overlapping windows for every model: eval_chars characters per length, or as
  many as the text holds. eval_data (--eval-data) evaluates on another text instead, a
  shift in data: a file, whose characters the training text must have, or a corpus by name
  (data.CORPORA: shakespeare, pydoc), evaluated whole. For a corpus the vocabulary is the
  union of both corpora's characters, so nothing of either is dropped or mapped: the
  characters only the evaluation corpus has are in the model, never trained on, and
  results count them (summary["eval_text"]["untrained"]); each run is then also scored on
  the training corpus's validation text, as the row 'VARIANT [corpus]' (home_row), so the
  loss on both texts is compared on the same weights (the paper's Figure 4);
- passkey retrieval by (length, distance) (passkey.passkey_by_distance): at every
  L = N x passkey multiplier, the distances of passkey.distance_grid, `prompts` prompts per
  cell, each with a fresh key from a generator seeded by the run's seed, so that the models
  of one seed answer the same prompts;
- for RoPE, optionally, the same weights under PI, NTK-aware or YaRN scaling with
  s = L / N at each length (rope_scaling.py), with no retraining;
- optionally (continue_factor K, --continue-at), the paper's Figure 3: each trained RoPE
  model trained on at K x N for continue_steps steps, once with YaRN as the FoPE authors
  configured their baseline (a fixed scale continue_yarn_scale, 16 as theirs, the ramp's
  original length N, no attention temperature) and once switched to FoPE (the authors'
  padding); each trained FoPE model trained on with FoPE; all from the same checkpoint and
  batches per seed, and evaluated like the others at K x N x multipliers.

Tokens (train["tokenizer"] = "bpe", --tokenizer bpe): every run reads one byte-level BPE
learned on the training text (bpe.py; train["bpe_vocab"] tokens), and every length counts
tokens: N, the evaluation lengths, eval_chars (then tokens of evaluation text per length),
the passkey prompts and their distances (passkey.Layout). The loss is in nats/token;
results.md gives the evaluation text's characters per token to convert it. A corpus named by
eval_data is encoded by the same BPE (any text is: its base symbols are the 256 bytes), so
the vocabulary does not change with it.

OUT/results.json holds every number with its sample sd over seeds and 95% interval, and the
paired differences between variants (stats.py), of the loss and of its rise past N (loss at L
minus loss at N, seed by seed: how steady a loss stays past the training length, the paper's
"more stable", _rise); OUT/results.md the tables, OUT/*.png the
figures. Everything finished is kept: a crashed or stopped experiment, run again with the
same command, resumes training where the checkpoints stop and skips every evaluation
already written (eval.json per run). The learning rate is constant after warmup, so a
larger --steps later trains every run on to the same point a longer run would have reached.
A report (report_finished, --report-to DIR) also keeps every evaluated run's records in
DIR/runs: its eval*.json, which name the run's configs and tokenizer (_run_record), and its
log.jsonl, without the checkpoint. They are small enough to commit, the report can be
written again from them, and an experiment in a new folder with them copied into its runs/
reuses those runs instead of training them again (a run whose record names another config,
or that lacks an evaluation the experiment asks for, is trained afresh).

Variants: a position embedding (rope, fope, alibi, nope; fope-authors is FoPE with the
authors' padding of the non-rotating pairs, cos = sin = 1, as the paper's numbers were
made; fope-identity, the same as fope, pads with the identity), an ablation (clip-only:
RoPE with FoPE's clip and no Fourier series; series-only: FoPE without the clip), or any of
these with GPTConfig fields changed, written NAME:field=value[,field=value], e.g.
fope:fope_sigma=0.1.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import stats
from .checkpoint import CKPT_NAME, atomic_write, load_checkpoint
from .config import GPTConfig, is_finite_number
from .errors import UserError
from .lengthgen import eval_windows, legend_outside, loss_by_length, plot_loss_by_length, plot_loss_by_position
from .passkey import distance_grid, has_repeated_digit, passkey_by_distance, probe_accuracy
from .parallel import get_threads, set_threads
from .progress import RunBoard
from .runfolder import LOG_NAME, RunFolder
from .train import TrainConfig, train

ALIASES = {
    "rope": {"pe": "rope"},
    "fope": {"pe": "fope"},
    "fope-authors": {"pe": "fope", "fope_zero_freq": "authors"},
    "fope-identity": {"pe": "fope", "fope_zero_freq": "identity"},
    "alibi": {"pe": "alibi"},
    "nope": {"pe": "nope"},
    "sinusoidal": {"pe": "sinusoidal"},
    "clip-only": {"pe": "rope", "rope_clip": True},
    "series-only": {"pe": "fope", "fope_clip": False},
}
EXTENSIONS = ("pi", "ntk", "yarn")
BACKENDS = ("numpy", "torch")
DEFAULT_COMPARISON = ["rope", "fope-authors", "fope-identity", "alibi", "nope"]


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


@dataclass
class ExperimentConfig:
    """What to train and how to evaluate it. The defaults are the lab's default comparison;
    demo_config() is the demo's smaller version of it."""

    variants: list = field(default_factory=lambda: list(DEFAULT_COMPARISON))
    seeds: int = 3
    model: dict = field(default_factory=lambda: dict(d_model=64, n_layer=4, n_head=4, train_len=256))
    # a constant rate after warmup (min_lr = lr): see the module docstring
    train: dict = field(default_factory=lambda: dict(steps=8000, batch_size=16, lr=3e-3, min_lr=3e-3,
                                                     warmup=50, passkey_frac=0.5,
                                                     passkey_loss="keys", eval_interval=250,
                                                     eval_batches=8))
    multipliers: list = field(default_factory=lambda: [1, 2, 4, 8, 16])
    eval_chars: int = 262144
    passkey_multipliers: list = field(default_factory=lambda: [1, 2, 4, 8, 16])
    prompts: int = 32
    extend: list = field(default_factory=list)
    continue_factor: int = 0
    continue_steps: int = 200
    continue_yarn_scale: float = 16.0
    data: str = "shakespeare"
    eval_data: str | None = None
    # how the runs are computed, not what: neither is in training_key or eval_key, so a run
    # trained on one backend is resumed, reused or evaluated on the other (_train_run)
    backend: str = "numpy"
    device: str = "auto"

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
        if self.backend not in BACKENDS:
            fail(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            fail(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.backend == "numpy" and self.device != "auto":
            fail(f"device {self.device!r} only takes effect with the torch backend (--backend torch)")
        if self.backend == "torch":
            torch_device(self)
        ints("seeds", [self.seeds], 1)
        ints("lengths (multipliers)", self.multipliers, 1)
        if self.passkey_multipliers:
            ints("passkey lengths (passkey_multipliers)", self.passkey_multipliers, 1)
        ints("prompts", [self.prompts], 1)
        ints("eval_chars", [self.eval_chars], 1)
        ints("continue_steps", [self.continue_steps], 1)
        scale = self.continue_yarn_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (1 <= scale < 1e6):
            fail(f"continue_yarn_scale must be a number in [1, 1e6), got {scale!r}")
        factor = self.continue_factor
        if not (factor == 0 or (isinstance(factor, int) and factor >= 2)):
            fail(f"continue_factor must be 0 (off) or an integer >= 2, got {factor!r}")
        unknown = sorted(set(self.extend) - set(EXTENSIONS))
        if unknown:
            fail(f"unknown extension(s) {unknown}: choose among {', '.join(EXTENSIONS)}")
        try:
            for label in self.variants:
                GPTConfig(**{**self.model, **parse_variant(label)})
            tc = TrainConfig(**self.train)
        except (TypeError, ValueError) as e:
            fail(str(e))
        if tc.tokenizer == "char":  # in tokens, _check_texts checks it once the tokenizer is built
            _check_passkey_windows(self, None)

    @property
    def unit(self):
        """What lengths count: 'character', or 'token' with the BPE tokenizer."""
        return "token" if self.train.get("tokenizer", "char") == "bpe" else "character"

    def training_key(self):
        """The settings a trained run depends on: two experiments sharing them share runs.
        The budget (train["steps"]) is not one of them: with a constant learning rate a run
        trained further is the run a longer budget would have trained (run_experiment checks)."""
        train = {k: v for k, v in self.train.items() if k != "steps"}
        if train.get("tokenizer") == "char":
            del train["tokenizer"]  # the default, said or not
        key = dict(model=self.model, train=train, data=self.data, continue_factor=self.continue_factor,
                   continue_steps=self.continue_steps)
        if self.continue_factor:  # version 2: YaRN as the FoPE authors ran it, FoPE continued too
            key.update(continue_version=2, continue_yarn_scale=float(self.continue_yarn_scale))
        if _shifts_vocabulary(self):
            key["vocabulary_with"] = self.eval_data  # its characters are in the trained model
        return key

    def eval_key(self):
        # `extend` is not part of it: each scaling has its own eval-<kind>.json per run.
        keys = ("multipliers", "eval_chars", "passkey_multipliers", "prompts", "eval_data")
        # version 4: non-overlapping loss windows, passkey by distance with a fresh key per prompt
        fields = {k: getattr(self, k) for k in keys}
        if _other_corpus(self):  # a corpus's text depends on the Python (data.PYDOC_SHA256)
            from .data import load_eval_text

            fields["eval_sha256"] = hashlib.sha256(load_eval_text(self.eval_data).encode()).hexdigest()
        text = json.dumps({"version": 4, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def home_row(label, ec):
    """The row of a variant's loss on its training corpus's validation text, in an experiment
    evaluated on another corpus (--eval-data): 'rope [shakespeare]'."""
    return f"{label} [{ec.data}]"


def _other_corpus(ec):
    """Whether --eval-data names another corpus than the training one (a shift in data)."""
    from .data import CORPORA

    return ec.eval_data in CORPORA and ec.eval_data != ec.data


def _shifts_vocabulary(ec):
    """Whether --eval-data names another corpus whose characters join the vocabulary: with
    characters only; a byte-level BPE, learned on the training text, encodes any text."""
    return _other_corpus(ec) and ec.unit == "character"


def _check_passkey_windows(ec, tokenizer):
    """Refuse a passkey window (evaluated, or trained and probed at N) too short for a prompt
    and its answer, counted in characters (tokenizer None) or in the tokenizer's units."""
    from .passkey import min_prompt_length

    tc = TrainConfig(**ec.train)
    need = min_prompt_length(tc.passkey_digits, tokenizer=tokenizer) + tc.passkey_digits + 1
    N = ec.model.get("train_len", GPTConfig().train_len)
    windows = [N * m for m in ec.passkey_multipliers]  # evaluated
    if round(tc.passkey_frac * tc.batch_size):
        windows.append(N)  # trained, and probed
    if windows and min(windows) < need:
        raise UserError(f"experiment settings: a passkey window of {min(windows)} {ec.unit}s is too short: "
                        f"the prompt and its answer need {need}. Use a longer --train-len or larger "
                        "--passkey-lengths")


@functools.lru_cache(maxsize=4)
def _bpe(data, vocab_size):
    """The BPE every run of an experiment reads, learned on the training text (deterministic:
    a run that learned its own would have the same one; this learns it once per process)."""
    from .bpe import BPETokenizer
    from .data import load_corpus

    return BPETokenizer.train(load_corpus(data)[0], vocab_size)


def _texts(ec):
    """(corpus, eval_text, tokenizer): the training corpus (train, val), the text the loss is
    evaluated on, and the tokenizer the runs are built with; None for prepare_run's own (the
    training corpus's characters and the passkey's) unless eval_data names another corpus,
    whose characters join them."""
    from .data import CharTokenizer, load_corpus, load_eval_text
    from .loop import passkey_chars

    corpus = load_corpus(ec.data)
    if ec.unit == "token":
        tc = TrainConfig(**ec.train)
        return corpus, load_eval_text(ec.eval_data) if ec.eval_data else corpus[1], _bpe(ec.data, tc.bpe_vocab)
    if not ec.eval_data:
        return corpus, corpus[1], None
    eval_text = load_eval_text(ec.eval_data)
    if not _shifts_vocabulary(ec):
        return corpus, eval_text, None
    extra = passkey_chars() if TrainConfig(**ec.train).passkey_frac > 0 else ""
    return corpus, eval_text, CharTokenizer.from_text("".join(corpus) + extra + eval_text)


def untrained_characters(ec):
    """{character: count} of the evaluation text's characters the training text never has
    (trained passkey characters count as trained): the model has them in its vocabulary but
    has never seen one, as input or as target, so what it scores on them is a guess."""
    from collections import Counter

    from .loop import passkey_chars

    (train_text, _), eval_text, _ = _texts(ec)
    trained = set(train_text) | set(passkey_chars() if TrainConfig(**ec.train).passkey_frac > 0 else "")
    counts = Counter(eval_text)
    return {c: counts[c] for c in sorted(counts) if c not in trained}


def demo_config():
    """The demo: the default comparison's design (fixed budget, fresh keys, distances,
    intervals) scaled to about 15 minutes on 2 cores: rope, fope as the authors ran it and
    alibi, one seed, DEMO_STEPS steps, lengths to 8N, 16 prompts per passkey cell."""
    ec = ExperimentConfig(variants=["rope", "fope-authors", "alibi"], seeds=1,
                          multipliers=[1, 2, 4, 8], passkey_multipliers=[1, 2, 4, 8], prompts=16,
                          eval_chars=65536)
    ec.train = dict(ec.train, steps=DEMO_STEPS)
    return ec


# Two of the demo's three runs train side by side on 2 cores, the third alone after them:
# about 1400 / 3.7 + 1400 / 4.9 s of training on the 2-core AMD EPYC (Zen 3) the README
# names, plus about 2 minutes of evaluation. The lab trains 8000 (ExperimentConfig).
DEMO_STEPS = 1400


def torch_device(ec):
    """The torch.device a torch experiment runs on (ec.device; auto: a GPU if there is one);
    UserError without PyTorch or without the asked device."""
    try:
        from .torch.train import resolve_device
    except ImportError:
        raise UserError("--backend torch needs PyTorch: pip install -r requirements-torch.txt") from None
    return resolve_device(ec.device)


def forward_model(model, ec):
    """What the evaluation runs forward passes on: the NumPy GPT itself, or, with the torch
    backend, the same weights as a torch GPT on the device, seen through NumpyView (under
    bfloat16 autocast on a GPU with float32 weights, as the torch trainer trains)."""
    if ec.backend == "numpy":
        return model
    from .torch import NumpyView, to_torch
    from .torch.train import eval_dtype

    device = torch_device(ec)
    return NumpyView(to_torch(model, device), eval_dtype("auto", device, model.config.dtype))


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


def _train_run(run_dir, model_config, train_config, corpus, data_name, progress, init_from=None,
               probe=None, tokenizer=None, ec=None):
    """Train into run_dir, or resume it, or reuse it when it has trained train_config.steps
    or more, with ec's backend (the NumPy trainer, or minifope.torch.train on ec.device; both
    write the same checkpoint format, so either resumes the other's run). Returns (the NumPy
    model, tokenizer, the checkpoint's step)."""
    ckpt = run_dir / CKPT_NAME
    saved = _check_run_folder(run_dir, (model_config, train_config), data_name)
    if saved is not None:
        model, tokenizer, state, _ = saved
        if state.get("step", 0) >= train_config.steps:
            return model, tokenizer, state["step"]
    run_train, engine = train, {}
    if ec is not None and ec.backend == "torch":
        from .torch.train import train as run_train

        engine = dict(device=torch_device(ec))
    run_train(model_config, *corpus, train_config, out_dir=run_dir, resume=saved is not None,
              data_name=data_name, progress=progress, init_from=init_from, probe=probe, tokenizer=tokenizer,
              **engine)
    model, tokenizer, state, _ = load_checkpoint(ckpt)
    return model, tokenizer, state["step"]


def retrieval_curve(run_dir):
    """[[step, passkey accuracy at N on the probe set], ...] from run_dir/log.jsonl, by step
    (a step logged twice, by a run resumed from an earlier checkpoint, keeps its last value)."""
    curve = {}
    try:
        lines = (Path(run_dir) / LOG_NAME).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a full disk or a kill
        if isinstance(record, dict) and isinstance(record.get("probe"), (int, float)):
            curve[record.get("step")] = float(record["probe"])
    return [[step, curve[step]] for step in sorted(s for s in curve if isinstance(s, int))]


def _evaluate_run(model, tokenizer, ec, eval_tokens, N, seed, progress, passkey=True):
    lengths = [N * m for m in ec.multipliers]
    forward = forward_model(model, ec)
    result = {"loss": {str(L): r for L, r in loss_by_length(forward, eval_tokens, lengths,
                                                           ec.eval_chars, progress=progress).items()}}
    if model.config.pe in ("rope", "fope"):
        result["leakage"] = _leakage(model, eval_tokens, N)  # it reads the NumPy model's inside
    if passkey and ec.passkey_multipliers:
        result["passkey"] = passkey_by_distance(forward, tokenizer, [N * m for m in ec.passkey_multipliers],
                                                N, ec.prompts, seed, progress=progress)
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
        out.update({str(L): r for L, r in loss_by_length(forward_model(scaled, ec), eval_tokens, [N * m],
                                                        ec.eval_chars, progress=progress).items()})
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
            if isinstance(previous, dict) and isinstance(previous.get("training"), dict) \
                    and isinstance(previous["training"].get("train"), dict):
                previous["training"]["train"].pop("steps", None)  # as an older version wrote it
            if not isinstance(previous, dict) or previous.get("training") != training:
                raise UserError(f"{out} holds an experiment trained with other settings ({saved}); "
                                "use another --out, or the same settings to resume it")
        # seed by seed, so that a stopped experiment has whole comparisons for its first seeds
        todo = [(label, seed) for seed in range(ec.seeds) for label in ec.variants]
        vocabulary = _texts(ec)[2]
        for label, seed in todo:
            configs = _run_configs(ec, label, seed)
            run_dir = _run_dir(out, label, seed)
            _check_budget(run_dir, _check_run_folder(run_dir, configs, ec.data, vocabulary), configs[1])
        _write_json(saved, {"training": ec.training_key(), "config": dataclasses.asdict(ec)})

        board = RunBoard([f"{label} seed{seed}" for label, seed in todo], enabled=progress)
        try:
            cores = cores or get_threads()
            if ec.backend == "torch" and torch_device(ec).type == "cuda":
                jobs = jobs or 1  # one GPU: the runs take turns on it
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
    passkey evaluation whose characters the vocabulary lacks; and --eval-data naming the
    training corpus itself."""
    from .data import CORPORA
    from .loop import passkey_chars

    if ec.eval_data == ec.data and ec.data in CORPORA:
        raise UserError(f"--eval-data {ec.eval_data} is the training corpus, whose whole text would "
                        "include what was trained on: leave --eval-data out to evaluate on its "
                        "validation part")
    (train_text, val_text), eval_text, tokenizer = _texts(ec)
    tokenizer = tokenizer or _vocabulary(ec)
    if tokenizer.kind == "bpe":
        _check_passkey_windows(ec, tokenizer)
    try:
        eval_length = len(tokenizer.encode(eval_text))
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
    longest = ec.model.get("train_len", GPTConfig().train_len) * max(ec.multipliers) * max(ec.continue_factor, 1)
    if eval_length < longest + 1:
        raise UserError(f"the evaluation text has {eval_length} {tokenizer.unit}s; the longest length "
                        f"evaluated, {longest}, needs {longest + 1}. Use a longer text or smaller --lengths")


def _vocabulary(ec):
    """The tokenizer every run of ec is built with: _texts's, or, where that is None, the one
    prepare_run builds (the training text's characters and the passkey's)."""
    from .data import CharTokenizer
    from .loop import passkey_chars

    (train_text, val_text), _, tokenizer = _texts(ec)
    if tokenizer is not None:
        return tokenizer
    extra = passkey_chars() if TrainConfig(**ec.train).passkey_frac > 0 else ""
    return CharTokenizer.from_text(train_text + val_text + extra)


def _run_record(config, tc, data_name, tokenizer):
    """What a run was trained as, kept in its eval.json (as JSON gives it back): its model
    config, training config, corpus and a digest of its tokenizer. With it a run folder kept
    without its checkpoint (a report's runs/, see keep_records) can be recognised as the run
    an experiment asks for, and is not trained again."""
    record = dict(model=dataclasses.replace(config, vocab_size=tokenizer.vocab_size, seed=tc.seed).to_dict(),
                  train=dataclasses.asdict(tc), data=data_name,
                  tokenizer=hashlib.sha256(tokenizer.to_json().encode()).hexdigest())
    return json.loads(json.dumps(record))


def _check_budget(run_dir, loaded, tc):
    """Refuse a run trained past the budget tc.steps (it cannot be untrained), and a longer
    budget for a run whose learning rate decays (its schedule would change under the steps
    already taken)."""
    if loaded is None:
        return
    state = loaded[2]
    step, planned = state.get("step", 0), state.get("train_config", {}).get("steps")
    if step > tc.steps:
        raise UserError(f"{run_dir} trained {step} steps, more than this experiment's budget of "
                        f"{tc.steps}: every run of a comparison trains the same steps. Use --steps "
                        f"{step} or more, or another --out")
    if planned != tc.steps and tc.min_lr != tc.lr:
        raise UserError(f"{run_dir} was trained for a budget of {planned} steps under a decaying learning "
                        f"rate; a budget of {tc.steps} would change the rate of the steps already "
                        "taken. A budget can change only with a constant learning rate (min_lr = lr); "
                        "use another --out")


def _check_run_folder(run_dir, configs, data_name, vocabulary=None):
    """Refuse a run folder whose checkpoint was trained with another config (left there by
    hand, or by another experiment), or, given the tokenizer the runs must have (a shifted
    vocabulary, _texts), with other characters, rather than reuse it under this run's name.
    Returns the checkpoint as load_checkpoint gives it, or None when there is none."""
    from .loop import config_conflicts, saved_train_config

    ckpt = run_dir / CKPT_NAME
    if not ckpt.exists():
        return None
    loaded = load_checkpoint(ckpt)
    model, tokenizer, state, _ = loaded
    config, tc = configs
    conflicts = config_conflicts(model.config.to_dict(), saved_train_config(state, ckpt),
                                 dataclasses.replace(config, vocab_size=model.config.vocab_size,
                                                     seed=tc.seed),
                                 tc, data_name, state.get("data"), may_change=("steps",))
    if vocabulary is not None and tokenizer.to_json() != vocabulary.to_json():
        conflicts.append(f"vocabulary: checkpoint {tokenizer.vocab_size} {tokenizer.unit}s, asked "
                         f"{vocabulary.vocab_size} {vocabulary.unit}s ("
                         + ("the training and the evaluation corpus's" if vocabulary.kind == "char"
                            else "a BPE learned on the training text") + ")")
    if conflicts:
        raise UserError(f"{run_dir} holds a run of another config ({'; '.join(conflicts)}); move it "
                        "away, or use another --out")
    return loaded


def run_one(ec, out, label, seed, progress=False):
    """Train (or resume, or reuse) and evaluate one variant and seed: {row label: result}.
    progress: True, False, or a report callable (progress.py)."""
    N = ec.model["train_len"]
    config, tc = _run_configs(ec, label, seed)
    corpus, eval_text, vocabulary = _texts(ec)
    run_dir = _run_dir(out, label, seed)
    if not (run_dir / CKPT_NAME).exists():  # kept without its checkpoint: reused if all there
        kept = _kept_rows(ec, out, label, seed)
        if kept is not None:
            return kept
    probe = None
    if round(tc.passkey_frac * tc.batch_size):
        def probe(model, tokenizer):
            return probe_accuracy(model, tokenizer, N, tc.passkey_digits)
    model, tokenizer, step = _train_run(run_dir, config, tc, corpus, ec.data, progress, probe=probe,
                                        tokenizer=vocabulary, ec=ec)
    eval_tokens = tokenizer.encode(eval_text)
    record = _run_record(model.config, tc, ec.data, tokenizer)
    losses = _shape(ec, N, config.n_layer)
    rows = {label: _cached_eval(run_dir, ec, step, lambda: _evaluate_run(model, tokenizer, ec,
                                                                        eval_tokens, N, seed, progress),
                                _shape(ec, N, config.n_layer, tokenizer, passkey=True), record=record)}
    rows[label]["curve"] = retrieval_curve(run_dir)
    if config.pe == "rope" and not config.rope_clip:
        for kind in ec.extend:
            rows[f"{label}+{kind}"] = _cached_eval(
                run_dir, ec, step, lambda: _extension_losses(model, ec, eval_tokens, N, kind, progress),
                losses, name=f"eval-{kind}")
    if _other_corpus(ec):  # a shift in data: the loss on the training corpus's own validation text too
        home_tokens = tokenizer.encode(corpus[1])
        lengths = [N * m for m in ec.multipliers]
        rows[home_row(label, ec)] = _cached_eval(
            run_dir, ec, step, lambda: {"loss": {str(L): r for L, r in loss_by_length(
                forward_model(model, ec), home_tokens, lengths, ec.eval_chars, progress=progress).items()}},
            losses, name="eval-home")
    # the same weights in every row
    rows = {name: {**result, "steps": step} for name, result in rows.items()}
    if ec.continue_factor and continues(config):
        rows.update(_continued_runs(label, run_dir, ec, tc, corpus, eval_tokens, N, seed, progress))
    return rows


_worker = {}  # in a worker process: the report queue, the count of runs not done, cores, jobs,
# the stop event, busy


def _start_worker(queue, unfinished, cores, jobs, stop):
    import signal

    _worker.update(queue=queue, unfinished=unfinished, cores=cores, jobs=jobs, stop=stop, busy=False)
    # Ctrl-C or SIGTERM: a trainer saves and stops between steps (loop.StopOnSignals, which
    # replaces these handlers while it trains); an evaluation stops where it is, and what it
    # finished is kept. Either way the run ends with Stopped, which the pool hands back, so
    # the pool stays whole. An idle worker has nothing to stop.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop_worker)


def _stop_worker(signum, frame):
    from .loop import Stopped

    if _worker.get("busy"):
        raise Stopped("stopped", signum)


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

    _worker["busy"] = True
    try:
        if _worker["stop"].is_set():
            # a run the pool had already queued for this process when the experiment was
            # stopped (queued work cannot be cancelled): it does not start
            from .loop import Stopped

            raise Stopped("stopped before it started")
        _fit_threads()
        return run_one(ec, out, label, seed, report)
    finally:
        _worker["busy"] = False
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
    stopping = context.Event()

    def show():
        for item in iter(queue.get, None):
            name, args, info = item
            board.report(name, *args, **info)

    listener = threading.Thread(target=show, daemon=True)
    listener.start()
    pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                                  initargs=(queue, unfinished, cores, jobs, stopping))
    try:
        with StopOnSignals() as stop:
            futures = [pool.submit(_run_one_in_worker, ec, out, label, seed) for label, seed in todo]
            passed_on = False
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.2)
                for future in done:
                    if not future.cancelled() and future.exception() is not None and not stop.requested:
                        raise future.exception()
                if stop.requested and not passed_on:
                    passed_on = True
                    stopping.set()  # before the signal: a worker it stops may take a queued run next
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


@dataclass
class Shape:
    """What a stored evaluation must hold for the summary to read it: its loss at exactly
    `lengths`; a passkey table at passkey_lengths with `distances` (per length) and `prompts`
    prompts a cell, where passkey_lengths is not None; a leakage entry, where it has one, per
    layer of n_layer."""
    lengths: list
    n_layer: int
    passkey_lengths: list = None
    distances: list = None
    prompts: int = 0


def _shape(ec, N, n_layer, tokenizer=None, passkey=False):
    """The Shape of an evaluation at training length N: _evaluate_run's (passkey=True, given the
    run's tokenizer) or a loss-only one's (_extension_losses, the home corpus's loss)."""
    shape = Shape(lengths=[N * m for m in ec.multipliers], n_layer=n_layer)
    if passkey and ec.passkey_multipliers:
        shape.passkey_lengths = [N * m for m in ec.passkey_multipliers]
        shape.distances = [distance_grid(L, N, tokenizer=tokenizer) for L in shape.passkey_lengths]
        shape.prompts = ec.prompts
    return shape


def _well_formed(result, shape):
    """Whether a stored result (an eval*.json's) has `shape`, every number in it finite. A
    damaged or hand-made file fails it and is treated as absent: computed again, or, for a run
    kept without its checkpoint, the run is trained again."""
    if not isinstance(result, dict) or not isinstance(result.get("loss"), dict):
        return False
    if set(result["loss"]) != {str(L) for L in shape.lengths}:
        return False
    for r in result["loss"].values():
        edges, buckets = (r.get("bucket_edges"), r.get("bucket_loss")) if isinstance(r, dict) else (None, None)
        if not (is_finite_number(r.get("loss")) and isinstance(r.get("n_windows"), int) and r["n_windows"] > 0
                and isinstance(edges, list) and isinstance(buckets, list) and len(edges) == len(buckets) + 1
                and all(map(is_finite_number, edges + buckets))):
            return False
    leakage = result.get("leakage", [])
    if "leakage" in result and not (isinstance(leakage, list) and len(leakage) == shape.n_layer):
        return False
    if not all(isinstance(x, dict) and is_finite_number(x.get("q")) and is_finite_number(x.get("k")) for x in leakage):
        return False
    if shape.passkey_lengths is None:
        return "passkey" not in result
    table = result.get("passkey")
    if not (isinstance(table, dict) and table.get("lengths") == shape.passkey_lengths
            and table.get("distances") == shape.distances):
        return False
    for name, valid in (("keys", lambda k: isinstance(k, str) and k.isdigit()),
                        ("correct", lambda c: c in (0, 1) and not isinstance(c, bool))):
        cells = table.get(name)
        if not (isinstance(cells, list) and [len(c) if isinstance(c, list) else -1 for c in cells]
                == [len(d) for d in shape.distances]):
            return False
        for cell in (cell for by_length in cells for cell in by_length):
            if not (isinstance(cell, list) and len(cell) == shape.prompts and all(map(valid, cell))):
                return False
    return True


def _cached_eval(run_dir, ec, step, compute, shape, name="eval", record=None):
    # kept while the evaluation settings and the checkpoint's step are the same and it has
    # `shape` (_well_formed); record (_run_record), where given, is written beside the result
    path = run_dir / f"{name}.json"
    stored = _read_cache(path)
    if stored is not None:
        if (stored.get("eval_key") == ec.eval_key() and stored.get("step") == step
                and _well_formed(stored.get("result"), shape)):
            if record is not None and stored.get("run") != record:
                _write_json(path, dict(stored, run=record))  # written before runs had records
            return stored["result"]
    result = compute()
    engine = ec.backend if ec.backend == "numpy" else f"torch {torch_device(ec).type}"
    _write_json(path, {"eval_key": ec.eval_key(), "step": step, "engine": engine, "result": result,
                       **({"run": record} if record is not None else {})})
    return result


def _kept(path, ec, step, shape):
    """The result stored in the evaluation file `path` under ec's evaluation settings at `step`,
    when it has `shape` (_well_formed); else None."""
    stored = _read_cache(path)
    if (stored and stored.get("eval_key") == ec.eval_key() and stored.get("step") == step
            and _well_formed(stored.get("result"), shape)):
        return stored
    return None


def _kept_rows(ec, out, label, seed):
    """run_one's rows of a run from its folder alone, loading no checkpoint: when its eval.json
    at the budget records the very run ec asks for (_run_record) and every other evaluation
    run_one would make is there too; else None."""
    budget = TrainConfig(**ec.train).steps
    config, tc = _run_configs(ec, label, seed)
    run_dir = _run_dir(out, label, seed)
    N, tokenizer = ec.model["train_len"], _vocabulary(ec)
    stored = _kept(run_dir / "eval.json", ec, budget, _shape(ec, N, config.n_layer, tokenizer, passkey=True))
    if stored is None or stored.get("run") != _run_record(config, tc, ec.data, tokenizer):
        return None
    rows = {label: dict(stored["result"], curve=retrieval_curve(run_dir), steps=budget)}
    names = [f"eval-{kind}" for kind in ec.extend] if config.pe == "rope" and not config.rope_clip else []
    for name, row in zip(names, [f"{label}+{kind}" for kind in ec.extend]):
        extra = _kept(run_dir / f"{name}.json", ec, budget, _shape(ec, N, config.n_layer))
        if extra is None:
            return None
        rows[row] = dict(extra["result"], steps=budget)
    if _other_corpus(ec):
        home = _kept(run_dir / "eval-home.json", ec, budget, _shape(ec, N, config.n_layer))
        if home is None:
            return None
        rows[home_row(label, ec)] = dict(home["result"], steps=budget)
    continued = _finished_continuations(ec, out, label, seed)
    if continued is None:
        return None
    rows.update(continued)
    return rows


def keep_records(ec, out, dest):
    """Copy the records of every run of ec's variants and seeds (and their continued runs) in
    `out` evaluated under ec's settings (its eval*.json and log.jsonl, not its checkpoint)
    into dest/runs/<variant>/seed<k>/; return how many runs. They are enough to write the
    report again (--report-to with --out dest) and to resume the experiment in a new folder
    with them copied into its runs/: run_one reuses a run kept this way (_kept_rows) instead
    of training it again. Runs of other variants in `out` are left out."""
    names = []
    for label in ec.variants:
        for seed in range(ec.seeds):
            names.append((label, seed))
            config = _run_configs(ec, label, seed)[0]
            if ec.continue_factor and continues(config):
                names += [(name, seed) for name in continuations(label, config, ec, ec.model["train_len"])]
    count = 0
    for label, seed in names:
        run_dir = _run_dir(out, label, seed)
        stored = _read_cache(run_dir / "eval.json")
        if not stored or stored.get("eval_key") != ec.eval_key():
            continue
        target = _run_dir(dest, label, seed)
        if target.exists() and target.resolve() == run_dir.resolve():
            continue  # dest is out
        for source in sorted(run_dir.glob("eval*.json")) + [run_dir / LOG_NAME]:
            if source.exists():
                atomic_write(target / source.name, lambda f, data=source.read_bytes(): f.write(data))
        count += 1
    return count


def finished_runs(ec, out):
    """{row: {seed: result}}, as run_experiment gathers them, of the runs in `out` already
    evaluated at the budget under ec's evaluation settings, training and evaluating nothing.
    Only the seeds every variant has finished are kept, so that comparisons stay paired;
    with continue_factor, those whose continued runs are all evaluated too."""
    budget, N, tokenizer = TrainConfig(**ec.train).steps, ec.model["train_len"], _vocabulary(ec)
    runs, seeds = {}, []
    for seed in range(ec.seeds):
        rows = {}
        for label in ec.variants:
            run_dir = _run_dir(out, label, seed)
            n_layer = _run_configs(ec, label, seed)[0].n_layer
            stored = _kept(run_dir / "eval.json", ec, budget, _shape(ec, N, n_layer, tokenizer, passkey=True))
            if stored is None:
                break
            rows[label] = dict(stored["result"], curve=retrieval_curve(run_dir), steps=budget)
            for kind in ec.extend:
                extra = _kept(run_dir / f"eval-{kind}.json", ec, budget, _shape(ec, N, n_layer))
                if extra is not None:
                    rows[f"{label}+{kind}"] = dict(extra["result"], steps=budget)
            home = _kept(run_dir / "eval-home.json", ec, budget, _shape(ec, N, n_layer)) if _other_corpus(ec) else None
            if home is not None:
                rows[home_row(label, ec)] = dict(home["result"], steps=budget)
            continued = _finished_continuations(ec, out, label, seed)
            if continued is None:
                break
            rows.update(continued)
        else:
            seeds.append(seed)
            for name, result in rows.items():
                runs.setdefault(name, {})[seed] = result
    return runs, seeds


def _finished_continuations(ec, out, label, seed):
    """{row: result} of the continued runs (Figure 3) of one variant and seed, {} when it has
    none, None when one of them is not evaluated yet."""
    config = _run_configs(ec, label, seed)[0]
    if not (ec.continue_factor and continues(config)):
        return {}
    rows, longer = {}, ec.model["train_len"] * ec.continue_factor
    shape = _shape(ec, longer, config.n_layer, _vocabulary(ec), passkey=True)
    for name in continuations(label, config, ec, ec.model["train_len"]):
        sub = _run_dir(out, name, seed)
        stored = _kept(sub / "eval.json", ec, ec.continue_steps, shape)
        if stored is None:
            return None
        rows[name] = dict(stored["result"], curve=retrieval_curve(sub), steps=ec.continue_steps)
    return rows


def report_finished(ec, out, dest):
    """Write results.json, results.md and the figures of the runs of `out` finished so far
    (finished_runs) into `dest`, and the records of every run evaluated so far into
    dest/runs (keep_records); return the summary. For a look at a long experiment while it
    runs or after it stopped, and to keep its results beside the report. Raises UserError
    when no seed has finished every variant (after keeping the records of the runs that are
    evaluated, if any)."""
    ec.check()
    runs, seeds = finished_runs(ec, Path(out))
    kept = keep_records(ec, out, dest)
    if not seeds:
        raise UserError(f"{out} has no seed whose runs of every variant ({', '.join(ec.variants)}) are "
                        "evaluated yet, under these settings; nothing to report"
                        + (f" (the records of its {kept} evaluated run(s) are kept in {dest}/runs)" if kept else ""))
    summary = summarise(runs, dataclasses.replace(ec, seeds=len(seeds)), ec.model["train_len"])
    Path(dest).mkdir(parents=True, exist_ok=True)
    write_report(summary, dest)
    return summary


def plain_rope(config):
    """RoPE with every frequency as trained: no clip, no scaling."""
    return config.pe == "rope" and not config.rope_clip and config.rope_scaling == "none"


def continues(config):
    """Whether a variant has Figure 3's continuations: plain RoPE and FoPE."""
    return plain_rope(config) or config.pe == "fope"


def continuations(label, config, ec, N):
    """{row label: GPTConfig fields} of Figure 3's continued runs of one trained variant.

    RoPE: '+yarn@KN', YaRN as the FoPE authors' baseline (their config: a fixed scale of 16
    whatever the new length, the ramp's original length the first training length, no
    attention temperature), and '-to-fope@KN', FoPE in its place with the authors' padding
    (FoPE's coefficients fresh, everything else copied). FoPE: '@KN', FoPE on at the longer
    length, its clip floor 2*pi/(K N) as the authors' continued config has it."""
    k = ec.continue_factor
    base = dict(config.to_dict(), train_len=N * k)
    if config.pe == "fope":
        return {f"{label}@{k}N": base}
    return {f"{label}+yarn@{k}N": dict(base, rope_scaling="yarn", rope_scale=float(ec.continue_yarn_scale),
                                       rope_original_len=N, rope_yarn_temperature=False),
            f"{label}-to-fope@{k}N": dict(base, pe="fope", fope_zero_freq="authors")}


def _continued_runs(label, run_dir, ec, tc, corpus, eval_tokens, N, seed, progress):
    """Figure 3: train each of `continuations` on from run_dir's checkpoint for continue_steps
    steps at the longer length (the same seed, so the same batches for every continuation of
    one run), probe and evaluate it at the new length L' = K N: loss at L' x multipliers,
    passkey at L' x passkey multipliers with the distance grid of L'."""
    longer = N * ec.continue_factor
    source = load_checkpoint(run_dir)[0].config
    ctc = dataclasses.replace(tc, steps=ec.continue_steps, warmup=min(20, ec.continue_steps // 10),
                              eval_interval=max(1, min(tc.eval_interval, ec.continue_steps)))
    probe = None
    if round(ctc.passkey_frac * ctc.batch_size):
        def probe(model, tokenizer):
            return probe_accuracy(model, tokenizer, longer, ctc.passkey_digits)
    rows = {}
    for name, fields in continuations(label, source, ec, N).items():
        sub = run_dir.parent.parent / _slug(name) / run_dir.name
        model, tokenizer, step = _train_run(sub, GPTConfig(**fields), ctc, corpus, ec.data, progress,
                                            init_from=run_dir, probe=probe, ec=ec)
        result = _cached_eval(
            sub, ec, step, lambda: _evaluate_run(model, tokenizer, ec, eval_tokens, longer, seed, progress),
            _shape(ec, longer, model.config.n_layer, tokenizer, passkey=True))
        rows[name] = dict(result, curve=retrieval_curve(sub), steps=step)
    return rows


RETRIEVES = 0.9  # "retrieves at N": evaluation accuracy at N of at least this


def summarise(runs, ec, N):
    """Every number with its interval over seeds (stats.py), per variant, and the paired
    differences between variants. runs: {variant: {seed: run_one's result}}."""
    summary = {"train_len": N, "unit": ec.unit, "seeds": ec.seeds, "steps": ec.train.get("steps"),
               "level": stats.LEVEL, "variants": {}, "differences": []}
    if ec.unit == "token":  # to compare nats/token with nats/char: divide by the characters per token
        text, tokenizer = _texts(ec)[1:]
        summary["chars_per_token"] = len(text) / len(tokenizer.encode(text))
    for label, by_seed in runs.items():
        seeds = sorted(by_seed)
        first = by_seed[seeds[0]]
        entry = {"seeds": seeds, "steps": [by_seed[s].get("steps") for s in seeds], "loss": {}}
        for L in sorted({int(L) for s in seeds for L in by_seed[s]["loss"]}):
            values = [by_seed[s]["loss"][str(L)]["loss"] for s in seeds]
            curves = np.array([by_seed[s]["loss"][str(L)]["bucket_loss"] for s in seeds])
            entry["loss"][str(L)] = dict(stats.t_interval(values), values=values,
                                         n_windows=first["loss"][str(L)]["n_windows"],
                                         bucket_edges=first["loss"][str(L)]["bucket_edges"],
                                         bucket_loss=curves.mean(axis=0).tolist())
        entry["rise"] = {L: stats.t_interval(climbs)
                         for L, climbs in _rise({s: by_seed[s]["loss"] for s in seeds}, seeds, N).items()}
        if all("passkey" in by_seed[s] for s in seeds):
            entry["passkey"] = _passkey_summary([by_seed[s]["passkey"] for s in seeds])
            at_n = [float(np.mean(by_seed[s]["passkey"]["correct"][0])) for s in seeds]
            if first["passkey"]["lengths"][0] == N:
                entry["accuracy_at_N"] = at_n
                entry["retrieves_at_N"] = [a >= RETRIEVES for a in at_n]
        if all(by_seed[s].get("curve") for s in seeds):
            entry["curves"] = {str(s): by_seed[s]["curve"] for s in seeds}
        if all("leakage" in by_seed[s] for s in seeds):
            layers = len(first["leakage"])
            entry["leakage"] = [{x: stats.t_interval([by_seed[s]["leakage"][l][x] for s in seeds])
                                 for x in ("q", "k")} for l in range(layers)]
        summary["variants"][label] = entry
    for a, b in _comparable_pairs(runs, ec):
        summary["differences"].append(_paired(a, runs[a], b, runs[b], N))
    if ec.eval_data:  # in every report, the runner's and --report-to's
        summary["eval_text"] = dict(name=ec.eval_data, chars=len(_texts(ec)[1]), untrained=untrained_characters(ec))
    return summary


def _comparable_pairs(labels, ec):
    """The pairs (a, b) of rows whose paired difference means something: two variants on the
    same text, or one variant's weights on the two texts ('rope' - 'rope [shakespeare]', the
    shift); never one variant on one text against another variant on the other."""
    home_of = {home_row(label, ec): label for label in labels}  # 'rope [shakespeare]' -> 'rope'
    home = {label for label in labels if label in home_of}
    return [(a, b) for a, b in itertools.combinations(labels, 2)
            if (a in home) == (b in home) or home_of.get(b) == a or home_of.get(a) == b]


def _rise(loss, seeds, N):
    """How far the loss climbs past the training length: {str(L): [loss at L - loss at N, seed
    by seed]} (the same windows at each length) for every length L > N; {} where N was not
    evaluated (a continued run's lengths start at its own N'). loss: {seed: {str(length):
    {"loss": ...}}}."""
    if not all(str(N) in loss[s] for s in seeds):
        return {}
    return {L: [loss[s][L]["loss"] - loss[s][str(N)]["loss"] for s in seeds]
            for L in sorted(loss[seeds[0]], key=int) if int(L) > N}


def _passkey_summary(per_seed):
    """Accuracy per length and per (length, distance) with intervals, and split by whether the
    key has a repeated digit. per_seed: passkey_by_distance's results of one variant, by seed."""
    first = per_seed[0]
    out = dict(lengths=first["lengths"], distances=first["distances"], prompts=len(first["keys"][0][0]),
               by_length=[], cells=[], repeated=[])
    for i, L in enumerate(first["lengths"]):
        correct = np.array([r["correct"][i] for r in per_seed])  # (seeds, distances, prompts)
        keys = np.array([r["keys"][i] for r in per_seed])
        out["by_length"].append(stats.accuracy_interval(correct.reshape(len(per_seed), -1)))
        out["cells"].append([stats.accuracy_interval(correct[:, j]) for j in range(correct.shape[1])])
        repeated = np.vectorize(has_repeated_digit)(keys)
        out["repeated"].append(stats.accuracy_by_group(correct.reshape(len(per_seed), -1),
                                                     repeated.reshape(len(per_seed), -1)))
    pooled = _pooled_by_distance(per_seed)
    out["by_distance"] = dict(distances=list(pooled), lengths=[pooled[d][0] for d in pooled],
                              accuracy=[stats.accuracy_interval(pooled[d][2]) for d in pooled])
    return out


def _pooled_by_distance(per_seed):
    """{distance: (the lengths that hold it, their keys by seed, correct (seeds, prompts))}, by
    distance: each needle distance's prompts pooled over every passkey length whose grid has it."""
    first = per_seed[0]
    cells = {}
    for i, distances in enumerate(first["distances"]):
        for j, d in enumerate(distances):
            cells.setdefault(d, []).append((i, j))
    out = {}
    for d in sorted(cells):
        keys = [[k for i, j in cells[d] for k in r["keys"][i][j]] for r in per_seed]
        correct = np.array([[c for i, j in cells[d] for c in r["correct"][i][j]] for r in per_seed])
        out[d] = ([first["lengths"][i] for i, _ in cells[d]], keys, correct)
    return out


def _paired(a, runs_a, b, runs_b, N):
    """Paired differences a - b over the seeds both have: loss at every length (t interval of
    the per-seed differences, same windows), the loss's rise past N (_rise) and passkey
    accuracy at every length (bootstrap over seeds and the shared prompts)."""
    seeds = sorted(set(runs_a) & set(runs_b))
    out = {"a": a, "b": b, "seeds": seeds, "loss": {}, "rise": {}, "passkey": {}}
    if not seeds:
        return out
    for L in sorted(set(runs_a[seeds[0]]["loss"]) & set(runs_b[seeds[0]]["loss"]), key=int):
        out["loss"][L] = stats.paired_difference([runs_a[s]["loss"][L]["loss"] for s in seeds],
                                                 [runs_b[s]["loss"][L]["loss"] for s in seeds])
    rise_a, rise_b = (_rise({s: runs[s]["loss"] for s in seeds}, seeds, N) for runs in (runs_a, runs_b))
    out["rise"] = {L: stats.paired_difference(rise_a[L], rise_b[L]) for L in rise_a if L in rise_b}
    if all("passkey" in runs_a[s] and "passkey" in runs_b[s] for s in seeds):
        pa, pb = runs_a[seeds[0]]["passkey"], runs_b[seeds[0]]["passkey"]
        for i, L in enumerate(pa["lengths"]):
            if L in pb["lengths"] and all(runs_a[s]["passkey"]["keys"][i] == runs_b[s]["passkey"]["keys"][
                    pb["lengths"].index(L)] for s in seeds):  # the same prompts, so pairs
                j = pb["lengths"].index(L)
                ca = np.array([runs_a[s]["passkey"]["correct"][i] for s in seeds]).reshape(len(seeds), -1)
                cb = np.array([runs_b[s]["passkey"]["correct"][j] for s in seeds]).reshape(len(seeds), -1)
                out["passkey"][str(L)] = stats.paired_accuracy_difference(ca, cb)
        # by needle distance, pooled over the lengths both were evaluated at with the same prompts
        pooled_a = _pooled_by_distance([runs_a[s]["passkey"] for s in seeds])
        pooled_b = _pooled_by_distance([runs_b[s]["passkey"] for s in seeds])
        out["passkey_by_distance"] = {
            str(d): stats.paired_accuracy_difference(pooled_a[d][2], pooled_b[d][2])
            for d in pooled_a if d in pooled_b and pooled_a[d][:2] == pooled_b[d][:2]}  # same prompts
    return out


def _cell(r, digits=3):
    """'1.611 (0.021) [1.559, 1.663]': mean (sample sd) [95% interval]; parts that are None left out."""
    text = f"{r['mean']:.{digits}f}"
    if r.get("sd") is not None:
        text += f" ({r['sd']:.{digits}f})"
    if r.get("low") is not None:
        text += f" [{r['low']:.{digits}f}, {r['high']:.{digits}f}]"
    return text


def _diff_cell(d, digits=3):
    if d.get("low") is None:
        return f"{d['mean']:+.{digits}f}"
    mark = "" if d["separated"] else " n.s."
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]{mark}"


def markdown_table(summary):
    """The results as markdown: loss and passkey with sd and 95% intervals, passkey by
    distance, keys with and without a repeated digit, the retrieval at N of every run, and
    the paired differences between variants."""
    N = summary["train_len"]
    variants = summary["variants"]
    level = f"{summary.get('level', 0.95):.0%}"
    lengths = sorted({int(L) for v in variants.values() for L in v["loss"]})
    n_seeds = max(len(v["seeds"]) for v in variants.values())
    unit = summary.get("unit", "character")
    per = "char" if unit == "character" else unit
    out = [f"N = {N} {unit}s; {n_seeds} seed(s) per variant, each trained {summary.get('steps')} "
           f"steps. Cells: mean (sample sd over seeds) [{level} interval]; with one seed, the mean."]
    if "chars_per_token" in summary:
        out += ["", f"Tokens: a byte-level BPE learned on the training text; the evaluation text has "
                f"{summary['chars_per_token']:.2f} characters per token, so a loss in nats/token divided "
                "by it is in nats/char."]
    out += ["", f"**Validation loss (nats/{per}) by evaluation length**", ""]
    head = ["variant"] + [f"{L // N}N ({L})" for L in lengths]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, v in variants.items():
        out.append("| " + " | ".join([label] + [_cell(v["loss"][str(L)]) if str(L) in v["loss"] else ""
                                               for L in lengths]) + " |")
    windows = next(iter(variants.values()))["loss"]
    out += ["", "Windows per length (non-overlapping, the same for every model): "
            + ", ".join(f"{w['n_windows']} at {L}" for L, w in windows.items()) + "."]
    rising = {label: v["rise"] for label, v in variants.items() if v.get("rise")}
    if rising:
        rise_L = sorted({int(L) for r in rising.values() for L in r})
        out += ["", f"**Rise past N** (nats/{per}): loss at L minus loss at N, seed by seed, on the same "
                "windows; how far each loss climbs past the training length (the smaller, the steadier)", ""]
        head = ["variant"] + [f"{L // N}N ({L})" for L in rise_L]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, r in rising.items():
            out.append("| " + " | ".join([label] + [_cell(r[str(L)]) if str(L) in r else "" for L in rise_L]) + " |")
    with_pk = {k: v["passkey"] for k, v in variants.items() if "passkey" in v}
    if with_pk:
        pk0 = next(iter(with_pk.values()))
        # a continued run is evaluated at its own lengths (N' x multipliers): every table is
        # laid out by length, each run's cells under the lengths it was evaluated at
        pk_lengths = sorted({L for pk in with_pk.values() for L in pk["lengths"]})
        out += ["", f"**Passkey accuracy by prompt length** (all distances; {pk0['prompts']} prompts "
                "per (length, distance) cell and seed, a fresh key each; interval: the hull of a "
                "seed-and-prompt bootstrap and the pooled Wilson interval, stats.py)", ""]
        head = ["variant"] + [f"{L // N}N ({L})" for L in pk_lengths]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, pk in with_pk.items():
            by_L = dict(zip(pk["lengths"], pk["by_length"]))
            out.append("| " + " | ".join([label] + [_cell(by_L[L], 2) if L in by_L else "" for L in pk_lengths])
                       + " |")
        out += ["", f"**Passkey accuracy by (length, needle distance)**: distance = {unit}s from "
                "the key's first digit in the needle to the end of the prompt", ""]
        by_distance = {label: {L: dict(zip(d, c)) for L, d, c in zip(pk["lengths"], pk["distances"], pk["cells"])}
                       for label, pk in with_pk.items()}
        for L in pk_lengths:
            at_L = {label: cells[L] for label, cells in by_distance.items() if L in cells}
            distances = sorted({d for cells in at_L.values() for d in cells})
            head = [f"{L // N}N ({L}) \\ distance"] + [str(d) for d in distances]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for label, cells in at_L.items():
                out.append("| " + " | ".join([label] + [_cell(cells[d], 2) if d in cells else "" for d in distances])
                           + " |")
            out.append("")
        by_d = {label: dict(zip(pk["by_distance"]["distances"], pk["by_distance"]["accuracy"]))
                for label, pk in with_pk.items() if "by_distance" in pk}
        if by_d:
            distances = sorted({d for cells in by_d.values() for d in cells})
            out += [f"**Passkey accuracy by needle distance** ({unit}s from the key to the end of the "
                    "prompt; each distance pooled over every prompt length that holds it)", ""]
            head = ["variant"] + [str(d) for d in distances]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for label, cells in by_d.items():
                out.append("| " + " | ".join([label] + [_cell(cells[d], 2) if d in cells else "" for d in distances])
                           + " |")
            out.append("")
        out += ["**Keys with a repeated digit against keys without** (all distances; n: prompts; "
                "accuracy pooled over seeds (sd of the per-seed accuracies) [interval as above]; "
                "difference repeated - distinct with the seed-and-prompt bootstrap interval; n.s.: "
                "the interval contains 0)", ""]
        head = ["variant"] + [f"{L // N}N: repeated / distinct / difference" for L in pk_lengths]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, pk in with_pk.items():
            cells = {}
            for L, r in zip(pk["lengths"], pk["repeated"]):
                parts = [f"n={g['n']}: {_cell(g, 2)}" if g["n"] else "-" for g in (r["repeated"], r["distinct"])]
                parts.append(_diff_cell(r["difference"], 2) if "difference" in r else "-")
                cells[L] = " / ".join(parts)
            out.append("| " + " | ".join([label] + [cells.get(L, "") for L in pk_lengths]) + " |")
    at_n = {k: v for k, v in variants.items() if "accuracy_at_N" in v}
    if at_n:
        out += ["", f"**Retrieval at N per seed** (evaluation accuracy at N; a run retrieves at N "
                f"when it is at least {RETRIEVES})", "", "| variant | accuracy at N, by seed | runs that retrieve |",
                "|---|---|---|"]
        for label, v in at_n.items():
            out.append(f"| {label} | " + ", ".join(f"{a:.2f}" for a in v["accuracy_at_N"])
                       + f" | {sum(v['retrieves_at_N'])} of {len(v['retrieves_at_N'])} |")
    diffs = [d for d in summary.get("differences", []) if d["loss"]]
    if diffs:
        out += ["", f"**Paired differences a - b** (same seeds, same windows and prompts; {level} "
                "interval; loss: t interval over seeds; passkey: bootstrap over seeds and prompts; "
                "n.s.: not separated, the interval contains 0)", ""]
        loss_L = sorted({L for d in diffs for L in d["loss"]}, key=int)
        pk_L = sorted({L for d in diffs for L in d["passkey"]}, key=int)
        head = ["a - b"] + [f"loss {int(L) // N}N" for L in loss_L] + [f"passkey {int(L) // N}N" for L in pk_L]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for d in diffs:
            cells = [_diff_cell(d["loss"][L]) if L in d["loss"] else "" for L in loss_L]
            cells += [_diff_cell(d["passkey"][L], 2) if L in d["passkey"] else "" for L in pk_L]
            out.append(f"| {d['a']} - {d['b']} | " + " | ".join(cells) + " |")
        with_rise = [d for d in diffs if d.get("rise")]
        if with_rise:
            rise_L = sorted({L for d in with_rise for L in d["rise"]}, key=int)
            out += ["", f"**Paired differences in the rise past N** (a - b of loss at L minus loss at N, "
                    f"seed by seed; t interval, {level}; negative: a's loss climbs less past N than b's)", ""]
            head = ["a - b"] + [f"{int(L) // N}N" for L in rise_L]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for d in with_rise:
                out.append(f"| {d['a']} - {d['b']} | "
                           + " | ".join(_diff_cell(d["rise"][L]) if L in d["rise"] else "" for L in rise_L) + " |")
        with_distance = [d for d in diffs if d.get("passkey_by_distance")]
        if with_distance:
            distances = sorted({int(x) for d in with_distance for x in d["passkey_by_distance"]})
            out += ["", f"**Paired differences in passkey accuracy by needle distance** (a - b; each "
                    f"distance pooled over the prompt lengths that hold it; bootstrap over seeds and prompts, "
                    f"{level} interval)", ""]
            head = ["a - b"] + [f"d = {x}" for x in distances]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for d in with_distance:
                cells = [_diff_cell(d["passkey_by_distance"][str(x)], 2) if str(x) in d["passkey_by_distance"]
                         else "" for x in distances]
                out.append(f"| {d['a']} - {d['b']} | " + " | ".join(cells) + " |")
    shift = summary.get("eval_text")
    if shift:
        untrained = shift["untrained"]
        share = sum(untrained.values()) / shift["chars"]
        how = ("in the vocabulary, untrained" if unit == "character"
               else "the BPE encodes them from their bytes; the model never saw them")
        out += ["", f"Loss evaluated on {shift['name']} ({shift['chars']:,} characters): "
                f"{len(untrained)} of its distinct characters, {share:.1%} of the text, never occur "
                f"in the training text ({how})"
                + (": " + " ".join(repr(c) for c in untrained) if untrained else "") + ". "
                "The rows 'VARIANT [corpus]' are the same weights scored on the training corpus's "
                "validation text."]
    with_leak = {k: v["leakage"] for k, v in variants.items() if "leakage" in v}
    if with_leak:
        layers = max(len(v) for v in with_leak.values())
        out += ["", "Spectral leakage: share of the rotated queries' energy away from each rotating "
                "pair's own frequency (spectrum.model_leakage over 256 windows of N), mean over "
                "pairs; over seeds mean (sd) [95% interval]. Caution: the measure reads well above zero "
                "on an untrained model (the floor that content leaves, spectrum.model_leakage), so "
                "the lab draws no conclusion from it; `experiment --mechanism-to` measures the damage "
                "free of that floor, against the same model at init (mechanism.md).", "",
                "| variant | " + " | ".join(f"layer {l}" for l in range(layers)) + " |", "|" + "---|" * (layers + 1)]
        for label, leak in with_leak.items():
            out.append(f"| {label} | " + " | ".join(_cell(x["q"]) for x in leak) + " |")
    return "\n".join(out) + "\n"


def error_bars(rs):
    """Asymmetric error bars (2, n) from interval dicts; zeros where there is no interval."""
    return np.array([[r["mean"] - r["low"] if r.get("low") is not None else 0.0 for r in rs],
                     [r["high"] - r["mean"] if r.get("high") is not None else 0.0 for r in rs]])


def write_report(summary, out):
    """results.json, results.md and the figures: figure.png (loss and passkey by length),
    passkey_by_distance.png, retrieval_curves.png, loss_by_position.png."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    out = Path(out)
    _write_json(out / "results.json", summary)
    table = markdown_table(summary)
    atomic_write(out / "results.md", lambda f: f.write(table.encode()))
    N = summary["train_len"]
    variants = summary["variants"]
    unit = summary.get("unit", "character")
    colour = {label: f"C{i}" for i, label in enumerate(variants)}
    # on the log x axes, each variant's points a little apart, so that equal values (zeros,
    # ones) do not hide each other
    dodge = {label: 2 ** (0.04 * (i - (len(variants) - 1) / 2)) for i, label in enumerate(variants)}
    interval = f"{summary.get('level', 0.95):.0%} interval"

    with_passkey = [label for label, v in variants.items() if "passkey" in v]
    fig = Figure(figsize=(11, 4) if with_passkey else (6.5, 4))
    ax_loss, *ax_pk = fig.subplots(1, 2 if with_passkey else 1, squeeze=False)[0]
    curves = {k: ([int(L) for L in v["loss"]], [r["mean"] for r in v["loss"].values()])
              for k, v in variants.items()}
    spread = {k: error_bars(list(v["loss"].values())) for k, v in variants.items()}
    plot_loss_by_length(curves, N, ax=ax_loss, spread=spread, unit=unit)
    ax_loss.set_title(f"validation loss past the training length ({interval})")
    if with_passkey:  # no panel at all for an experiment without passkey prompts
        ax_pk = ax_pk[0]
        for label in with_passkey:
            pk = variants[label]["passkey"]
            ax_pk.errorbar(np.array(pk["lengths"]) * dodge[label], [r["mean"] for r in pk["by_length"]],
                           yerr=error_bars(pk["by_length"]),
                           marker="o", capsize=3, label=label, color=colour[label])
        ax_pk.axvline(N, color="gray", linestyle="--", linewidth=1)
        ax_pk.set_xscale("log", base=2)
        ax_pk.set_ylim(-0.05, 1.05)
        ax_pk.set_xlabel(f"prompt length ({unit}s)")
        ax_pk.set_ylabel("passkey accuracy, all distances")
        ax_pk.set_title(f"passkey retrieval ({interval})")
        legend_outside(ax_pk)
        ax_pk.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "figure.png", dpi=120, bbox_inches="tight")

    longest = max(int(L) for v in variants.values() for L in v["loss"])
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    plot_loss_by_position({k: (v["loss"][str(longest)]["bucket_edges"], v["loss"][str(longest)]["bucket_loss"])
                           for k, v in variants.items() if str(longest) in v["loss"]}, N, ax=ax, unit=unit)
    ax.set_title(f"loss by position in {longest}-{unit} windows")
    fig.tight_layout()
    fig.savefig(out / "loss_by_position.png", dpi=120, bbox_inches="tight")

    with_pk = {k: v["passkey"] for k, v in variants.items() if "passkey" in v}
    if with_pk:
        lengths = sorted({L for pk in with_pk.values() for L in pk["lengths"]})
        fig = Figure(figsize=(3.2 * len(lengths), 3.4))
        axes = np.atleast_1d(fig.subplots(1, len(lengths), sharey=True))
        for ax, L in zip(axes, lengths):
            for label, pk in with_pk.items():
                if L not in pk["lengths"]:
                    continue
                i = pk["lengths"].index(L)
                cells = pk["cells"][i]
                ax.errorbar(np.array(pk["distances"][i]) * dodge[label], [r["mean"] for r in cells],
                            yerr=error_bars(cells), marker="o",
                            capsize=2, label=label, color=colour[label])
            ax.axvline(N, color="gray", linestyle="--", linewidth=1)
            ax.set_xscale("log", base=2)
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"prompt length {L} ({L // N}N)")
            ax.set_xlabel(f"needle distance ({unit}s)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("passkey accuracy")
        handles = {}  # label -> line, from every panel: continued runs are not in the first ones
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        legend_outside(axes[-1], handles=list(handles.values()), labels=list(handles))
        fig.suptitle(f"passkey accuracy by needle distance ({interval}; dashed: N)")
        fig.tight_layout()
        fig.savefig(out / "passkey_by_distance.png", dpi=120, bbox_inches="tight")

    with_curves = {k: v["curves"] for k, v in variants.items() if "curves" in v}
    if with_curves:
        # one panel per variant, one line per seed: 15 runs on one axes hide each other
        fig = Figure(figsize=(2.8 * len(with_curves), 3.2))
        axes = np.atleast_1d(fig.subplots(1, len(with_curves), sharey=True))
        seeds = sorted({seed for curves in with_curves.values() for seed in curves}, key=int)
        style = {seed: ["-", "--", ":", "-."][i % 4] for i, seed in enumerate(seeds)}
        for ax, (label, curves) in zip(axes, with_curves.items()):
            for seed, curve in curves.items():
                steps, acc = zip(*curve)
                ax.plot(steps, acc, style[seed], color=colour[label], marker=".")
            ax.axhline(0.9, color="black", linewidth=0.8, alpha=0.4)
            ax.set_ylim(-0.05, 1.05)
            ax.set_title(label)
            ax.set_xlabel("training step")
            ax.grid(alpha=0.3)
        axes[-1].legend([Line2D([], [], color="gray", linestyle=style[seed]) for seed in seeds],
                        [f"seed {seed}" for seed in seeds], loc="upper left", bbox_to_anchor=(1.02, 1),
                        borderaxespad=0, fontsize=8)
        axes[0].set_ylabel("passkey accuracy at N (probe set)")
        fig.suptitle("retrieval during training, one line per run (thin line: 0.9)")
        fig.tight_layout()
        fig.savefig(out / "retrieval_curves.png", dpi=120, bbox_inches="tight")
