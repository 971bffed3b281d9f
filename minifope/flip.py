"""Where the ordering flips: the lab's comparison at each value of one axis, ranked.

    python -m minifope flip --out docs/lab/flip \
        --point "head dim" 16 docs/lab/flip/default \
        --point "head dim" 32 docs/lab/flip/hd32 :n_head=2

A point of the map is one experiment's report (results.json, written by `experiment
--report-to DIR`): the default comparison (rope, fope as the authors ran it, alibi, nope,
clip-only) trained with one setting changed from the default recipe. Its variants are the
report's labels that end with the point's suffix (":n_head=2"; none: the labels without a
colon), named in the map by what comes before it. A report evaluated on another corpus
(--eval-data) has its loss read from its rows on the training corpus (home_rows), as every
other point's is. For every point:

- the ranking on loss at 4N and at 16N, and on passkey retrieval at the needle distances 2N,
  4N, 8N, ... of the lab's distance grid (each pooled over the prompt lengths that hold it; the
  grid's other distances, the shortest and each window's longest, are left out, so that every
  point is read at the same distances in units of N): the variants from best
  to worst, two neighbours joined by ">" when the paired difference between them (the same
  seeds, windows and prompts) has a 95% interval that excludes zero, by "~" when it does not;
- FoPE against ALiBi (`--fope`, `--alibi`): their paired difference at each of those, and
  the verdict: "FoPE ahead", "ALiBi ahead" or "not separated" ("neither retrieves" where
  both retrieve no prompt at that distance in any seed: nothing to separate);
- FoPE - ALiBi on loss at every length the report holds (N, 2N, ... 16N), and where along
  them the lead changes hands (`crossing`): "FoPE ahead up to 2N, ALiBi from 4N", say.

flip.md gathers the rankings and verdicts, axis by axis; flip.png draws FoPE - ALiBi with its
interval at every point (FoPE is ahead where the loss difference is below zero and the
retrieval difference above it).
flip.json holds every number. A ranking is only as good as its pairs: a "~" says the
comparison did not separate the two at this scale, not that they are equal.
"""

import json
from pathlib import Path

from .checkpoint import atomic_write
from .config import is_finite_number
from .errors import UserError

LOSS_AT = (4, 16)  # the loss lengths ranked, in multiples of N
EMBEDDINGS = ("rope", "fope-authors", "alibi", "nope", "clip-only")  # the comparison of every point


def load_point(folder, suffix="", embeddings=EMBEDDINGS):
    """(summary, {name: label}) of a report folder's results.json, keeping the variants whose
    label ends with suffix (suffix '': the labels without ':') and whose name (the label less
    the suffix) is one of `embeddings`."""
    path = Path(folder) / "results.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        summary = None
    if not _well_formed(summary):
        raise UserError(f"{path} is not an experiment report (results.json, written by experiment "
                        "--report-to), or is damaged") from None
    variants = summary["variants"]
    names = {}
    for label in variants:
        if suffix and label.endswith(suffix):
            names[label[:-len(suffix)]] = label
        elif not suffix and ":" not in label and "[" not in label:
            names[label] = label
    names = {name: label for name, label in names.items() if name in embeddings}
    if len(names) < 2:
        raise UserError(f"{path} has {len(names)} variant(s) ending with {suffix or 'no suffix'!r}; a "
                        "ranking needs two or more")
    return summary, names


