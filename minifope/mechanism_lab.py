"""The mechanism measures (mechanism.py) over a lab's trained runs, against the same models at init.

    python -m minifope experiment --out runs/lab --steps 8000 --mechanism-to docs/lab

For every run of an experiment folder evaluated at its budget (experiment.finished_runs), and
for the same config at step 0 (GPT(config) with the run's seed: the weights it started from):

- per block, the positional part of the rotated queries and keys (mechanism.positional_spectrum,
  over `windows` windows of N characters of the evaluation text, read at positions 0 .. N-1),
  pooled over heads and pairs: its share of the queries' power, and its split into the pairs'
  own frequencies, distortion and leakage, as energies (mean power per position) and shares.
  The positional part is what is the same in every window at a position: at init, the mean
  query (the text's mean character) rotated at each pair's own frequency, so its own share
  is 1 and its leakage and distortion 0 (tests/test_mechanism_lab.py); training moves them.
  ALiBi and NoPE rotate nothing, so every pair's own frequency is 0: "own" is the constant
  part and "leakage" all positional energy at other frequencies, what a model without a
  rotary embedding makes of position by itself (the causal mask);
- per block, the logit-kernel drift (mechanism.logit_kernel_drift, `drift_windows` windows of
  2N): its root mean square over the distances 0 .. N-1, in logit units;
- for RoPE without clip or scaling, and for FoPE without its clip (series-only), clip surgery
  (mechanism.clip_surgery): the loss at every length of the lab (the same windows as its
  evaluation) with the frequencies of period > N zeroed, minus the loss without surgery.
  FoPE with its clip has no such frequency to cut (the clip dropped them before training),
  nor have ALiBi and NoPE: their gain is 0 by construction, not measured.

Each run's numbers are kept in its folder (mechanism.json, reused while the run's step and
these settings are the same). The report gives, per variant, mean (sample sd) [95% t
interval] over seeds of the trained value, and of trained minus init (paired by seed).
"""

from pathlib import Path

import numpy as np

from . import stats
from .checkpoint import load_checkpoint
from .config import is_finite_number
from .errors import UserError
from .experiment import _read_cache, _run_dir, _texts, _write_json, error_bars, finished_runs, plain_rope
from .model import GPT
from .lengthgen import eval_windows, loss_by_length
from .mechanism import clip_surgery, logit_kernel_drift, positional_spectrum
from .rope import as_complex
from .spectrum import pair_frequencies

VERSION = 1
ENERGIES = ("power", "positional", "own", "distortion", "leakage")


def block_spectra(model, idx):
    """Per block, {'q': {...}, 'k': {...}}: positional_spectrum's energies summed over heads and
    pairs with a finite own frequency, and the shares of the positional part (own, distortion,
    leakage) and of the power (positional_share)."""
    w = pair_frequencies(model)
    out = []
    for inputs in model.each_layers_attention_inputs(idx):
        layer = {}
        for name in ("q", "k"):
            r = positional_spectrum(as_complex(inputs[f"{name}_rot"].astype(np.float64)), w)
            finite = np.isfinite(r["own"])
            e = {x: float(r[x][finite].sum()) for x in ENERGIES}
            e.update({f"{x}_share": e[x] / e["positional"] if e["positional"] > 0 else float("nan")
                      for x in ("own", "distortion", "leakage")})
            e["positional_share"] = e["positional"] / e["power"]
            layer[name] = e
        out.append(layer)
    return out


def drift_rms(model, idx):
    """Per block, the root mean square over distances of logit_kernel_drift on windows idx (B, 2N)."""
    N = idx.shape[1] // 2
    return [float(np.sqrt(np.mean(logit_kernel_drift(model, idx, layer, N=N)["drift"] ** 2)))
            for layer in range(model.config.n_layer)]


def has_clip_surgery(config):
    """Whether clip_surgery has frequencies to cut at the model's own N: RoPE with every
    frequency as trained, or FoPE without its clip."""
    return plain_rope(config) or (config.pe == "fope" and not config.fope_clip)


