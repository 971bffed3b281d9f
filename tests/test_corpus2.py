"""The second corpus, pydoc (the Python language reference from the standard library), and
the vocabulary a model trained on one corpus and evaluated on the other is built with."""

import hashlib
import json
import socket
import sys

import numpy as np
import pytest

from minifope import data
from minifope.data import (CORPORA, PYDOC_SHA256, CharTokenizer, clean_pydoc, load_corpus,
                           load_eval_text, pydoc, pydoc_text, shakespeare)
from minifope.errors import UserError
from minifope.experiment import ExperimentConfig, _texts, report_finished, run_experiment, untrained_characters

TOPICS = {"if": "The \u201cif\u201d statement \u2014 \u2018else\u2019 too\u2026  \n\n\n\nx \u2013 1\n",
          "assert": "The assert statement\n********************\n"}


@pytest.fixture
def fresh_pydoc():
    """pydoc's caches emptied before and after, for a test that changes what it reads."""
    pydoc_text.cache_clear()
    pydoc.cache_clear()
    yield
    pydoc_text.cache_clear()
    pydoc.cache_clear()


def tiny(**changes):
    base = dict(variants=["rope"], seeds=1, model=dict(d_model=16, n_layer=1, n_head=2, train_len=64),
                train=dict(steps=3, batch_size=2, passkey_frac=0.0, eval_interval=3, eval_batches=1),
                multipliers=[1, 2], eval_chars=256, passkey_multipliers=[], prompts=1,
                data="shakespeare", eval_data="pydoc")
    return ExperimentConfig(**{**base, **changes})


def test_cleaning_orders_topics_by_name_and_makes_punctuation_ascii():
    assert clean_pydoc(TOPICS) == ("The assert statement\n********************\n\n"
                                   "The \"if\" statement -- 'else' too...\n\nx - 1\n")


def test_pydoc_loads_offline_from_the_standard_library(monkeypatch, fresh_pydoc):
    def no_network(*args, **kwargs):
        raise AssertionError("the pydoc corpus tried to reach the network")

    monkeypatch.setattr(socket, "socket", no_network)
    text = pydoc_text()
    assert text.startswith('The "assert" statement\n')
    assert "The \"if\" statement is used for conditional execution" in text
    assert 400_000 < len(text) < 600_000


def test_pydoc_hash_is_the_one_pinned_for_this_python():
    version = data._python_version()
    if version not in PYDOC_SHA256:
        pytest.skip(f"Python {version} is not one PYDOC_SHA256 pins (its text loads unchecked)")
    text = pydoc_text()
    assert (len(text), hashlib.sha256(text.encode()).hexdigest()) == PYDOC_SHA256[version]


def test_pins_are_per_patch_release_and_all_differ():
    assert all(version.count(".") == 2 for version in PYDOC_SHA256)
    assert len({sha for _, sha in PYDOC_SHA256.values()}) == len(PYDOC_SHA256)


def test_a_changed_text_on_a_pinned_python_is_refused(monkeypatch, fresh_pydoc):
    monkeypatch.setattr(data, "_python_version", lambda: "3.11.7")
    monkeypatch.setattr(data, "_pydoc_topics", lambda: TOPICS)
    changed = len(clean_pydoc(TOPICS))
    with pytest.raises(UserError, match=rf"pydoc corpus of this Python 3\.11\.7 is not the documented "
                                        rf"one: {changed} characters .* where Python 3\.11\.7 has 464,980"):
        pydoc_text()


def test_a_python_the_table_does_not_pin_loads_its_own_text(monkeypatch, fresh_pydoc):
    monkeypatch.setattr(data, "_python_version", lambda: "3.99.0")
    monkeypatch.setattr(data, "_pydoc_topics", lambda: {"a": "x" * 200 + "\n"})
    assert pydoc_text() == "x" * 200 + "\n"
    assert "".join(pydoc()) == pydoc_text()


def test_a_python_without_pydoc_data_is_a_user_error(monkeypatch, fresh_pydoc):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)
    with pytest.raises(UserError, match="no pydoc_data.topics"):
        pydoc_text()


def test_pydoc_is_ascii_but_two_letters_and_keeps_its_last_tenth_for_validation():
    text = pydoc_text()
    assert {c for c in text if not (c == "\n" or " " <= c <= "~")} == {"\u00df", "\u00b0"}
    for mark in ("\u2018", "\u2019", "\u201c", "\u201d", "\u2014", "\u2013", "\u2026", "\t"):
        assert mark not in text
    assert "\n\n\n" not in text and " \n" not in text
    train, val = pydoc()
    assert train + val == text and len(val) == round(len(text) * 0.1)


def test_corpora_are_known_by_name_and_eval_text_is_the_whole_corpus():
    assert set(CORPORA) == {"shakespeare", "pydoc"}
    assert load_corpus("pydoc") == pydoc()
    assert load_eval_text("pydoc") == pydoc_text()
    assert load_eval_text("shakespeare") == "".join(shakespeare())


def test_shifted_vocabulary_holds_every_character_of_both_corpora():
    (train, val), eval_text, tokenizer = _texts(tiny())
    assert tokenizer.chars == "".join(sorted(set(train + val + eval_text)))
    for text in (train + val, eval_text):
        ids = tokenizer.encode(text)  # raises on a character outside the vocabulary
        assert tokenizer.decode(ids) == text  # nothing dropped or mapped
    assert set(shakespeare()[0]) < set(tokenizer.chars)


def test_the_vocabulary_is_shifted_only_for_another_named_corpus(tmp_path):
    path = tmp_path / "other.txt"
    path.write_text("To be, or not to be. " * 100)
    assert _texts(tiny(eval_data=None))[2] is None
    assert _texts(tiny(eval_data=str(path)))[2] is None
    assert "vocabulary_with" not in tiny(eval_data=str(path)).training_key()
    assert tiny().training_key()["vocabulary_with"] == "pydoc"
    assert tiny().eval_key() != tiny(eval_data=str(path)).eval_key()


