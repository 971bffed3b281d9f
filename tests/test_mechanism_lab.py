"""The mechanism measures over a tiny lab's runs: files, pairing with init, surgery, reuse, refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest

from minifope.errors import UserError
from minifope.experiment import run_experiment
from minifope.mechanism_lab import run_lab_mechanism, summarise_mechanism, surgery_differences

from test_experiment import ROOT, constant_lr


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    ec = constant_lr(variants=["rope", "alibi", "series-only"], seeds=2)
    run_experiment(ec, out, progress=False)
    return ec, out


def test_every_finished_run_is_measured_trained_and_at_init(lab, tmp_path):
    ec, out = lab
    summary = run_lab_mechanism(ec, out, tmp_path, windows=8, drift_windows=4, progress=lambda m: None)
    assert set(summary) == {"rope", "alibi", "series-only"}
    for name in ("mechanism.json", "mechanism.md", "mechanism.png"):
        assert (tmp_path / name).stat().st_size > 0
    for label in ("rope", "alibi"):
        runs = [json.loads((out / "runs" / label / f"seed{s}" / "mechanism.json").read_text()) for s in (0, 1)]
        # change = trained - init, paired by seed
        t = [r["trained"]["blocks"][0]["q"]["leakage_share"] for r in runs]
        i = [r["init"]["blocks"][0]["q"]["leakage_share"] for r in runs]
        change = summary[label]["blocks"][0]["q"]["leakage_share"]["change"]
        assert change["mean"] == pytest.approx(np.mean(np.subtract(t, i)))
        # the per-seed values are kept, in seed order, for comparisons paired by seed
        assert summary[label]["blocks"][0]["q"]["leakage_share"]["trained"]["values"] == t
        assert summary[label]["drift_rms"][0]["trained"]["values"] == [r["trained"]["drift_rms"][0] for r in runs]
        # own + distortion + leakage = the positional energy
        e = runs[0]["trained"]["blocks"][0]["k"]
        assert e["own"] + e["distortion"] + e["leakage"] == pytest.approx(e["positional"])
    # only RoPE and FoPE without its clip have frequencies to cut; the gain is the lab's loss
    # minus the loss after surgery
    assert "surgery_gain" in summary["rope"] and "surgery_gain" in summary["series-only"]
    assert "surgery_gain" not in summary["alibi"]
    for label in ("rope", "series-only"):
        run = json.loads((out / "runs" / label / "seed0/mechanism.json").read_text())
        before = json.loads((out / "runs" / label / "seed0/eval.json").read_text())["result"]["loss"]
        for L, gain in run["trained"]["surgery_gain"].items():
            assert gain == pytest.approx(before[L]["loss"] - run["trained"]["surgery_loss"][L])
            assert gain != 0  # the surgery changed the model
    # the two surgeries compared seed by seed
    gains = {label: [json.loads((out / "runs" / label / f"seed{s}/mechanism.json").read_text())["trained"]
                     ["surgery_gain"] for s in (0, 1)] for label in ("rope", "series-only")}
    (a, b, diffs), = surgery_differences(summary)
    assert (a, b) == ("rope", "series-only")
    for L, d in diffs.items():
        assert d["mean"] == pytest.approx(np.mean([gains["rope"][s][L] - gains["series-only"][s][L] for s in (0, 1)]))
    assert "| rope - series-only |" in (tmp_path / "mechanism.md").read_text()


def test_a_run_measured_once_is_reused(lab, tmp_path):
    ec, out = lab
    run_lab_mechanism(ec, out, tmp_path, windows=8, drift_windows=4, progress=lambda m: None)
    path = out / "runs/alibi/seed1/mechanism.json"
    stamp = path.stat().st_mtime_ns
    run_lab_mechanism(ec, out, tmp_path, windows=8, drift_windows=4, progress=lambda m: None)
    assert path.stat().st_mtime_ns == stamp
    run_lab_mechanism(ec, out, tmp_path, windows=6, drift_windows=4, progress=lambda m: None)
    assert path.stat().st_mtime_ns != stamp  # other settings: measured again


def test_a_damaged_or_hand_made_measurement_is_measured_again(lab, tmp_path):
    from minifope.mechanism_lab import _well_formed

    ec, out = lab
    run_lab_mechanism(ec, out, tmp_path, windows=8, drift_windows=4, progress=lambda m: None)
    path = out / "runs/rope/seed0/mechanism.json"
    good = json.loads(path.read_text())
    assert _well_formed(good, 1, [128, 256], surgery=True)
    assert _well_formed(json.loads((out / "runs/alibi/seed0/mechanism.json").read_text()), 1, [128, 256], False)
    changes = [lambda r: r["trained"]["blocks"].append(r["trained"]["blocks"][0]),
               lambda r: r["trained"]["blocks"][0]["q"].pop("leakage"),
               lambda r: r["trained"]["blocks"][0]["k"].update(power="1"),
               lambda r: r["init"]["blocks"][0]["k"].update(own=float("inf")),
               lambda r: r["trained"]["drift_rms"].__setitem__(0, 10**400),
               lambda r: r["trained"]["drift_rms"].clear(),
               lambda r: r["trained"]["surgery_gain"].pop("256"),
               lambda r: r["trained"]["surgery_loss"].update({"128": None}),
               lambda r: r.pop("init")]
    for change in changes:
        bad = json.loads(json.dumps(good))
        change(bad)
        assert not _well_formed(bad, 1, [128, 256], surgery=True)
    # a share is NaN where there is no positional energy to share: still well formed
    nan = json.loads(json.dumps(good))
    nan["init"]["blocks"][0]["q"]["own_share"] = float("nan")
    assert _well_formed(nan, 1, [128, 256], surgery=True)
    bad = json.loads(json.dumps(good))
    changes[2](bad)
    path.write_text(json.dumps(bad))
    summary = run_lab_mechanism(ec, out, tmp_path, windows=8, drift_windows=4, progress=lambda m: None)
    assert json.loads(path.read_text()) == good  # measured again, the same numbers
    assert summary["rope"]["blocks"][0]["k"]["power"]["trained"]["mean"] > 0


@pytest.mark.parametrize("pe", ["rope", "alibi"])
def test_an_untrained_model_reads_no_leakage_or_distortion_in_any_block(pe):
    from minifope.config import GPTConfig
    from minifope.data import CharTokenizer, load_corpus
    from minifope.mechanism_lab import measure
    from minifope.model import GPT

    train, val = load_corpus("shakespeare")
    tokens = CharTokenizer.from_text(train + val).encode(val)
    model = GPT(GPTConfig(pe=pe, vocab_size=int(tokens.max()) + 1, d_model=32, n_head=2, n_layer=2,
                          train_len=64))
    r = measure(model, tokens, 64, [64], 4096, windows=256, drift_windows=8, surgery=False)
    for block in r["blocks"]:
        q = block["q"]
        # the part the same in every window is the mean query (the text's mean character),
        # carried at each pair's own frequency (0 for ALiBi); nothing leaks or distorts yet
        assert q["own_share"] == pytest.approx(1.0, abs=0.01)
        assert abs(q["leakage_share"]) < 0.01 and abs(q["distortion_share"]) < 0.01
    assert max(r["drift_rms"]) < 0.01  # init logits are tiny and the same function of distance


def test_summaries_of_one_seed_have_no_interval():
    run = {"trained": {"blocks": [{"q": {"leakage_share": 0.2}, "k": {"leakage_share": 0.1}}], "drift_rms": [0.5]},
           "init": {"blocks": [{"q": {"leakage_share": 0.1}, "k": {"leakage_share": 0.1}}], "drift_rms": [0.0]}}
    s = summarise_mechanism({"rope": {0: run}})
    change = s["rope"]["blocks"][0]["q"]["leakage_share"]["change"]
    assert change["mean"] == pytest.approx(0.1) and change.get("low") is None


def test_the_cli_measures_a_lab_and_refuses_a_folder_with_nothing_finished(lab, tmp_path):
    ec, out = lab
    flags = ["--pe", "rope", "alibi", "--seeds", "2", "--d-model", "16", "--n-layer", "1", "--n-head", "2",
             "--train-len", "128", "--steps", "4", "--batch-size", "4", "--lengths", "1", "2",
             "--passkey-lengths", "1", "2", "--prompts", "2", "--eval-chars", "512"]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "minifope", "experiment", "--out", str(empty), *flags,
                             "--mechanism-to", str(tmp_path / "m")], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "nothing to measure" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
    with pytest.raises(UserError, match="nothing to measure"):
        run_lab_mechanism(ec, empty, tmp_path / "m", progress=lambda m: None)