def measure(model, eval_tokens, N, lengths, eval_chars, windows=256, drift_windows=32, surgery=True):
    """The mechanism numbers of one model (see the module docstring)."""
    idx = eval_windows(eval_tokens, N, windows)[:, :-1]
    long_idx = eval_windows(eval_tokens, 2 * N, drift_windows)[:, :-1]
    result = dict(blocks=block_spectra(model, idx), drift_rms=drift_rms(model, long_idx))
    if surgery and has_clip_surgery(model.config):
        cut = clip_surgery(model)
        result["surgery_loss"] = {str(L): r["loss"] for L, r in
                                  loss_by_length(cut, eval_tokens, lengths, eval_chars).items()}
    return result


def _settings(ec, windows, drift_windows):
    return dict(version=VERSION, eval_key=ec.eval_key(), windows=windows, drift_windows=drift_windows)


MEASURES = ENERGIES + ("own_share", "distortion_share", "leakage_share", "positional_share")


def _well_formed(stored, n_layer, lengths, surgery):
    """Whether a stored mechanism.json holds what measure() writes for a model of n_layer
    blocks: per block and for q and k every one of MEASURES (a share is NaN where its
    positional part is zero), the drift per block, and, where `surgery`, the surgery's loss at
    exactly `lengths`. A damaged or hand-made file fails it and is measured again."""
    def measure_ok(x, value):  # a share may be NaN (no positional energy to share)
        return is_finite_number(value) or (x.endswith("_share") and isinstance(value, float) and np.isnan(value))

    def block_ok(block):
        return isinstance(block, dict) and all(
            isinstance(block.get(name), dict) and set(block[name]) == set(MEASURES)
            and all(measure_ok(x, block[name][x]) for x in MEASURES)
            for name in ("q", "k"))

    for part, cut in (("trained", surgery), ("init", False)):
        r = stored.get(part)
        if not (isinstance(r, dict) and isinstance(r.get("blocks"), list) and len(r["blocks"]) == n_layer
                and all(map(block_ok, r["blocks"])) and isinstance(r.get("drift_rms"), list)
                and len(r["drift_rms"]) == n_layer and all(map(is_finite_number, r["drift_rms"]))):
            return False
        if cut and not (isinstance(r.get("surgery_loss"), dict) and isinstance(r.get("surgery_gain"), dict)
                        and set(r["surgery_loss"]) == set(r["surgery_gain"]) == {str(L) for L in lengths}
                        and all(map(is_finite_number, [*r["surgery_loss"].values(), *r["surgery_gain"].values()]))):
            return False
    return True


def run_mechanism(ec, out, label, seed, eval_text, windows=256, drift_windows=32):
    """{'trained': measure(...), 'init': measure(...) of the step-0 model, 'step': ...} of one run,
    from its folder's mechanism.json when it was measured at the same step and settings."""
    run_dir = _run_dir(out, label, seed)
    model, tokenizer, state, _ = load_checkpoint(run_dir)
    settings = _settings(ec, windows, drift_windows)
    path = run_dir / "mechanism.json"
    stored = _read_cache(path)
    N = ec.model["train_len"]
    lengths = [N * m for m in ec.multipliers]
    if (stored and stored.get("settings") == settings and stored.get("step") == state.get("step")
            and _well_formed(stored, model.config.n_layer, lengths, has_clip_surgery(model.config))):
        return stored
    eval_tokens = tokenizer.encode(eval_text)
    trained = measure(model, eval_tokens, N, lengths, ec.eval_chars, windows, drift_windows)
    init = measure(GPT(model.config), eval_tokens, N, lengths, ec.eval_chars, windows, drift_windows,
                   surgery=False)
    if "surgery_loss" in trained:
        before = _read_cache(run_dir / "eval.json")["result"]["loss"]
        trained["surgery_gain"] = {L: before[L]["loss"] - after for L, after in trained["surgery_loss"].items()}
    result = dict(settings=settings, step=state.get("step"), trained=trained, init=init)
    _write_json(path, result)
    return result


