"""The experiment runner on tiny configs: outputs, reuse, resume after a crash, refusals."""

import dataclasses
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from minifope import experiment as E
from minifope.checkpoint import load_checkpoint, save_checkpoint
from minifope.config import GPTConfig
from minifope.data import CharTokenizer
from minifope.errors import UserError
from minifope.experiment import ExperimentConfig, markdown_table, parse_variant, run_experiment
from minifope.loop import init_model_from
from minifope.model import GPT

ROOT = Path(__file__).resolve().parents[1]


def tiny(**changes):
    base = dict(variants=["rope", "alibi"], seeds=2,
                model=dict(d_model=16, n_layer=1, n_head=2, train_len=128),
                train=dict(steps=4, batch_size=4, passkey_frac=0.5, eval_interval=2, eval_batches=1),
                multipliers=[1, 2], eval_chars=512, passkey_multipliers=[1, 2], prompts=2)
    return ExperimentConfig(**{**base, **changes})


def constant_lr(**changes):
    """tiny() with a constant learning rate after warmup, as the lab trains."""
    ec = tiny(**changes)
    ec.train = dict(ec.train, lr=3e-3, min_lr=3e-3, warmup=1)
    return ec


def test_parse_variant_reads_aliases_and_fields():
    assert parse_variant("clip-only") == {"pe": "rope", "rope_clip": True}
    assert parse_variant("series-only") == {"pe": "fope", "fope_clip": False}
    assert parse_variant("fope-authors") == {"pe": "fope", "fope_zero_freq": "authors"}
    assert parse_variant("fope-identity") == {"pe": "fope", "fope_zero_freq": "identity"}
    assert parse_variant("fope:fope_sigma=0.1,fope_dim=64") == {"pe": "fope", "fope_sigma": 0.1,
                                                                 "fope_dim": 64}
    with pytest.raises(UserError, match="unknown variant"):
        parse_variant("sinusoid")
    with pytest.raises(UserError, match="GPTConfig field"):
        parse_variant("fope:colour=red")


def test_experiment_writes_results_table_and_figures(tmp_path):
    summary = run_experiment(tiny(extend=["yarn"]), tmp_path, progress=False)
    assert set(summary["variants"]) == {"rope", "rope+yarn", "alibi"}
    rope = summary["variants"]["rope"]
    assert rope["seeds"] == [0, 1] and set(rope["loss"]) == {"128", "256"}
    assert len(rope["loss"]["256"]["values"]) == 2 and rope["loss"]["256"]["sd"] is not None
    pk = rope["passkey"]
    assert pk["lengths"] == [128, 256] and pk["prompts"] == 2
    assert pk["distances"] == [[81, 86], [81, 128, 214]]
    assert len(pk["cells"][1]) == 3 and 0 <= pk["by_length"][1]["low"] <= pk["by_length"][1]["high"] <= 1
    assert "passkey" not in summary["variants"]["rope+yarn"]
    assert {(d["a"], d["b"]) for d in summary["differences"]} == {
        ("rope", "rope+yarn"), ("rope", "alibi"), ("rope+yarn", "alibi")}
    for name in ("results.json", "results.md", "figure.png", "passkey_by_distance.png",
                 "retrieval_curves.png", "loss_by_position.png"):
        assert (tmp_path / name).stat().st_size > 0
    table = (tmp_path / "results.md").read_text()
    assert "| rope |" in table and "2N (256)" in table and "Paired differences" in table
    assert "| rope - alibi |" in table and "repeated digit" in table
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(summary))


def test_every_run_trains_the_same_fixed_budget_and_logs_its_retrieval_curve(tmp_path):
    summary = run_experiment(tiny(), tmp_path, progress=False)
    for label in ("rope", "alibi"):
        assert summary["variants"][label]["steps"] == [4, 4]
        for seed in (0, 1):
            run = tmp_path / f"runs/{label}/seed{seed}"
            records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
            assert max(r["step"] for r in records) == 4  # no run trains past the budget
            # the probe at N every eval_interval (2) steps: the retrieval curve
            assert [r["step"] for r in records if "probe" in r] == [2, 4]
            assert summary["variants"][label]["curves"][str(seed)] == [
                [r["step"], r["probe"]] for r in records if "probe" in r]
            # a 4-step model retrieves nothing: the measure reads zero where there is nothing
            assert all(r["probe"] == 0.0 for r in records if "probe" in r)


