"""The second corpus, pydoc (the Python language reference from the standard library)."""

import hashlib
import socket
import sys

import pytest

from minifope import data
from minifope.data import (CORPORA, PYDOC_SHA256, clean_pydoc, load_corpus, load_eval_text, pydoc,
                           pydoc_text, shakespeare)
from minifope.errors import UserError

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