def summarise_mechanism(per_run):
    """per_run: {variant: {seed: run_mechanism's result}} -> {variant: {...}} with, per block and
    for q and k, each energy and share trained and trained - init over seeds (stats.t_interval;
    trained and init keep their per-seed `values`, in the order of `seeds`, so that two
    variants can be compared paired by seed), the drift likewise, and the surgery's loss gain
    per length."""
    out = {}
    for label, by_seed in per_run.items():
        seeds = sorted(by_seed)
        runs = [by_seed[s] for s in seeds]
        n_blocks = len(runs[0]["trained"]["blocks"])
        entry = {"seeds": seeds, "blocks": [], "drift_rms": []}
        for b in range(n_blocks):
            block = {}
            for name in ("q", "k"):
                block[name] = {}
                for x in runs[0]["trained"]["blocks"][b][name]:
                    t = [r["trained"]["blocks"][b][name][x] for r in runs]
                    i = [r["init"]["blocks"][b][name][x] for r in runs]
                    block[name][x] = dict(trained=dict(stats.t_interval(t), values=t),
                                          init=dict(stats.t_interval(i), values=i),
                                          change=stats.t_interval(np.subtract(t, i)))
            entry["blocks"].append(block)
            t = [r["trained"]["drift_rms"][b] for r in runs]
            i = [r["init"]["drift_rms"][b] for r in runs]
            entry["drift_rms"].append(dict(trained=dict(stats.t_interval(t), values=t),
                                           init=dict(stats.t_interval(i), values=i),
                                           change=stats.t_interval(np.subtract(t, i))))
        if all("surgery_gain" in r["trained"] for r in runs):
            entry["surgery_gain"] = {L: stats.t_interval([r["trained"]["surgery_gain"][L] for r in runs])
                                     for L in runs[0]["trained"]["surgery_gain"]}
            entry["surgery_gain_by_seed"] = {L: [r["trained"]["surgery_gain"][L] for r in runs]
                                             for L in runs[0]["trained"]["surgery_gain"]}
        out[label] = entry
    return out


def surgery_differences(summary):
    """[(a, b, {length: stats.paired_difference of a's surgery gain - b's})] for every two
    variants with a surgery gain over the same seeds: paired by seed, as the lab's runs are."""
    with_gain = [label for label, e in summary.items() if "surgery_gain_by_seed" in e]
    out = []
    for i, a in enumerate(with_gain):
        for b in with_gain[i + 1:]:
            ga, gb = summary[a]["surgery_gain_by_seed"], summary[b]["surgery_gain_by_seed"]
            if summary[a]["seeds"] == summary[b]["seeds"]:
                out.append((a, b, {L: stats.paired_difference(ga[L], gb[L]) for L in ga if L in gb}))
    return out


def _row(label, block, r):
    """A table row: the trained value, the value at init and the change, each with its interval."""
    cells = " | ".join(stats.interval_text(r[k]) for k in ("trained", "init", "change"))
    return f"| {label} | {block} | {cells} |"


def mechanism_markdown(summary, N):
    """The report's tables: leakage and distortion shares of the queries' positional part per
    block (trained, and the change from init), the positional share of their power, the drift,
    and the surgery's gains."""
    lines = ["# Spectrum damage, measured", "",
             "Each cell: mean (sample sd over seeds) [95% t interval over seeds]; 'change' is trained "
             "minus the same model at init, paired by seed. Queries after the position embedding, "
             f"over windows of N = {N} (`minifope/mechanism_lab.py`).", ""]
    variants = list(summary)
    n_blocks = len(summary[variants[0]]["blocks"])
    for title, key in (("Share of the queries' power that is positional (the same in every window at a "
                        "position; at init the mean query at its own frequency)",
                        "positional_share"),
                       ("Leakage: share of the positional part away from each pair's own frequency "
                        "and its distortion products", "leakage_share"),
                       ("Distortion: share at harmonics and sums/differences of the frequencies",
                        "distortion_share")):
        lines += [f"## {title}", "", "| variant | block | trained | at init | change |", "|---|---|---|---|---|"]
        for label in variants:
            for b in range(n_blocks):
                r = summary[label]["blocks"][b]["q"][key]
                lines.append(_row(label, b, r))
        lines.append("")
    lines += ["## Logit-kernel drift past N (root mean square over distances 0 .. N-1, logit units)", "",
              "| variant | block | trained | at init | change |", "|---|---|---|---|---|"]
    for label in variants:
        for b in range(n_blocks):
            r = summary[label]["drift_rms"][b]
            lines.append(_row(label, b, r))
    lines.append("")
    gains = {label: e["surgery_gain"] for label, e in summary.items() if "surgery_gain" in e}
    if gains:
        lengths = list(next(iter(gains.values())))
        lines += ["## Clip surgery: loss without surgery minus loss with the frequencies of period > N "
                  "zeroed (RoPE's pairs; the series' frequencies of FoPE without its clip; positive: the "
                  "surgery helps)", "",
                  "| variant | " + " | ".join(f"{int(L) // N}N ({L})" for L in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]
        for label, g in gains.items():
            lines.append(f"| {label} | " + " | ".join(stats.interval_text(g[L]) for L in lengths) + " |")
        lines.append("")
        pairs = surgery_differences(summary)
        if pairs:
            lines += ["Paired differences of the gain, a - b (the same seeds; 95% t interval; n.s.: the "
                      "interval contains 0):", "",
                      "| a - b | " + " | ".join(f"{int(L) // N}N ({L})" for L in lengths) + " |",
                      "|---|" + "---|" * len(lengths)]
            for a, b, diffs in pairs:
                cells = [f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" + ("" if d["separated"] else " n.s.")
                         for d in (diffs[L] for L in lengths)]
                lines.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)