def test_a_longer_budget_trains_every_run_on_to_the_same_weights_as_a_longer_run(tmp_path):
    import numpy as np

    run_experiment(constant_lr(seeds=1, variants=["rope"]), tmp_path / "extended", progress=False)
    longer = constant_lr(seeds=1, variants=["rope"])
    longer.train = dict(longer.train, steps=8)
    summary = run_experiment(longer, tmp_path / "extended", progress=False)
    assert summary["variants"]["rope"]["steps"] == [8]
    assert json.loads((tmp_path / "extended/runs/rope/seed0/eval.json").read_text())["step"] == 8
    run_experiment(longer, tmp_path / "straight", progress=False)
    a = np.load(tmp_path / "extended/runs/rope/seed0/ckpt.npz")
    b = np.load(tmp_path / "straight/runs/rope/seed0/ckpt.npz")
    params = [k for k in a.files if k.startswith("param")]
    assert params and all(np.array_equal(a[k], b[k]) for k in params)


def test_a_budget_below_what_a_run_trained_is_refused(tmp_path):
    longer = constant_lr(seeds=1, variants=["rope"])
    longer.train = dict(longer.train, steps=6)
    run_experiment(longer, tmp_path, progress=False)
    with pytest.raises(UserError, match="trained 6 steps, more than this experiment's budget of 4"):
        run_experiment(constant_lr(seeds=1, variants=["rope"]), tmp_path, progress=False)


def test_a_cosine_learning_rate_cannot_be_given_a_longer_budget(tmp_path):
    run_experiment(tiny(seeds=1, variants=["rope"]), tmp_path, progress=False)  # 3e-3 decaying to 3e-4
    longer = tiny(seeds=1, variants=["rope"])
    longer.train = dict(longer.train, steps=8)
    with pytest.raises(UserError, match="constant learning rate"):
        run_experiment(longer, tmp_path, progress=False)