def _well_formed(summary):
    """Whether a results.json holds, as the types flip reads them: train_len; per variant its
    mean loss by length and, where it has them, its passkey accuracy by distance; and the
    paired differences between variants it names, each {mean, low, high, separated} (low and
    high None where one seed gives no interval)."""
    def table(t, entry_ok):
        return isinstance(t, dict) and all(isinstance(k, str) and entry_ok(v) for k, v in t.items())

    def interval(d):
        return (isinstance(d, dict) and is_finite_number(d.get("mean")) and isinstance(d.get("separated", False), bool)
                and all(d.get(x) is None or is_finite_number(d[x]) for x in ("low", "high")))

    def mean_of(r):
        return isinstance(r, dict) and is_finite_number(r.get("mean"))

    def variant(v):
        if not (isinstance(v, dict) and table(v.get("loss"), mean_of)):
            return False
        by_d = v.get("passkey", {}).get("by_distance") if isinstance(v.get("passkey", {}), dict) else False
        return by_d is None or (isinstance(by_d, dict) and isinstance(by_d.get("distances"), list)
                                and isinstance(by_d.get("accuracy"), list)
                                and len(by_d["distances"]) == len(by_d["accuracy"])
                                and all(isinstance(d, int) and not isinstance(d, bool) for d in by_d["distances"])
                                and all(map(mean_of, by_d["accuracy"])))

    if not (isinstance(summary, dict) and isinstance(summary.get("train_len"), int) and summary["train_len"] > 0
            and table(summary.get("variants"), variant) and isinstance(summary.get("differences"), list)
            and isinstance(summary.get("eval_text") or {}, dict)):
        return False
    return all(isinstance(d, dict) and d.get("a") in summary["variants"] and d.get("b") in summary["variants"]
               and all(table(d.get(kind, {}), interval) for kind in ("loss", "passkey", "passkey_by_distance"))
               for d in summary["differences"])


def difference(summary, a, b, kind, key):
    """The paired difference a - b ({mean, low, high, separated}) of kind 'loss', 'passkey' or
    'passkey_by_distance' at key, from whichever order the report holds it in; None if absent."""
    for d in summary["differences"]:
        if (d["a"], d["b"]) in ((a, b), (b, a)):
            r = d.get(kind, {}).get(str(key))
            if r is None or r.get("low") is None:
                return None
            if d["a"] == a:
                return dict(r)
            return dict(r, mean=-r["mean"], low=-r["high"], high=-r["low"])
    return None


def home_rows(summary, names):
    """{name: label} of the rows whose loss a point ranks: in a report evaluated on another
    corpus (experiment --eval-data, a shift in data), each variant's row on its training
    corpus's validation text ('rope [shakespeare]'), so that every point's loss is read on
    the text it trained on; else the variants' own rows. (Retrieval does not depend on the
    evaluation text: the passkey prompts are the same with either.)"""
    variants = summary["variants"]
    if not summary.get("eval_text"):
        return dict(names)
    out = {}
    for name, label in names.items():
        home = [row for row in variants if row.startswith(label + " [") and row.endswith("]")]
        if len(home) != 1:
            raise UserError(f"the report evaluated on {summary['eval_text'].get('name')} has no row of "
                            f"{label} on its training corpus ('{label} [CORPUS]') to rank its loss by")
        out[name] = home[0]
    return out


