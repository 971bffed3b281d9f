"""The experiment runner on tiny configs: outputs, reuse, resume after a crash, refusals."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from minifope import experiment as E
from minifope.errors import UserError
from minifope.experiment import ExperimentConfig, markdown_table, parse_variant, run_experiment

ROOT = Path(__file__).resolve().parents[1]


def tiny(**changes):
    base = dict(variants=["rope", "alibi"], seeds=2,
                model=dict(d_model=16, n_layer=1, n_head=2, train_len=128),
                train=dict(steps=4, batch_size=4, passkey_frac=0.5, eval_interval=2, eval_batches=1),
                multipliers=[1, 2], eval_chars=512, passkey_multipliers=[1, 2], depths=[0.0, 1.0],
                trials=2, retrieve_target=0.0)
    return ExperimentConfig(**{**base, **changes})


def constant_lr(**changes):
    """tiny() with a constant learning rate, training on until the passkey is retrieved."""
    ec = tiny(**{"retrieve_target": 0.9, "extend_steps": 2, "max_steps": 8, **changes})
    ec.train = dict(ec.train, lr=3e-3, min_lr=3e-3, warmup=1)
    return ec


def test_parse_variant_reads_aliases_and_fields():
    assert parse_variant("clip-only") == {"pe": "rope", "rope_clip": True}
    assert parse_variant("series-only") == {"pe": "fope", "fope_clip": False}
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
    assert len(rope["loss"]["256"]["values"]) == 2
    assert rope["passkey"]["lengths"] == [128, 256] and rope["passkey"]["trials"] == 2
    assert "passkey" not in summary["variants"]["rope+yarn"]
    for name in ("results.json", "results.md", "figure.png", "needle_grid.png", "loss_by_position.png"):
        assert (tmp_path / name).stat().st_size > 0
    table = (tmp_path / "results.md").read_text()
    assert "| rope |" in table and "loss @2N" in table and "passkey @1N" in table
    assert json.loads((tmp_path / "results.json").read_text()) == json.loads(json.dumps(summary))


def test_a_second_run_reuses_every_trained_model_and_evaluation(tmp_path, monkeypatch):
    first = run_experiment(tiny(), tmp_path, progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing should be recomputed")

    monkeypatch.setattr(E, "train", forbidden)
    monkeypatch.setattr(E, "loss_by_length", forbidden)
    monkeypatch.setattr(E, "needle_grid", forbidden)
    assert run_experiment(tiny(), tmp_path, progress=False) == first


def test_a_second_run_reuses_every_retrieval_check(tmp_path, monkeypatch):
    first = run_experiment(constant_lr(seeds=1, variants=["alibi"]), tmp_path, progress=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("nothing should be recomputed")

    monkeypatch.setattr(E, "train", forbidden)
    monkeypatch.setattr(E, "passkey_accuracy", forbidden)
    assert run_experiment(constant_lr(seeds=1, variants=["alibi"]), tmp_path, progress=False) == first


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
    assert (tmp_path / "runs/rope/seed0/eval.json").exists()
    assert (tmp_path / "runs/rope/seed1/ckpt.npz").exists()
    assert not (tmp_path / "runs/rope/seed1/eval.json").exists()

    trained = []
    real_train = E.train
    monkeypatch.setattr(E, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    monkeypatch.setattr(E, "_evaluate_run", real_evaluate)
    summary = run_experiment(tiny(), tmp_path, progress=False)
    assert len(trained) == 2  # only the two alibi runs were still to train
    assert set(summary["variants"]) == {"rope", "alibi"}


def test_other_training_settings_in_the_same_folder_are_refused(tmp_path):
    run_experiment(tiny(seeds=1, variants=["rope"]), tmp_path, progress=False)
    changed = tiny(seeds=1, variants=["rope"])
    changed.train = dict(changed.train, steps=8)
    with pytest.raises(UserError, match="other settings"):
        run_experiment(changed, tmp_path, progress=False)


def test_continued_training_adds_yarn_and_fope_runs_from_the_rope_checkpoint(tmp_path):
    ec = tiny(seeds=1, variants=["rope"], continue_factor=2, continue_steps=2)
    summary = run_experiment(ec, tmp_path, progress=False)
    assert {"rope+yarn@2N", "rope-to-fope@2N"} <= set(summary["variants"])
    state = json.loads(__import__("numpy").load(tmp_path / "runs/rope-to-fope@2N/seed0/ckpt.npz")
                       ["state.json"][()].item())
    assert state["init_from"].endswith("runs/rope/seed0")


def test_markdown_table_shows_mean_and_spread():
    summary = {"train_len": 128, "seeds": 2, "variants": {"rope": {
        "steps": [3000, 4500],
        "loss": {"128": {"mean": 1.5, "std": 0.02}}, "passkey": {"lengths": [128], "mean": [0.75],
                                                                 "std": [0.25], "trials": 4}}}}
    table = markdown_table(summary)
    assert "| rope | 3000/4500 | 1.500 ± 0.020 | 0.75 ± 0.25 |" in table
    assert "4 trials" in table


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
        assert len(leak) == 1 and 0.0 <= leak[0]["q"] <= 1.0
    assert "leakage" not in summary["variants"]["alibi"]
    assert "Spectral leakage" in (tmp_path / "results.md").read_text()


def test_a_run_that_does_not_retrieve_trains_on_to_max_steps(tmp_path):
    # a 4-step tiny model retrieves nothing: checks at 4, 6 and 8 steps, then it stops at max_steps
    summary = run_experiment(constant_lr(seeds=1, variants=["rope"]), tmp_path, progress=False)
    checks = json.loads((tmp_path / "runs/rope/seed0/retrieval.json").read_text())
    assert list(checks) == ["4", "6", "8"] and all(a < 0.9 for a in checks.values())
    assert summary["variants"]["rope"]["steps"] == [8] and summary["variants"]["rope"]["reached"] == [False]
    table = (tmp_path / "results.md").read_text()
    assert "| rope | 8* |" in table and "*: stopped at max_steps" in table


def test_a_run_stopped_at_a_lower_max_steps_is_continued_and_evaluated_again(tmp_path):
    first = run_experiment(constant_lr(seeds=1, variants=["rope"], max_steps=6), tmp_path, progress=False)
    assert first["variants"]["rope"]["steps"] == [6]
    second = run_experiment(constant_lr(seeds=1, variants=["rope"]), tmp_path, progress=False)
    assert second["variants"]["rope"]["steps"] == [8]
    assert json.loads((tmp_path / "runs/rope/seed0/eval.json").read_text())["step"] == 8
    assert second["variants"]["rope"]["loss"] != first["variants"]["rope"]["loss"]


def test_a_run_that_retrieves_stops_at_the_first_check(tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.setattr(E, "passkey_accuracy", lambda model, tok, N, depths, *a, **k: np.ones(len(depths)))
    summary = run_experiment(constant_lr(seeds=1, variants=["rope"]), tmp_path, progress=False)
    assert summary["variants"]["rope"]["steps"] == [4]
    assert json.loads((tmp_path / "runs/rope/seed0/retrieval.json").read_text()) == {"4": 1.0}


def test_an_extended_run_equals_one_trained_that_long_from_the_start(tmp_path):
    import numpy as np

    run_experiment(constant_lr(seeds=1, variants=["rope"]), tmp_path / "extended", progress=False)
    straight = constant_lr(seeds=1, variants=["rope"], retrieve_target=0.0)
    straight.train = dict(straight.train, steps=8)
    run_experiment(straight, tmp_path / "straight", progress=False)
    a = np.load(tmp_path / "extended/runs/rope/seed0/ckpt.npz")
    b = np.load(tmp_path / "straight/runs/rope/seed0/ckpt.npz")
    params = [k for k in a.files if k.startswith("param")]
    assert params and all(np.array_equal(a[k], b[k]) for k in params)


def test_an_interrupted_extension_is_finished_before_it_is_checked(tmp_path, monkeypatch):
    from minifope.config import GPTConfig
    from minifope.data import load_corpus
    from minifope.train import TrainConfig

    ec = constant_lr(seeds=1, variants=["rope"])
    run_dir = tmp_path / "runs/rope/seed0"
    tc = TrainConfig(**{**ec.train, "steps": 5, "seed": 0})  # as if stopped at step 5, between checks
    E._train_run(run_dir, GPTConfig(**ec.model, pe="rope"), tc, load_corpus(ec.data), ec.data, False)
    run_experiment(ec, tmp_path, progress=False)
    assert list(json.loads((run_dir / "retrieval.json").read_text())) == ["6", "8"]


def test_a_cosine_learning_rate_cannot_be_extended(tmp_path):
    ec = tiny(retrieve_target=0.9)  # lr 3e-3 decaying to 3e-4
    with pytest.raises(UserError, match="constant learning rate"):
        run_experiment(ec, tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()


def test_the_demo_shows_every_runs_step_count_moving(tmp_path):
    """The runs train in worker processes; the board shows each one's step count as it goes."""
    import re

    result = subprocess.run(
        [sys.executable, "-m", "minifope", "demo", "--out", str(tmp_path / "demo"), "--d-model", "16",
         "--n-layer", "1", "--n-head", "2", "--train-len", "128", "--steps", "300", "--batch-size", "4",
         "--lengths", "1", "--passkey-lengths", "1", "--depths", "0", "--trials", "1",
         "--eval-chars", "256", "--retrieve-target", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for run in ("rope seed0", "fope seed0", "alibi seed0"):
        counts = {int(n) for n in re.findall(rf"{run}: train:[^\r\n]*?\| *(\d+)/300 ", result.stderr)}
        assert 300 in counts and len({n for n in counts if 0 < n < 300}) >= 2, (run, sorted(counts))
        assert re.search(rf"{run}: needle grid:[^\r\n]*1/1 ", result.stderr), run


def test_the_board_follows_a_run_through_its_stages_and_a_longer_budget():
    from minifope.progress import RunBoard

    board = RunBoard(["rope seed0"], enabled=False)
    bar = board.bars["rope seed0"]
    board.report("rope seed0", "train", 2000, 3000, loss=1.9)  # resumed at step 2000
    assert (bar.n, bar.total, bar.initial) == (2000, 3000, 2000) and "loss" in bar.postfix
    board.report("rope seed0", "train", 3200, 3500, loss=1.8)  # trained on past its first budget
    assert (bar.n, bar.total) == (3200, 3500)
    board.report("rope seed0", "needle grid", 0, 15)
    assert (bar.n, bar.total) == (0, 15) and "needle grid" in bar.desc and not bar.postfix