def plot_mechanism(summary, path):
    """Leakage share and drift by block, one line per variant, trained (solid) and init (dotted)."""
    from matplotlib.figure import Figure  # no pyplot: nothing global, no backend to choose

    from .lengthgen import legend_outside

    gains = {label: e["surgery_gain"] for label, e in summary.items() if "surgery_gain" in e}
    fig = Figure(figsize=(20 if gains else 15, 4))
    axes = fig.subplots(1, 4 if gains else 3)
    for label, e in summary.items():
        blocks = np.arange(len(e["blocks"]))
        for ax, get in ((axes[0], lambda b: e["blocks"][b]["q"]["positional_share"]),
                        (axes[1], lambda b: e["blocks"][b]["q"]["leakage_share"]),
                        (axes[2], lambda b: e["drift_rms"][b])):
            trained = [get(b)["trained"]["mean"] for b in blocks]
            line, = ax.plot(blocks, trained, marker="o", label=label)
            ax.plot(blocks, [get(b)["init"]["mean"] for b in blocks], ls=":", color=line.get_color())
    for ax, title in zip(axes, ("positional share of the queries' power", "leakage share of the positional part",
                                "logit-kernel drift past N (rms; symlog)")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("block")
        ax.set_xticks(np.arange(max(len(e["blocks"]) for e in summary.values())))
    axes[2].set_yscale("symlog", linthresh=0.01)  # NoPE's drift is 10-100x the others'
    axes[2].set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    legend_outside(axes[-1], handles=handles, labels=labels, title="solid: trained, dotted: init")
    if gains:
        ax = axes[3]
        for label, g in gains.items():
            lengths = [int(L) for L in g]
            ax.errorbar(lengths, [g[L]["mean"] for L in g], yerr=error_bars([g[L] for L in g]),
                        marker="o", capsize=3, label=label)
        ax.axhline(0, color="gray", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("evaluation length")
        ax.set_title("clip surgery: loss gain (> 0: it helps)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def run_lab_mechanism(ec, out, dest=None, windows=256, drift_windows=32, progress=print):
    """Measure every finished run of experiment folder `out` (and its init), write mechanism.json,
    mechanism.md and mechanism.png into dest (default: out); return the summary. Trains nothing."""
    ec.check()
    runs, seeds = finished_runs(ec, Path(out))
    if not seeds:
        raise UserError(f"{out} has no seed whose runs of every variant ({', '.join(ec.variants)}) are "
                        "evaluated yet, under these settings; nothing to measure")
    eval_text = _texts(ec)[1]
    per_run = {}
    for label in ec.variants:
        for seed in seeds:
            progress(f"mechanism: {label} seed {seed}")
            per_run.setdefault(label, {})[seed] = run_mechanism(ec, out, label, seed, eval_text, windows,
                                                                drift_windows)
    summary = summarise_mechanism(per_run)
    dest = Path(dest or out)
    dest.mkdir(parents=True, exist_ok=True)
    N = ec.model["train_len"]
    _write_json(dest / "mechanism.json", dict(train_len=N, windows=windows, drift_windows=drift_windows,
                                               variants=summary))
    (dest / "mechanism.md").write_text(mechanism_markdown(summary, N))
    plot_mechanism(summary, dest / "mechanism.png")
    return summary
