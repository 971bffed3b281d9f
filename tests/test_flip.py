"""The flip map (minifope/flip.py): rankings and FoPE-ALiBi verdicts from experiment reports."""

import json

import pytest

from helpers import assert_user_error, cli
from minifope.errors import UserError
from minifope.flip import crossing, difference, flip_map, load_point, ranking, verdict

N = 256


def _interval(mean, half):
    return dict(mean=mean, low=mean - half, high=mean + half, separated=abs(mean) > half)


def _report(folder, losses, retrieval, suffix=""):
    """A results.json with variants {name + suffix}: loss at 4N and 16N and retrieval at 2N
    (pooled by distance) as given, and paired differences whose interval is +-0.05 (loss)
    or +-0.1 (retrieval) around the difference of the means."""
    variants, differences = {}, []
    for name, (l4, l16) in losses.items():
        variants[name + suffix] = {
            "loss": {str(4 * N): {"mean": l4}, str(16 * N): {"mean": l16}},
            "passkey": {"by_distance": {"distances": [81, 2 * N, 2 * N + 214],  # the last: a window's longest
                                        "accuracy": [{"mean": 1.0}, {"mean": retrieval[name]}, {"mean": 0.3}]}}}
    names = list(losses)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            differences.append({"a": a + suffix, "b": b + suffix, "loss": {
                str(4 * N): _interval(losses[a][0] - losses[b][0], 0.05),
                str(16 * N): _interval(losses[a][1] - losses[b][1], 0.05)},
                "passkey_by_distance": {str(2 * N): _interval(retrieval[a] - retrieval[b], 0.1)}})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps({"train_len": N, "seeds": 3, "steps": 8000, "unit": "character",
                                                     "variants": variants, "differences": differences}))
    return folder


LOSSES = {"rope": (3.0, 3.6), "fope-authors": (2.0, 2.5), "alibi": (1.98, 2.2)}
RETRIEVAL = {"rope": 0.1, "fope-authors": 0.5, "alibi": 0.55}


def test_a_difference_read_in_the_other_order_is_negated(tmp_path):
    summary, _ = load_point(_report(tmp_path, LOSSES, RETRIEVAL))
    ab = difference(summary, "rope", "alibi", "loss", 4 * N)
    ba = difference(summary, "alibi", "rope", "loss", 4 * N)
    assert ab["mean"] == pytest.approx(1.02) and ba["mean"] == pytest.approx(-1.02)
    assert (ba["low"], ba["high"]) == pytest.approx((-ab["high"], -ab["low"]))
    assert difference(summary, "rope", "nope", "loss", 4 * N) is None


def test_rankings_join_separated_neighbours_with_a_sign_and_the_others_with_a_tilde(tmp_path):
    summary, names = load_point(_report(tmp_path, LOSSES, RETRIEVAL))
    means4 = {n: LOSSES[n][0] for n in names}
    assert ranking(summary, names, "loss", 4 * N, means4, False) == "alibi ~ fope-authors > rope"
    means16 = {n: LOSSES[n][1] for n in names}
    assert ranking(summary, names, "loss", 16 * N, means16, False) == "alibi > fope-authors > rope"
    assert ranking(summary, names, "passkey_by_distance", 2 * N, RETRIEVAL, True) == "alibi ~ fope-authors > rope"


def test_verdicts_follow_the_direction_in_which_each_metric_is_better():
    assert verdict(_interval(-0.3, 0.1), higher_is_better=False) == "FoPE ahead"  # lower loss
    assert verdict(_interval(-0.3, 0.1), higher_is_better=True) == "ALiBi ahead"  # lower retrieval
    assert verdict(_interval(0.3, 0.1), higher_is_better=True) == "FoPE ahead"
    assert verdict(_interval(0.05, 0.1), higher_is_better=True) == "not separated"
    assert verdict(None, higher_is_better=True) == "no paired difference"