def test_untrained_characters_are_the_code_punctuation_shakespeare_lacks():
    untrained = untrained_characters(tiny())
    assert set("_*=()|<>+[]{}~/\\#%^@\u00df\u00b0") == set(untrained)
    text = pydoc_text()
    assert all(untrained[c] == text.count(c) for c in untrained)
    assert 0.03 < sum(untrained.values()) / len(text) < 0.07
    assert untrained_characters(tiny(data="pydoc", eval_data="shakespeare")) == {}


def test_eval_data_naming_the_training_corpus_is_refused(tmp_path):
    with pytest.raises(UserError, match="leave --eval-data out"):
        run_experiment(tiny(eval_data="shakespeare"), tmp_path / "exp", progress=False)
    assert not (tmp_path / "exp").exists()


def test_trained_on_shakespeare_evaluated_on_pydoc_reports_loss_by_length(tmp_path):
    summary = run_experiment(tiny(), tmp_path / "exp", progress=False, jobs=1)
    loss = summary["variants"]["rope"]["loss"]
    assert set(loss) == {"64", "128"}
    assert all(np.isfinite(r["mean"]) and r["mean"] > 0 for r in loss.values())
    assert summary["eval_text"]["name"] == "pydoc"
    assert summary["eval_text"]["chars"] == len(pydoc_text())
    assert summary["eval_text"]["untrained"]["_"] == pydoc_text().count("_")
    table = (tmp_path / "exp/results.md").read_text()
    assert "Loss evaluated on pydoc" in table and "never occur in the training text" in table
    saved = json.loads((tmp_path / "exp/runs/rope/seed0/eval.json").read_text())
    assert set(saved["result"]["loss"]) == {"64", "128"}
    from minifope.checkpoint import load_checkpoint

    _, tokenizer, _, _ = load_checkpoint(tmp_path / "exp/runs/rope/seed0")
    assert isinstance(tokenizer, CharTokenizer)
    assert tokenizer.chars == _texts(tiny())[2].chars
    # the same weights scored on the training corpus's validation text too (Figure 4: both texts)
    home = summary["variants"]["rope [shakespeare]"]["loss"]
    assert set(home) == {"64", "128"} and "passkey" not in summary["variants"]["rope [shakespeare]"]
    from minifope.lengthgen import loss_by_length

    model, tokenizer, _, _ = load_checkpoint(tmp_path / "exp/runs/rope/seed0")
    by_hand = loss_by_length(model, tokenizer.encode(load_corpus("shakespeare")[1]), [64, 128], 256)
    assert home["128"]["mean"] == pytest.approx(by_hand[128]["loss"])
    assert home["128"]["mean"] != pytest.approx(loss["128"]["mean"])  # another text, another loss
    # a report written later from the finished runs (--report-to) says the same
    again = report_finished(tiny(), tmp_path / "exp", tmp_path / "report")
    assert again["eval_text"] == summary["eval_text"]
    assert again["variants"]["rope [shakespeare]"]["loss"]["128"]["mean"] == home["128"]["mean"]
    assert "never occur in the training text" in (tmp_path / "report/results.md").read_text()


def test_paired_differences_compare_rows_on_one_text_or_one_model_on_both_never_across():
    from minifope.experiment import _comparable_pairs

    rows = ["rope", "rope [shakespeare]", "alibi", "alibi [shakespeare]", "nope", "nope [shakespeare]"]
    assert _comparable_pairs(rows, tiny()) == [
        ("rope", "rope [shakespeare]"), ("rope", "alibi"), ("rope", "nope"),
        ("rope [shakespeare]", "alibi [shakespeare]"), ("rope [shakespeare]", "nope [shakespeare]"),
        ("alibi", "alibi [shakespeare]"), ("alibi", "nope"),
        ("alibi [shakespeare]", "nope [shakespeare]"), ("nope", "nope [shakespeare]")]
    # one corpus: every pair, as before
    assert _comparable_pairs(["rope", "alibi", "nope"], tiny(eval_data=None)) == [
        ("rope", "alibi"), ("rope", "nope"), ("alibi", "nope")]


def test_a_run_trained_without_the_evaluation_corpus_is_refused_not_reused(tmp_path):
    out = tmp_path / "exp"
    run_experiment(tiny(eval_data=None), out, progress=False, jobs=1)
    (out / "experiment.json").unlink()
    with pytest.raises(UserError, match=r"runs/rope/seed0 holds a run of another config \(vocabulary: "
                                        r"checkpoint 74 characters, asked 96"):
        run_experiment(tiny(), out, progress=False, jobs=1)


def test_the_command_line_trains_on_shakespeare_and_evaluates_on_pydoc(tmp_path):
    import subprocess

    out = tmp_path / "exp"
    flags = ["--pe", "rope", "--seeds", "1", "--d-model", "16", "--n-layer", "1", "--n-head", "2",
             "--train-len", "128", "--steps", "4", "--batch-size", "4", "--lengths", "1", "2",
             "--passkey-lengths", "1", "--prompts", "1", "--eval-chars", "512", "--jobs", "1", "--quiet"]
    done = subprocess.run([sys.executable, "-m", "minifope", "experiment", "--out", str(out), "--data",
                           "shakespeare", "--eval-data", "pydoc", *flags], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Loss evaluated on pydoc" in done.stdout
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["variants"]["rope"]["loss"]) == {"128", "256"}
    assert summary["eval_text"]["untrained"]["{"] == pydoc_text().count("{")
