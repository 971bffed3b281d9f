import re

import numpy as np
import pytest

from minifope.data import (CharTokenizer, _clean_play, get_batch, load_text, shakespeare,
                           split_text)
from minifope.errors import UserError

SPEAKER = re.compile(r"[A-Z][A-Z '&.,-]*:")


@pytest.fixture(scope="module")
def corpus():
    return shakespeare()


def test_cleaning_keeps_speeches_and_drops_markup_headings_and_directions():
    markdown = (
        "# Macbeth\n\n## ACT I\n\n### SCENE I. A desert place.\n\n"
        "_Thunder and lightning. Enter three Witches_\n\n"
        "**First Witch**  \nWhen shall we three meet again  \n"
        "In thunder, lightning, or in rain?\n\n"
        "**DUNCAN**  \n_\\[Aside]_  \nSo well thy words\u2014so well\\--become thee.\n\n"
        "_Exit Sergeant, attended,\nand others_\n\nWho comes here?\n\n"
        "SONG.\n\nBISHOP\n\n**OF WINCHESTER**  \nHe was a king bless'd.  \n[Within]_  \n"
        "Ghost\n\n**of Rivers**  \nDespair, and die!\n"
    )
    assert _clean_play(markdown) == [
        "FIRST WITCH:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?",
        "DUNCAN:\nSo well thy words--so well--become thee.\nWho comes here?",
        "BISHOP OF WINCHESTER:\nHe was a king bless'd.",
        "GHOST OF RIVERS:\nDespair, and die!",
    ]


def test_every_speech_is_a_name_line_then_its_lines(corpus):
    for text in corpus:
        speeches = text.rstrip("\n").split("\n\n")
        assert len(speeches) > 1000
        for speech in speeches:
            name, *lines = speech.split("\n")
            assert SPEAKER.fullmatch(name), name
            assert lines and all(lines), speech


def test_corpus_has_no_markdown_left(corpus):
    for text in corpus:
        for mark in ("**", "#", "_", "[", "]", "\\", "\u2014"):
            assert mark not in text
        assert not re.search(r"[ \t]+$", text, re.MULTILINE)


def test_vocabulary_is_small_printable_ascii_and_val_needs_nothing_new(corpus):
    train, val = corpus
    chars = set(train)
    assert 60 <= len(chars) <= 80
    assert all(c == "\n" or " " <= c <= "~" for c in chars)
    assert set(val) <= chars


def test_corpus_size_and_val_share(corpus):
    train, val = corpus
    assert 4_500_000 < len(train) + len(val) < 5_100_000
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.12


def test_val_plays_are_held_out_of_train(corpus):
    train, val = corpus
    for line in ("When shall we three meet again", "If music be the food of love"):
        assert line in val and line not in train
    assert "Now is the winter of our discontent" in train
    train_lines, val_lines = ({line for line in text.split("\n") if len(line) >= 40}
                              for text in corpus)
    assert not train_lines & val_lines


def test_shakespeare_is_cached(corpus):
    assert shakespeare() is corpus


def test_tokenizer_round_trips_text(corpus):
    text = corpus[1][:5000]
    tok = CharTokenizer.from_text(corpus[0])
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert 0 <= ids.min() and ids.max() < tok.vocab_size
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode("")) == ""


def test_tokenizer_ids_follow_sorted_characters():
    tok = CharTokenizer.from_text("banana\n")
    assert tok.chars == "\nabn" and tok.vocab_size == 4
    assert tok.encode("nab").tolist() == [3, 1, 2]


def test_encode_error_names_each_unknown_character_once():
    tok = CharTokenizer.from_text("hello world")
    with pytest.raises(UserError) as err:
        tok.encode("hello\twörld éé")
    assert str(err.value) == "characters not in the vocabulary: '\\t', 'é', 'ö'"


def test_tokenizer_json_round_trip():
    tok = CharTokenizer.from_text("To be, or not to be:\n'tis é\t\"quoted\"")
    back = CharTokenizer.from_json(tok.to_json())
    assert back.chars == tok.chars
    assert back.encode("be é").tolist() == tok.encode("be é").tolist()


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '"ab"', '{"vocab": "ab"}',
                                  '{"chars": 5}', '{"chars": ""}', '{"chars": "aab"}'])
def test_malformed_tokenizer_json_is_a_user_error(text):
    with pytest.raises(UserError):
        CharTokenizer.from_json(text)


def test_get_batch_shapes_dtype_and_shift():
    data = np.arange(1000)
    x, y = get_batch(data, 4, 16, np.random.default_rng(0))
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == np.int64
    assert (np.diff(x, axis=1) == 1).all()  # each row is one contiguous window
    assert (y == x + 1).all()


def test_get_batch_is_deterministic_given_the_seed():
    data = np.arange(1000)
    a = get_batch(data, 8, 16, np.random.default_rng(7))
    b = get_batch(data, 8, 16, np.random.default_rng(7))
    c = get_batch(data, 8, 16, np.random.default_rng(8))
    assert all((p == q).all() for p, q in zip(a, b))
    assert not (a[0] == c[0]).all()


def test_get_batch_reaches_both_ends_of_the_data():
    data = np.arange(10)
    x, y = get_batch(data, 500, 9, np.random.default_rng(0))
    assert (x == np.arange(9)).all() and (y == np.arange(1, 10)).all()
    x, _ = get_batch(data, 500, 3, np.random.default_rng(0))
    assert x.min() == 0 and x.max() == 8


def test_get_batch_on_too_short_data_says_how_long_it_is():
    with pytest.raises(UserError, match=r"9 tokens long.*block_size=9.*at least 10"):
        get_batch(np.arange(9), 2, 9, np.random.default_rng(0))


def test_load_text_reads_utf8_dropping_bom_and_windows_line_ends(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_bytes("\ufeffO Romeo,\r\nwherefore art thou — é\r\n".encode("utf-8"))
    assert load_text(path) == "O Romeo,\nwherefore art thou — é\n"
    assert load_text(str(path)) == load_text(path)


@pytest.mark.parametrize("case, content, message", [
    ("missing", None, "does not exist"),
    ("directory", None, "is a directory"),
    ("empty", b"", "is empty"),
    ("blank", b" \n\n\t\n", "is empty"),
    ("binary", b"PK\x03\x04\x00\x00text", "binary"),
    ("latin-1", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8"),
])
def test_load_text_errors_name_the_file_and_the_problem(tmp_path, case, content, message):
    path = tmp_path / case
    if case == "directory":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserError) as err:
        load_text(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_split_text_holds_out_the_last_fraction():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = split_text(text, 0.1)
    assert (len(train), len(val)) == (900, 100)
    assert train + val == text and val == text[-100:]


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_split_text_rejects_fractions_outside_zero_one(fraction):
    with pytest.raises(UserError):
        split_text("some text", fraction)


def test_split_text_rejects_text_too_short_to_split():
    with pytest.raises(UserError, match="too short"):
        split_text("ab", 0.1)


def test_get_batch_inputs_and_targets_do_not_share_memory():
    data = np.arange(100)
    x, y = get_batch(data, 4, 10, np.random.default_rng(0))
    before = x.copy()
    y[:] = -1
    np.testing.assert_array_equal(x, before)