def _metrics(summary, names, loss_names):
    """[(metric name, kind, key, {name: mean}, higher_is_better, {name: label})] of a point:
    loss at 4N and 16N (of loss_names, its home_rows), retrieval at each distance 2N, 4N, 8N,
    ... the reports hold."""
    N = summary["train_len"]
    variants = summary["variants"]
    out = []
    for m in LOSS_AT:
        means = {n: variants[label]["loss"][str(m * N)]["mean"] for n, label in loss_names.items()
                 if str(m * N) in variants[label]["loss"]}
        if len(means) >= 2:
            out.append((f"loss {m}N", "loss", m * N, means, False, loss_names))
    distances = sorted({d for label in names.values()
                        for d in variants[label].get("passkey", {}).get("by_distance", {}).get("distances", [])
                        if d > N and d % N == 0 and (d // N) & (d // N - 1) == 0})
    for d in distances:
        means = {}
        for n, label in names.items():
            by_d = variants[label].get("passkey", {}).get("by_distance")
            if by_d and d in by_d["distances"]:
                means[n] = by_d["accuracy"][by_d["distances"].index(d)]["mean"]
        if len(means) >= 2:
            out.append((f"retrieval d={d}", "passkey_by_distance", d, means, True, names))
    return out


def ranking(summary, names, kind, key, means, higher_is_better):
    """'alibi > fope-authors ~ rope': best first; '>' where the paired difference of the two
    neighbours is separated, '~' where not (or no paired difference exists)."""
    order = sorted(means, key=lambda n: -means[n] if higher_is_better else means[n])
    text = order[0]
    for better, worse in zip(order, order[1:]):
        d = difference(summary, names[better], names[worse], kind, key)
        text += f" {'>' if d is not None and d['separated'] else '~'} {worse}"
    return text


def verdict(d, higher_is_better, fope="FoPE", alibi="ALiBi"):
    if d is None:
        return "no paired difference"
    if not d["separated"]:
        return "not separated"
    ahead = (d["mean"] > 0) == higher_is_better
    return f"{fope} ahead" if ahead else f"{alibi} ahead"


def loss_by_length(summary, rows, fope, alibi):
    """[{at, key, fope_minus_alibi, verdict}] of fope - alibi on loss at every length both rows
    hold, shortest first; `at` is the length in multiples of N."""
    N, variants = summary["train_len"], summary["variants"]
    keys = set(variants[rows[fope]]["loss"]) & set(variants[rows[alibi]]["loss"])
    out = []
    for key in sorted(int(k) for k in keys):
        d = difference(summary, rows[fope], rows[alibi], "loss", key)
        out.append(dict(at=key / N, key=key, fope_minus_alibi=d, verdict=verdict(d, False)))
    return out


def crossing(by_length, fope="FoPE", alibi="ALiBi"):
    """Where along the lengths the lead on loss lies: 'FoPE ahead up to 2N, ALiBi from 4N' when
    every length where FoPE is ahead comes before every one where ALiBi is (or the reverse);
    else the lengths where each is ahead."""
    f = [r["at"] for r in by_length if r["verdict"] == "FoPE ahead"]
    a = [r["at"] for r in by_length if r["verdict"] == "ALiBi ahead"]

    def at(xs):
        return ", ".join(f"{x:g}N" for x in xs)

    if not f and not a:
        return "not separated at any length"
    if not f:
        return f"{alibi} ahead at {at(a)}; {fope} at no length"
    if not a:
        return f"{fope} ahead at {at(f)}; {alibi} at no length"
    if max(f) < min(a):
        return f"{fope} ahead up to {at([max(f)])}, {alibi} from {at([min(a)])}"
    if max(a) < min(f):
        return f"{alibi} ahead up to {at([max(a)])}, {fope} from {at([min(f)])}"
    return f"{fope} ahead at {at(f)}; {alibi} at {at(a)}"


def flip_map(points, fope="fope-authors", alibi="alibi", embeddings=EMBEDDINGS):
    """points: [(axis, value, folder, suffix)] -> {"points": [...]}: per point its rankings of
    `embeddings` and the paired difference fope - alibi with its verdict at every metric."""
    for name, role in ((fope, "--fope"), (alibi, "--alibi")):
        if name not in embeddings:
            raise UserError(f"{role} {name}: not one of the embeddings ranked ({', '.join(embeddings)})")
    out = []
    for axis, value, folder, suffix in points:
        summary, names = load_point(folder, suffix, embeddings)
        entry = dict(axis=axis, value=value, folder=str(folder), suffix=suffix, variants=list(names),
                     train_len=summary["train_len"],
                     unit=summary.get("unit", "character"), seeds=summary.get("seeds"),
                     steps=summary.get("steps"), metrics=[])
        loss_rows = home_rows(summary, names)
        for metric, kind, key, means, higher, rows in _metrics(summary, names, loss_rows):
            row = dict(metric=metric, key=key, ranking=ranking(summary, rows, kind, key, means, higher),
                       means=means)
            if fope in rows and alibi in rows:
                d = difference(summary, rows[fope], rows[alibi], kind, key)
                row.update(fope_minus_alibi=d, verdict=verdict(d, higher))
                if kind == "passkey_by_distance" and means.get(fope) == means.get(alibi) == 0:
                    row["verdict"] = "neither retrieves"
            entry["metrics"].append(row)
        if fope in loss_rows and alibi in loss_rows:
            entry["loss_by_length"] = loss_by_length(summary, loss_rows, fope, alibi)
            entry["crossing"] = crossing(entry["loss_by_length"], fope, alibi)
        out.append(entry)
    return {"fope": fope, "alibi": alibi, "points": out}


def _diff_text(d, digits):
    if d is None:
        return "-"
    return f"{d['mean']:+.{digits}f} [{d['low']:+.{digits}f}, {d['high']:+.{digits}f}]"


def markdown(result):
    fope, alibi = result["fope"], result["alibi"]
    out = ["Rankings: best first; `>` the paired difference of two neighbours excludes zero (95% "
           "interval), `~` it does not (not separated at this scale). Loss: lower is better; retrieval "
           "at distance d: the passkey accuracy of needles d units before the end of the prompt, "
           "pooled over the prompt lengths that hold d.", ""]
    axes = list(dict.fromkeys(p["axis"] for p in result["points"]))
    for axis in axes:
        points = [p for p in result["points"] if p["axis"] == axis]
        out += [f"### {axis}", "", f"| {axis} | metric | ranking | {fope} - {alibi} | verdict |",
                "|---|---|---|---|---|"]
        for p in points:
            for m in p["metrics"]:
                digits = 3 if m["metric"].startswith("loss") else 2
                out.append(f"| {p['value']} (N = {p['train_len']} {p['unit']}s, {p['seeds']} seeds) | "
                           f"{m['metric']} | {m['ranking']} | {_diff_text(m.get('fope_minus_alibi'), digits)} | "
                           f"{m.get('verdict', '-')} |")
        ahead = [(p["value"], m["metric"]) for p in points for m in p["metrics"]
                 if m.get("verdict") == "FoPE ahead"]
        out += ["", (f"{fope} ahead of {alibi} at: " + "; ".join(f"{v}, {m}" for v, m in ahead) + ".") if ahead
                else f"{fope} is ahead of {alibi} at none of these metrics on this axis.", ""]
        crossed = [p for p in points if p.get("loss_by_length")]
        if crossed:
            lengths = sorted({r["at"] for p in crossed for r in p["loss_by_length"]})
            out += [f"{fope} - {alibi} on loss at every length evaluated (paired, 95% interval; below zero: "
                    f"{fope} ahead), and where the lead lies:", "",
                    f"| {axis} | " + " | ".join(f"{x:g}N" for x in lengths) + " | crossing |",
                    "|---|" + "---|" * (len(lengths) + 1)]
            for p in crossed:
                cells = {r["at"]: _diff_text(r["fope_minus_alibi"], 3) for r in p["loss_by_length"]}
                out.append(f"| {p['value']} (nats/{p['unit']}) | " + " | ".join(cells.get(x, "-") for x in lengths)
                           + f" | {p['crossing']} |")
            out.append("")
    return "\n".join(out) + "\n"


def plot(result, path):
    """flip.png: fope - alibi with its interval at every point, one panel per metric kind."""
    from matplotlib.figure import Figure

    points = result["points"]
    panels = ["loss 4N", "loss 16N", "retrieval"]
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    axes = fig.subplots(1, len(panels))
    labels = [f"{p['axis']}\n{p['value']}" for p in points]
    # retrieval: one colour per distance in multiples of N, the same at every point
    def distance(p, m):
        return f"d = {m['key'] / p['train_len']:.3g}N"

    colours = {}
    for p in points:
        for m in p["metrics"]:
            if m["metric"].startswith("retrieval"):
                colours.setdefault(distance(p, m), f"C{len(colours) % 10}")
    for ax, panel in zip(axes, panels):
        shown = set()
        for x, p in enumerate(points):
            rows = [m for m in p["metrics"] if m["metric"].startswith(panel) and m.get("fope_minus_alibi")]
            for k, m in enumerate(rows):
                d = m["fope_minus_alibi"]
                offset = 0.12 * (k - (len(rows) - 1) / 2)
                name = distance(p, m) if panel == "retrieval" else None
                ax.errorbar(x + offset, d["mean"], yerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]],
                            marker="o", capsize=3, color=colours.get(name, "C0"),
                            label=name if name and name not in shown else None)
                shown.add(name)
        ax.axhline(0, color="gray", linewidth=1)
        ax.set_xticks(range(len(points)), labels, fontsize=8)
        ax.set_title(f"{result['fope']} - {result['alibi']}: {panel}")
        ax.set_ylabel("paired difference (95% interval)")
        ax.grid(alpha=0.3)
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7)
    fig.suptitle("below zero for loss, above zero for retrieval: FoPE ahead")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")


def write(result, out):
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "flip.json", lambda f: f.write(json.dumps(result, indent=1).encode()))
    text = markdown(result)
    atomic_write(out / "flip.md", lambda f: f.write(text.encode()))
    plot(result, out / "flip.png")