def test_the_map_finds_where_fope_overtakes_alibi_along_an_axis(tmp_path):
    small = _report(tmp_path / "small", LOSSES, RETRIEVAL)
    big = _report(tmp_path / "big", {"rope": (3.0, 3.6), "fope-authors": (1.8, 2.0), "alibi": (2.0, 2.3)},
                  {"rope": 0.1, "fope-authors": 0.9, "alibi": 0.4}, suffix=":n_head=1")
    result = flip_map([("head dim", "16", small, ""), ("head dim", "64", big, ":n_head=1")])
    verdicts = [[m["verdict"] for m in p["metrics"]] for p in result["points"]]
    assert verdicts == [["not separated", "ALiBi ahead", "not separated"], ["FoPE ahead"] * 3]
    # only the grid's distances 2N, 4N, ... are read: not 81 (below N), nor a window's longest
    assert [m["metric"] for m in result["points"][0]["metrics"]] == ["loss 4N", "loss 16N", f"retrieval d={2 * N}"]
    result = cli("flip", "--out", tmp_path / "map", "--point", "head dim", "16", small,
                 "--point", "head dim", "64", big, ":n_head=1")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "map" / "flip.md").read_text()
    assert "fope-authors ahead of alibi at: 64, loss 4N; 64, loss 16N; 64, retrieval d=512." in text
    assert ("| 64 (N = 256 characters, 3 seeds) | loss 16N | fope-authors > alibi > rope | "
            "-0.300 [-0.350, -0.250]") in text
    assert (tmp_path / "map" / "flip.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "map" / "flip.json").read_text())["points"][1]["value"] == "64"
    # where neither retrieves a single prompt there is nothing to separate, and the map says so
    none = _report(tmp_path / "none", LOSSES, {"rope": 0.0, "fope-authors": 0.0, "alibi": 0.0})
    result = flip_map([("head dim", "16", none, "")])
    assert [m["verdict"] for m in result["points"][0]["metrics"]][-1] == "neither retrieves"


def test_a_report_on_another_corpus_is_ranked_by_its_loss_on_the_training_corpus(tmp_path):
    folder = _report(tmp_path, LOSSES, RETRIEVAL)
    summary = json.loads((folder / "results.json").read_text())
    # the evaluation corpus's rows: the opposite order; the training corpus's ([shakespeare]): LOSSES
    home = {f"{name} [shakespeare]": dict(summary["variants"][name]) for name in LOSSES}
    for name in LOSSES:
        summary["variants"][name]["loss"] = {k: {"mean": -v["mean"]} for k, v in
                                             summary["variants"][name]["loss"].items()}
    summary["variants"].update(home)
    summary["differences"] += [dict(d, a=d["a"] + " [shakespeare]", b=d["b"] + " [shakespeare]")
                               for d in summary["differences"]]
    summary["eval_text"] = {"name": "pydoc"}
    (folder / "results.json").write_text(json.dumps(summary))
    result = flip_map([("corpus", "x", folder, "")])
    rankings = {m["metric"]: m["ranking"] for m in result["points"][0]["metrics"]}
    assert rankings == {"loss 4N": "alibi ~ fope-authors > rope", "loss 16N": "alibi > fope-authors > rope",
                        f"retrieval d={2 * N}": "alibi ~ fope-authors > rope"}
    del summary["variants"]["rope [shakespeare]"]
    summary["differences"] = [d for d in summary["differences"] if "rope [shakespeare]" not in (d["a"], d["b"])]
    (folder / "results.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match=r"no row of rope on its training corpus"):
        flip_map([("corpus", "x", folder, "")])


def test_a_point_without_fope_ahead_anywhere_says_so(tmp_path):
    folder = _report(tmp_path, LOSSES, RETRIEVAL)
    text = cli("flip", "--out", tmp_path / "map", "--point", "tokens", "char", folder)
    assert text.returncode == 0, text.stderr
    assert "fope-authors is ahead of alibi at none of these metrics on this axis." in \
        (tmp_path / "map" / "flip.md").read_text()


def test_bad_points_are_refused_in_one_line(tmp_path):
    folder = _report(tmp_path / "ok", LOSSES, RETRIEVAL)
    assert_user_error(cli("flip", "--out", tmp_path / "map", "--point", "head dim", folder),
                      "--point takes AXIS VALUE DIR [SUFFIX], got 2 item(s)")
    assert_user_error(cli("flip", "--out", tmp_path / "map", "--point", "a", "b", tmp_path / "none"),
                      "is not an experiment report")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "results.json").write_text("{not json")
    assert_user_error(cli("flip", "--out", tmp_path / "map", "--point", "a", "b", tmp_path / "bad"),
                      "is not an experiment report")
    # a report whose numbers or tables are not what experiment writes: refused, not a traceback
    good = json.loads((folder / "results.json").read_text())
    damages = [lambda r: r["variants"]["alibi"]["loss"][str(4 * N)].update(mean="1.9"),
               lambda r: r["variants"]["alibi"]["loss"][str(4 * N)].update(mean=float("nan")),
               lambda r: r["differences"][0]["loss"][str(4 * N)].update(low=10**400),
               lambda r: r["variants"]["rope"]["passkey"]["by_distance"]["accuracy"].pop(),
               lambda r: r["differences"].append({"a": "rope"}),
               lambda r: r["differences"][0]["loss"][str(4 * N)].update(separated="yes"),
               lambda r: r.update(train_len="256"),
               lambda r: r.update(eval_text="pydoc")]
    for i, damage in enumerate(damages):
        report = json.loads(json.dumps(good))
        damage(report)
        (tmp_path / f"damaged{i}").mkdir()
        (tmp_path / f"damaged{i}" / "results.json").write_text(json.dumps(report))
        with pytest.raises(UserError, match="is not an experiment report"):
            load_point(tmp_path / f"damaged{i}")
    assert_user_error(cli("flip", "--out", tmp_path / "map", "--point", "a", "b", tmp_path / "damaged0"),
                      "is not an experiment report", "or is damaged")
    with pytest.raises(UserError, match="has 0 variant"):
        load_point(folder, ":n_head=2")
    assert_user_error(cli("flip", "--out", tmp_path / "map", "--point", "a", "b", folder, "--fope", "fope"),
                      "--fope fope: not one of the embeddings ranked")
    assert not (tmp_path / "map").exists()
    (tmp_path / "file").write_text("x")
    assert_user_error(cli("flip", "--out", tmp_path / "file", "--point", "a", "b", folder),
                      "is a file, not a folder")
    assert (tmp_path / "file").read_text() == "x"


def test_only_the_maps_embeddings_are_ranked(tmp_path):
    folder = _report(tmp_path, {**LOSSES, "fope-identity": (1.0, 1.0)}, {**RETRIEVAL, "fope-identity": 1.0})
    summary, names = load_point(folder)
    assert sorted(names) == ["alibi", "fope-authors", "rope"]
    assert flip_map([("x", "1", folder, "")])["points"][0]["metrics"][0]["ranking"] == "alibi ~ fope-authors > rope"
    _, names = load_point(folder, embeddings=("fope-identity", "rope"))
    assert sorted(names) == ["fope-identity", "rope"]


def _with_short_lengths(folder, fope_alibi):
    """The report of folder with loss at N and 2N added for fope-authors and alibi, their paired
    difference there fope_alibi[m] +- 0.02 (m = 1, 2)."""
    summary = json.loads((folder / "results.json").read_text())
    for m, diff in fope_alibi.items():
        summary["variants"]["alibi"]["loss"][str(m * N)] = {"mean": 1.6}
        summary["variants"]["fope-authors"]["loss"][str(m * N)] = {"mean": 1.6 + diff}
        for d in summary["differences"]:
            if (d["a"], d["b"]) == ("fope-authors", "alibi"):
                d["loss"][str(m * N)] = _interval(diff, 0.02)
    (folder / "results.json").write_text(json.dumps(summary))
    return folder


def test_the_map_says_at_which_length_the_lead_on_loss_changes_hands(tmp_path):
    # fope - alibi: -0.05 at N and -0.03 at 2N (FoPE ahead), +0.02 +- 0.05 at 4N (not
    # separated), +0.3 at 16N (ALiBi ahead): the lead passes from FoPE to ALiBi after 2N
    folder = _with_short_lengths(_report(tmp_path / "p", LOSSES, RETRIEVAL), {1: -0.05, 2: -0.03})
    point = flip_map([("head dim", "32", folder, "")])["points"][0]
    assert [(r["at"], r["verdict"]) for r in point["loss_by_length"]] == [
        (1, "FoPE ahead"), (2, "FoPE ahead"), (4, "not separated"), (16, "ALiBi ahead")]
    assert point["loss_by_length"][0]["fope_minus_alibi"]["mean"] == pytest.approx(-0.05)
    assert point["crossing"] == "fope-authors ahead up to 2N, alibi from 16N"
    result = cli("flip", "--out", tmp_path / "map", "--point", "head dim", "32", folder)
    assert result.returncode == 0, result.stderr
    assert ("| 32 (nats/character) | -0.050 [-0.070, -0.030] | -0.030 [-0.050, -0.010] | +0.020 [-0.030, +0.070] "
            "| +0.300 [+0.250, +0.350] | fope-authors ahead up to 2N, alibi from 16N |") in \
        (tmp_path / "map" / "flip.md").read_text()
    # the other cases, on rows with known verdicts
    rows = [dict(at=m, verdict=v) for m, v in ((1, "ALiBi ahead"), (2, "not separated"), (4, "FoPE ahead"))]
    assert crossing(rows) == "ALiBi ahead up to 1N, FoPE from 4N"
    assert crossing(rows[1:2]) == "not separated at any length"
    assert crossing(rows[:2]) == "ALiBi ahead at 1N; FoPE at no length"
    assert crossing(rows[2:]) == "FoPE ahead at 4N; ALiBi at no length"
    assert crossing(rows + [dict(at=8, verdict="ALiBi ahead")]) == "FoPE ahead at 4N; ALiBi at 1N, 8N"