def test_a_second_run_reuses_every_trained_model_and_evaluation(tmp_path, monkeypatch):
    first = run_experiment(tiny(), tmp_path, progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing should be recomputed")

    monkeypatch.setattr(E, "train", forbidden)
    monkeypatch.setattr(E, "loss_by_length", forbidden)
    monkeypatch.setattr(E, "passkey_by_distance", forbidden)
    assert run_experiment(tiny(), tmp_path, progress=False) == first


def test_a_crashed_experiment_resumes_from_what_it_finished(tmp_path, monkeypatch):
    real_evaluate = E._evaluate_run
    calls = []

    def crash_on_second_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(E, "_evaluate_run", crash_on_second_run)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(tiny(), tmp_path, progress=False)
    # seed by seed: rope seed0, then alibi seed0, which crashed in its evaluation
    assert (tmp_path / "runs/rope/seed0/eval.json").exists()
    assert (tmp_path / "runs/alibi/seed0/ckpt.npz").exists()
    assert not (tmp_path / "runs/alibi/seed0/eval.json").exists()

    trained = []
    real_train = E.train
    monkeypatch.setattr(E, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    monkeypatch.setattr(E, "_evaluate_run", real_evaluate)
    summary = run_experiment(tiny(), tmp_path, progress=False)
    assert len(trained) == 2  # only the two seed-1 runs were still to train
    assert set(summary["variants"]) == {"rope", "alibi"}


def test_other_training_settings_in_the_same_folder_are_refused(tmp_path):
    run_experiment(tiny(seeds=1, variants=["rope"]), tmp_path, progress=False)
    changed = tiny(seeds=1, variants=["rope"])
    changed.train = dict(changed.train, batch_size=8)
    with pytest.raises(UserError, match="other settings"):
        run_experiment(changed, tmp_path, progress=False)


def test_continued_training_adds_yarn_and_fope_runs_from_the_same_checkpoint(tmp_path):
    ec = tiny(seeds=1, variants=["rope", "fope-authors", "alibi"], continue_factor=2, continue_steps=2)
    summary = run_experiment(ec, tmp_path, progress=False)
    continued = {"rope+yarn@2N", "rope-to-fope@2N", "fope-authors@2N"}
    assert set(summary["variants"]) == {"rope", "fope-authors", "alibi"} | continued
    for name, source in (("rope+yarn@2N", "rope"), ("rope-to-fope@2N", "rope"), ("fope-authors@2N", "fope-authors")):
        model, _, state, _ = load_checkpoint(tmp_path / "runs" / name / "seed0")
        assert state["init_from"].endswith(f"runs/{source}/seed0") and state["step"] == 2
        assert model.config.train_len == 256
        # evaluated at the new length: loss at 256 x (1, 2), passkey at 256 x (1, 2)
        assert list(summary["variants"][name]["loss"]) == ["256", "512"]
        assert summary["variants"][name]["passkey"]["lengths"] == [256, 512]
    yarn = load_checkpoint(tmp_path / "runs/rope+yarn@2N/seed0")[0].config
    # YaRN as the FoPE authors' baseline: a fixed scale of 16, the ramp's original length N, no temperature
    assert (yarn.rope_scaling, yarn.rope_scale, yarn.rope_original_len, yarn.rope_yarn_temperature) == \
        ("yarn", 16.0, 128, False)
    fope = load_checkpoint(tmp_path / "runs/rope-to-fope@2N/seed0")[0].config
    assert (fope.pe, fope.fope_zero_freq) == ("fope", "authors")
    # --report-to's path finds the continued runs too
    runs, seeds = E.finished_runs(ec, tmp_path)
    assert seeds == [0] and continued <= set(runs)
    # and a report keeps their records beside the runs they continue
    E.report_finished(ec, tmp_path, tmp_path / "report")
    for name in continued | {"rope", "fope-authors", "alibi"}:
        assert (tmp_path / "report/runs" / E._slug(name) / "seed0/eval.json").exists()
    # the tables put a continued run's passkey cells under its own lengths (256, 512), not N's
    table = E.markdown_table(summary)
    by_length = table[table.index("**Passkey accuracy by prompt length"):].split("\n")
    assert by_length[2] == "| variant | 1N (128) | 2N (256) | 4N (512) |"
    yarn_row = next(r for r in by_length if r.startswith("| rope+yarn@2N |")).split(" | ")
    rope_row = next(r for r in by_length if r.startswith("| rope |")).split(" | ")
    assert yarn_row[1] == "" and yarn_row[2] and yarn_row[3].strip(" |")
    assert rope_row[1] and rope_row[2] and rope_row[3].strip(" |") == ""
    at_512 = table[table.index("| 4N (512) \\ distance"):].split("\n\n")[0]
    assert "| rope+yarn@2N |" in at_512 and "| rope |" not in at_512


def test_both_continuations_of_a_rope_run_start_from_the_same_weights(tmp_path):
    ec = tiny(seeds=1, variants=["rope"], continue_factor=2, continue_steps=2)
    run_experiment(dataclasses.replace(ec, continue_factor=0), tmp_path / "a", progress=False)
    source = load_checkpoint(tmp_path / "a/runs/rope/seed0")[0]
    configs = E.continuations("rope", source.config, ec, 128)
    starts = [init_model_from(tmp_path / "a/runs/rope/seed0", GPTConfig(**fields))[0] for fields in configs.values()]
    for name, p in source.params.items():  # every parameter of the RoPE model, in both
        for model in starts:
            assert np.array_equal(model.params[name], p), name
    assert set(starts[1].buffers) - set(source.buffers)  # FoPE's own coefficients, fresh


def test_a_fope_model_continued_longer_keeps_its_coefficients_where_they_overlap(tmp_path):
    # head_dim 16, theta 1e4: 3 frequencies above 2 pi / 128, 4 above 2 pi / 256
    config = GPTConfig(pe="fope", d_model=32, n_head=2, n_layer=1, train_len=128, vocab_size=8)
    model = GPT(config)
    model.buffers["blocks.0.fope.ccos"][...] += 5.0  # marks the values it was trained with
    save_checkpoint(tmp_path / "ckpt.npz", model, CharTokenizer("abcdefgh"), {"step": 1})
    longer, _ = init_model_from(tmp_path, dataclasses.replace(config, train_len=256))
    before, after = model.buffers["blocks.0.fope.ccos"], longer.buffers["blocks.0.fope.ccos"]
    assert before.shape == (2, 3, 3) and after.shape == (2, 4, 4)
    assert np.array_equal(after[:, :3, :3], before)
    assert np.abs(after[:, 3, :]).max() < 5 and np.abs(after[:, :, 3]).max() < 5  # fresh there


def test_the_summary_gives_mean_sample_sd_and_t_interval_over_seeds():
    # three seeds with losses 1.5, 1.6, 1.7: mean 1.6, sd 0.1 (ddof = 1), 95% interval
    # 1.6 -+ t(0.975, 2) * 0.1 / sqrt(3) = 1.6 -+ 4.302653 * 0.057735 = [1.351586, 1.848414]
    def run(loss):
        return {"loss": {"128": {"loss": loss, "n_windows": 4, "bucket_edges": [0, 128],
                                 "bucket_loss": [loss]}}, "steps": 100}

    runs = {"rope": {s: run(x) for s, x in enumerate([1.5, 1.6, 1.7])},
            "alibi": {s: run(x) for s, x in enumerate([1.45, 1.5, 1.62])}}
    summary = E.summarise(runs, tiny(seeds=3), 128)
    r = summary["variants"]["rope"]["loss"]["128"]
    assert r["mean"] == pytest.approx(1.6) and r["sd"] == pytest.approx(0.1)
    assert (r["low"], r["high"]) == (pytest.approx(1.351586, abs=1e-6), pytest.approx(1.848414, abs=1e-6))
    table = markdown_table(summary)
    assert "| rope | 1.600 (0.100) [1.352, 1.848] |" in table
    # paired: rope - alibi = 0.05, 0.10, 0.08 -> mean 0.076667, sd 0.025166,
    # 0.076667 -+ 4.302653 * 0.025166 / sqrt(3) = [0.014151, 0.139183]: separated
    d = summary["differences"][0]["loss"]["128"]
    assert d["mean"] == pytest.approx(0.076667, abs=1e-6) and d["sd"] == pytest.approx(0.025166, abs=1e-6)
    assert (d["low"], d["high"]) == (pytest.approx(0.014151, abs=1e-6), pytest.approx(0.139183, abs=1e-6))
    assert d["separated"] and "| rope - alibi | +0.077 [+0.014, +0.139] |" in table
    # one more seed of alibi so close that the interval contains zero: "n.s."
    runs["alibi"][2] = run(1.75)
    d = E.summarise(runs, tiny(seeds=3), 128)["differences"][0]["loss"]["128"]
    assert not d["separated"] and d["low"] < 0 < d["high"]


def test_the_rise_past_n_is_the_climb_from_n_seed_by_seed_and_zero_for_a_flat_loss():
    def run(at_n, at_2n):
        return {"loss": {str(L): {"loss": x, "n_windows": 4, "bucket_edges": [0, L], "bucket_loss": [x]}
                         for L, x in ((128, at_n), (256, at_2n))}, "steps": 100}

    # rope climbs 0.9, 1.0, 1.2 (mean 1.033333, sd 0.152753); flat climbs 0 in every seed
    runs = {"rope": {s: run(n, n2) for s, (n, n2) in enumerate([(1.5, 2.4), (1.6, 2.6), (1.7, 2.9)])},
            "flat": {s: run(x, x) for s, x in enumerate([1.4, 1.9, 1.55])}}
    summary = E.summarise(runs, tiny(seeds=3), 128)
    rise = summary["variants"]["rope"]["rise"]
    assert list(rise) == ["256"]  # past N only
    assert rise["256"]["mean"] == pytest.approx(1.033333, abs=1e-6)
    assert rise["256"]["sd"] == pytest.approx(0.152753, abs=1e-6)
    flat = summary["variants"]["flat"]["rise"]["256"]
    assert flat["mean"] == 0 and flat["sd"] == 0  # nothing to measure reads zero
    # paired: rope - flat = the rope's climbs themselves, whatever flat's level in each seed
    d = summary["differences"][0]
    assert (d["a"], d["b"]) == ("rope", "flat")
    assert d["rise"]["256"]["mean"] == pytest.approx(1.033333, abs=1e-6) and d["rise"]["256"]["separated"]
    # 1.033333 -+ 4.302653 * 0.152753 / sqrt(3) = [0.653878, 1.412789]
    assert d["rise"]["256"]["low"] == pytest.approx(0.653878, abs=1e-5)
    table = markdown_table(summary)
    assert "**Rise past N**" in table and "| rope | 1.033 (0.153) [0.654, 1.413] |" in table
    assert "| rope - flat | +1.033 [+0.654, +1.413] |" in table
    # a run not evaluated at N (a continuation's lengths start at its own N') has no rise
    late = {s: {"loss": {"256": run(1, 2)["loss"]["256"]}, "steps": 100} for s in range(3)}
    summary = E.summarise({"rope": runs["rope"], "late": late}, tiny(seeds=3), 128)
    assert summary["variants"]["late"]["rise"] == {} and summary["differences"][0]["rise"] == {}


def test_experiment_cli_refuses_an_unknown_variant_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "minifope", "experiment", "--out", str(tmp_path),
                             "--variants", "fope:colour=red", "--quiet"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "colour=red" in result.stderr


def test_runs_in_parallel_processes_give_the_same_results(tmp_path):
    one = run_experiment(tiny(seeds=1), tmp_path / "one", progress=False, jobs=1)
    two = run_experiment(tiny(seeds=1), tmp_path / "two", progress=False, jobs=2)
    for label in ("rope", "alibi"):
        for L in ("128", "256"):
            assert two["variants"][label]["loss"][L]["mean"] == pytest.approx(
                one["variants"][label]["loss"][L]["mean"], abs=1e-4)
    assert (tmp_path / "two/runs/alibi/seed0/eval.json").exists()


def test_the_cores_go_to_the_runs_still_going(monkeypatch):
    # 3 runs on 2 cores, 2 jobs: one thread each while both processes have a run, then the
    # last run gets both cores
    import multiprocessing

    from minifope import experiment, parallel

    unfinished = multiprocessing.Value("i", 3)
    monkeypatch.setattr(experiment, "_worker", dict(unfinished=unfinished, cores=2, jobs=2))
    seen = []
    with parallel.threads(1):
        for left in (3, 2, 1):
            unfinished.value = left
            experiment._fit_threads()
            seen.append(parallel.get_threads())
    assert seen == [1, 1, 2]


def test_the_commands_choose_one_job_per_core_at_most_one_per_run(tmp_path, monkeypatch):
    from minifope import experiment, parallel

    chosen = []
    monkeypatch.setattr(experiment, "_run_in_processes",
                        lambda ec, out, todo, jobs, cores, board: chosen.append((jobs, cores)) or [
                            {label: {}} for label, _ in todo])
    monkeypatch.setattr(experiment, "run_one", lambda ec, out, label, seed, report: chosen.append(
        ("in this process", label)) or {label: {}})
    monkeypatch.setattr(experiment, "summarise", lambda *a: {})
    monkeypatch.setattr(experiment, "write_report", lambda *a: None)
    for cores, runs in ((2, 3), (4, 2), (1, 2)):
        with parallel.threads(cores):
            run_experiment(tiny(seeds=1, variants=["rope", "alibi", "nope"][:runs]),
                           tmp_path / f"{cores}-{runs}", progress=False, jobs=None)
    assert chosen == [(2, 2), (2, 4), ("in this process", "rope"), ("in this process", "alibi")]


def test_rotating_variants_report_their_spectral_leakage(tmp_path):
    summary = run_experiment(tiny(seeds=1, variants=["rope", "fope", "alibi"]), tmp_path, progress=False)
    for label in ("rope", "fope"):
        leak = summary["variants"][label]["leakage"]
        assert len(leak) == 1 and 0.0 <= leak[0]["q"]["mean"] <= 1.0 and leak[0]["q"]["n"] == 1
    assert "leakage" not in summary["variants"]["alibi"]
    assert "Spectral leakage" in (tmp_path / "results.md").read_text()


def test_the_demo_shows_every_runs_step_count_moving(tmp_path):
    """The runs train in worker processes; the board shows each one's step count as it goes."""
    import re

    result = subprocess.run(
        [sys.executable, "-m", "minifope", "demo", "--out", str(tmp_path / "demo"), "--d-model", "16",
         "--n-layer", "1", "--n-head", "2", "--train-len", "128", "--steps", "300", "--batch-size", "4",
         "--lengths", "1", "--passkey-lengths", "1", "--prompts", "1", "--eval-chars", "256"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for run in ("rope seed0", "fope-authors seed0", "alibi seed0"):
        counts = {int(n) for n in re.findall(rf"{run}: train:[^\r\n]*?\| *(\d+)/300 ", result.stderr)}
        assert 300 in counts and len({n for n in counts if 0 < n < 300}) >= 2, (run, sorted(counts))
        assert re.search(rf"{run}: passkey:[^\r\n]*2/2 ", result.stderr), run  # 2 distances at N


def test_the_board_follows_a_run_through_its_stages_and_a_longer_budget():
    from minifope.progress import RunBoard

    board = RunBoard(["rope seed0"], enabled=False)
    bar = board.bars["rope seed0"]
    board.report("rope seed0", "train", 2000, 3000, loss=1.9)  # resumed at step 2000
    assert (bar.n, bar.total, bar.initial) == (2000, 3000, 2000) and "loss" in bar.postfix
    board.report("rope seed0", "train", 3200, 3500, loss=1.8)  # trained on past its first budget
    assert (bar.n, bar.total) == (3200, 3500)
    board.report("rope seed0", "passkey", 0, 15)
    assert (bar.n, bar.total) == (0, 15) and "passkey" in bar.desc and not bar.postfix


def test_a_checkpoint_from_before_the_yarn_ramp_field_loads_and_evaluates(tmp_path):
    # written by an older minifope: its config.json has no rope_yarn_ramp, its FoPE coefficients
    # were drawn from the weights' stream; loaded, it gets the default ramp and evaluates as ever
    import numpy as np

    from minifope.checkpoint import load_checkpoint, save_checkpoint
    from minifope.config import GPTConfig
    from minifope.data import CharTokenizer, shakespeare
    from minifope.lengthgen import loss_by_length
    from minifope.loop import passkey_chars
    from minifope.model import GPT
    from minifope.passkey import passkey_by_distance, probe_accuracy

    train_text, val_text = shakespeare()
    tokenizer = CharTokenizer.from_text(train_text + val_text + passkey_chars())
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, d_model=16,
                          train_len=128, pe="fope"))
    save_checkpoint(tmp_path / "new.npz", model, tokenizer, {"step": 10})
    with np.load(tmp_path / "new.npz") as f:
        entries = {k: f[k] for k in f.files}
    config = json.loads(entries["config.json"].item())
    del config["rope_yarn_ramp"]
    entries["config.json"] = np.array(json.dumps(config))
    np.savez(tmp_path / "old.npz", **entries)

    old, tok, state, _ = load_checkpoint(tmp_path / "old.npz")
    assert old.config.rope_yarn_ramp == "index" and state["step"] == 10
    for name, value in model.buffers.items():
        np.testing.assert_array_equal(old.buffers[name], value)
    data = tok.encode(val_text[:20000])
    result = loss_by_length(old, data, [128, 256], 1024, progress=False)
    assert set(result) == {128, 256} and all(np.isfinite(r["loss"]) for r in result.values())
    assert probe_accuracy(old, tok, 128) == 0.0
    pk = passkey_by_distance(old, tok, [128], 128, 2, seed=0, progress=False)
    assert np.array(pk["correct"][0]).shape == (2, 2)


def test_report_to_summarises_the_seeds_every_variant_has_finished(tmp_path):
    ec = tiny(seeds=2)
    run_experiment(tiny(seeds=1), tmp_path / "exp", progress=False)  # seed 0 of both variants done
    summary = E.report_finished(ec, tmp_path / "exp", tmp_path / "report")
    assert summary["variants"]["rope"]["seeds"] == [0] and summary["seeds"] == 1
    assert (tmp_path / "report/results.md").exists() and (tmp_path / "report/figure.png").exists()
    # a seed with one variant missing is left out, so the comparison stays paired
    (tmp_path / "exp/runs/alibi/seed0/eval.json").unlink()
    with pytest.raises(UserError, match="no seed whose runs of every variant"):
        E.report_finished(ec, tmp_path / "exp", tmp_path / "report")
    # the records of the runs evaluated so far are kept all the same
    with pytest.raises(UserError, match=r"the records of its 1 evaluated run\(s\) are kept"):
        E.report_finished(ec, tmp_path / "exp", tmp_path / "partial")
    assert (tmp_path / "partial/runs/rope/seed0/eval.json").exists()
    assert not (tmp_path / "partial/runs/alibi").exists() and not (tmp_path / "partial/results.json").exists()
    result = subprocess.run([sys.executable, "-m", "minifope", "experiment", "--out", str(tmp_path / "exp"),
                             "--report-to", str(tmp_path / "r2"), "--pe", "rope", "--seeds", "1",
                             "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--train-len", "128",
                             "--steps", "4", "--batch-size", "4", "--lengths", "1", "2", "--eval-chars", "512",
                             "--passkey-lengths", "1", "2", "--prompts", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    # from the command line, with the evaluation settings the runs were evaluated under
    assert result.returncode == 0, result.stderr
    assert "| rope |" in result.stdout and (tmp_path / "r2/results.json").exists()


def test_report_keeps_run_records_from_which_an_experiment_resumes_without_training(tmp_path):
    import shutil

    ec = tiny(seeds=1, extend=["yarn"])
    first = run_experiment(ec, tmp_path / "exp", progress=False)
    E.report_finished(ec, tmp_path / "exp", tmp_path / "report")
    for label in ("rope", "alibi"):
        kept = tmp_path / "report/runs" / label / "seed0"
        assert (kept / "eval.json").exists() and (kept / "log.jsonl").exists()
        assert not (kept / "ckpt.npz").exists()  # records only, no checkpoint
        run = json.loads((kept / "eval.json").read_text())["run"]
        assert run["model"]["pe"] == label and run["train"]["steps"] == 4 and run["data"] == ec.data
    assert (tmp_path / "report/runs/rope/seed0/eval-yarn.json").exists()
    # a report of some of the folder's variants keeps their runs only
    E.report_finished(tiny(seeds=1, variants=["alibi"]), tmp_path / "exp", tmp_path / "alibi-only")
    assert [p.name for p in (tmp_path / "alibi-only/runs").iterdir()] == ["alibi"]
    # the report can be written again from the records alone
    again = E.report_finished(ec, tmp_path / "report", tmp_path / "report2")
    assert again["variants"]["rope"]["loss"] == first["variants"]["rope"]["loss"]
    # a new folder with the records copied into its runs/ resumes without training them again
    shutil.copytree(tmp_path / "report/runs", tmp_path / "new/runs")
    resumed = run_experiment(ec, tmp_path / "new", progress=False)
    assert not list((tmp_path / "new/runs").glob("*/seed0/ckpt.npz"))
    assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(first))
    # a second seed is trained beside them, and the first seed's runs are still reused
    two = run_experiment(tiny(seeds=2, extend=["yarn"]), tmp_path / "new", progress=False)
    assert (tmp_path / "new/runs/rope/seed1/ckpt.npz").exists()
    assert not (tmp_path / "new/runs/rope/seed0/ckpt.npz").exists()
    assert two["variants"]["rope"]["loss"]["128"]["values"][0] == first["variants"]["rope"]["loss"]["128"]["values"][0]


def test_a_kept_run_of_another_config_or_missing_an_evaluation_is_trained_again(tmp_path):
    import shutil

    ec = tiny(seeds=1, extend=["yarn"])
    run_experiment(ec, tmp_path / "exp", progress=False)
    E.report_finished(ec, tmp_path / "exp", tmp_path / "report")
    shutil.copytree(tmp_path / "report/runs", tmp_path / "new/runs")
    path = tmp_path / "new/runs/alibi/seed0/eval.json"
    stored = json.loads(path.read_text())
    stored["run"]["model"]["d_model"] = 32  # a run of another width left under this name
    path.write_text(json.dumps(stored))
    (tmp_path / "new/runs/rope/seed0/eval-yarn.json").unlink()  # RoPE's YaRN evaluation missing
    assert E._kept_rows(ec, tmp_path / "new", "alibi", 0) is None
    assert E._kept_rows(ec, tmp_path / "new", "rope", 0) is None
    run_experiment(ec, tmp_path / "new", progress=False)
    for label in ("rope", "alibi"):
        assert (tmp_path / f"new/runs/{label}/seed0/ckpt.npz").exists()
    assert json.loads(path.read_text())["run"]["model"]["d_model"] == 16


def test_a_damaged_or_hand_made_evaluation_is_not_read(tmp_path):
    # a record whose numbers or tables are not what the experiment computes is treated as
    # absent: the run is trained again, and a report of it refuses in one line instead of
    # failing deep in the summary
    import shutil

    ec = tiny(seeds=1)
    run_experiment(ec, tmp_path / "exp", progress=False)
    E.report_finished(ec, tmp_path / "exp", tmp_path / "report")
    good = json.loads((tmp_path / "report/runs/rope/seed0/eval.json").read_text())
    shape = E._shape(ec, 128, 1, E._vocabulary(ec), passkey=True)
    assert E._well_formed(good["result"], shape)

    def damaged(change):
        result = json.loads(json.dumps(good["result"]))
        change(result)
        return result

    changes = [lambda r: r["loss"]["128"].update(loss="1.5"),
               lambda r: r["loss"]["128"].update(loss=float("nan")),
               lambda r: r["loss"]["128"].update(loss=10**400),  # valid JSON, beyond any float
               lambda r: r["loss"].pop("256"),
               lambda r: r["loss"].update({"512": r["loss"]["256"]}),
               lambda r: r["loss"]["256"]["bucket_loss"].pop(),
               lambda r: r["loss"]["256"].update(n_windows=0),
               lambda r: r["leakage"].append(r["leakage"][0]),
               lambda r: r["leakage"][0].update(q=None),
               lambda r: r.pop("passkey"),
               lambda r: r["passkey"]["correct"][0][0].__setitem__(0, 2),
               lambda r: r["passkey"]["correct"][1].pop(),
               lambda r: r["passkey"]["keys"][0][0].append("12345"),
               lambda r: r["passkey"]["keys"][0][0].__setitem__(0, 12345),
               lambda r: r["passkey"]["distances"][0].__setitem__(0, 1),
               lambda r: r.update(loss=[])]
    for change in changes:
        assert not E._well_formed(damaged(change), shape)
    assert not E._well_formed([], shape) and not E._well_formed(None, shape)
    # a loss-only evaluation (a scaling's, the home corpus's) has no passkey table
    assert E._well_formed({"loss": good["result"]["loss"]}, E._shape(ec, 128, 1))
    assert not E._well_formed(good["result"], E._shape(ec, 128, 1))

    shutil.copytree(tmp_path / "report/runs", tmp_path / "new/runs")
    path = tmp_path / "new/runs/rope/seed0/eval.json"
    path.write_text(json.dumps(dict(good, result=damaged(changes[0]))))
    assert E._kept_rows(ec, tmp_path / "new", "rope", 0) is None
    assert E._kept_rows(ec, tmp_path / "new", "alibi", 0) is not None
    assert E.finished_runs(ec, tmp_path / "new") == ({}, [])
    result = subprocess.run([sys.executable, "-m", "minifope", "experiment", "--out", str(tmp_path / "new"),
                             "--report-to", str(tmp_path / "r2"), "--pe", "rope", "alibi", "--seeds", "1",
                             "--d-model", "16", "--n-layer", "1", "--n-head", "2", "--train-len", "128",
                             "--steps", "4", "--batch-size", "4", "--lengths", "1", "2", "--eval-chars", "512",
                             "--passkey-lengths", "1", "2", "--prompts", "2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "nothing to report" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    run_experiment(ec, tmp_path / "new", progress=False)  # rope trained again, alibi reused
    assert (tmp_path / "new/runs/rope/seed0/ckpt.npz").exists()
    assert not (tmp_path / "new/runs/alibi/seed0/ckpt.npz").exists()
    assert E._well_formed(json.loads(path.read_text())["result"], shape)


def test_an_evaluation_written_before_runs_had_records_gets_its_record(tmp_path):
    ec = tiny(seeds=1)
    run_experiment(ec, tmp_path, progress=False)
    path = tmp_path / "runs/rope/seed0/eval.json"
    stored = json.loads(path.read_text())
    record = stored.pop("run")
    path.write_text(json.dumps(stored))
    run_experiment(ec, tmp_path, progress=False)  # the checkpoint is there: evaluates nothing
    assert json.loads(path.read_text()) == dict(stored, run=record)


def test_an_experiment_without_passkey_prompts_reports_loss_alone_without_warnings(tmp_path):
    ec = tiny(seeds=1, train=dict(steps=2, batch_size=4, eval_interval=2, eval_batches=1), passkey_multipliers=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "No artists with labels found to put in legend"
        summary = run_experiment(ec, tmp_path, progress=False)
    assert all("passkey" not in v for v in summary["variants"].values())
    assert (tmp_path / "figure.png").exists() and not (tmp_path / "passkey_by_distance.png").exists()


def _passkey_result(correct_by_cell, keys_by_cell=None):
    """A passkey_by_distance result over lengths 256 (distances 81, 128, 250) and 512 (81, 128,
    256, 506), 2 prompts a cell, with the given 0/1 answers per cell in that order."""
    lengths, distances = [256, 512], [[81, 128, 250], [81, 128, 256, 506]]
    cells = iter(correct_by_cell)
    keys = iter(keys_by_cell or [["11111", "22222"]] * 7)
    return {"lengths": lengths, "distances": distances,
            "correct": [[next(cells) for _ in d] for d in distances],
            "keys": [[next(keys) for _ in d] for d in distances]}


def test_passkey_by_distance_pools_each_distance_over_the_lengths_that_hold_it():
    a = [_passkey_result([[1, 1], [1, 0], [0, 0], [1, 1], [0, 0], [0, 1], [0, 0]]) for _ in range(3)]
    b = [_passkey_result([[1, 1], [0, 0], [0, 0], [1, 1], [0, 0], [0, 0], [0, 0]]) for _ in range(3)]
    summary = E._passkey_summary(a)["by_distance"]
    assert summary["distances"] == [81, 128, 250, 256, 506]
    assert summary["lengths"] == [[256, 512], [256, 512], [256], [512], [512]]
    means = [r["mean"] for r in summary["accuracy"]]
    assert means == [1.0, 0.25, 0.0, 0.5, 0.0]  # 128: (1 + 0 + 0 + 0) / 4 prompts
    paired = E._paired("a", {s: {"loss": {}, "passkey": r} for s, r in enumerate(a)},
                       "b", {s: {"loss": {}, "passkey": r} for s, r in enumerate(b)}, 256)
    by_distance = paired["passkey_by_distance"]
    assert {d: r["mean"] for d, r in by_distance.items()} == {"81": 0.0, "128": 0.25, "250": 0.0, "256": 0.5,
                                                             "506": 0.0}
    other_keys = [_passkey_result([[0, 0]] * 7, [["33333", "44444"]] * 7) for _ in range(3)]
    unpaired = E._paired("a", {s: {"loss": {}, "passkey": r} for s, r in enumerate(a)},
                         "c", {s: {"loss": {}, "passkey": r} for s, r in enumerate(other_keys)}, 256)
    assert unpaired["passkey_by_distance"] == {}  # other prompts: no pairs
