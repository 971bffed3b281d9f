"""Subword tokens: a byte-level BPE trained on the training text (Hugging Face `tokenizers`).

Character level is minifope's default (data.CharTokenizer). A BPE tokenizer puts several
characters in one token, so a window of N tokens holds more text than N characters: the
paper's models read subword tokens, and this is how minifope's can too.

    BPETokenizer.train(text, vocab_size=512)

learns merges on `text` locally, in seconds, with nothing downloaded:

- byte level (the GPT-2 scheme): the text's UTF-8 bytes are the 256 base symbols, so every
  text can be encoded, also characters the training text never had, and
  decode(encode(text)) == text for every text (tested);
- the text is first split as GPT-2 splits it (words with their leading space, runs of
  digits, punctuation), and merges never cross those splits; BpeTrainer then merges the most
  frequent pair until vocab_size tokens exist (256 bytes + vocab_size - 256 merges);
- the same text and vocab_size give the same tokenizer (tested), so a run can be repeated.

A checkpoint stores the tokenizer as JSON in vocab.json, {"bpe": <the tokenizers library's
own JSON of the tokenizer>}, never a pickle; `from_json` checks it is a byte-level BPE before
using it, and a damaged or foreign one is refused with one line (UserError).

Decoding ids that do not form whole UTF-8 characters (a model can write them) gives U+FFFD
in their place, as bytes.decode(errors="replace") does.
"""

import json

import numpy as np

from .errors import UserError

MIN_VOCAB = 257  # the 256 bytes and at least one merge
MAX_VOCAB = 65536
MAX_JSON_CHARS = 16 * 2**20  # a tokenizer of 65536 tokens is about 3 MB of JSON


def _library():
    try:
        import tokenizers
    except ImportError:
        raise UserError("subword tokens need the `tokenizers` package: pip install tokenizers "
                        "(the README's install includes it)") from None
    return tokenizers


def check_vocab_size(vocab_size):
    """The BPE vocabulary size, or UserError: an integer in [MIN_VOCAB, MAX_VOCAB]."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) \
            or not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise UserError(f"a BPE vocabulary size must be an integer from {MIN_VOCAB} (the 256 bytes and "
                        f"one merge) to {MAX_VOCAB}, got {vocab_size!r}")
    return int(vocab_size)


class BPETokenizer:
    """encode(text) -> int64 ids, decode(ids) -> text, vocab_size, to_json / from_json:
    the interface of data.CharTokenizer, over byte-level BPE tokens."""

    kind, unit = "bpe", "token"

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)

    @classmethod
    def train(cls, text, vocab_size=512):
        """A byte-level BPE of vocab_size tokens learned on `text` (a str)."""
        vocab_size = check_vocab_size(vocab_size)
        if not isinstance(text, str) or not text:
            raise UserError("a BPE tokenizer is trained on a non-empty text")
        tk = _library()
        tokenizer = tk.Tokenizer(tk.models.BPE())
        tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        lines = text.splitlines(keepends=True)  # the trainer counts words; lines stream them in
        tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
        return cls(tokenizer)

    def encode(self, text):
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, not {type(text).__name__}")
        if not text:
            return np.zeros(0, dtype=np.int64)
        # by line, in parallel inside the library: one call on millions of characters is slower
        lines = text.splitlines(keepends=True)
        ids = [e.ids for e in self._tokenizer.encode_batch(lines, add_special_tokens=False)]
        return np.fromiter((i for row in ids for i in row), dtype=np.int64)

    def decode(self, ids):
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
        return self._tokenizer.decode(ids.tolist(), skip_special_tokens=False)

    def to_json(self):
        return json.dumps({"bpe": self._tokenizer.to_str()})

    @classmethod
    def from_json(cls, text):
        """The tokenizer of to_json's text, or UserError (damaged, foreign, too large)."""
        def refuse(why):
            return UserError(f"the BPE tokenizer in the checkpoint is {why}; the checkpoint is damaged "
                             "or from another program")

        if not isinstance(text, str) or len(text) > MAX_JSON_CHARS:
            raise refuse(f"larger than {MAX_JSON_CHARS} characters" if isinstance(text, str) else "not text")
        try:
            inner = json.loads(text)["bpe"]
            spec = json.loads(inner)
        except (json.JSONDecodeError, TypeError, KeyError):
            raise refuse('not JSON of the form {"bpe": "<tokenizer JSON>"}') from None
        if not isinstance(spec, dict) or (spec.get("model") or {}).get("type") != "BPE" \
                or (spec.get("pre_tokenizer") or {}).get("type") != "ByteLevel" \
                or (spec.get("decoder") or {}).get("type") != "ByteLevel":
            raise refuse("not a byte-level BPE")
        tk = _library()
        try:
            tokenizer = tk.Tokenizer.from_str(inner)
        except Exception as e:  # the library raises its own exception types for any malformed field
            raise refuse(f"unreadable ({str(e).splitlines()[0][:200]})") from None
        vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
            raise refuse(f"of {vocab_size} tokens, outside [{MIN_VOCAB}, {MAX_VOCAB}]")
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        if sorted(vocab.values()) != list(range(vocab_size)):
            raise refuse("numbered with gaps")
        return cls(tokenizer)


def tokenizer_from_json(text):
    """A checkpoint's vocab.json -> CharTokenizer ({"chars": ...}) or BPETokenizer ({"bpe": ...})."""
    from .data import CharTokenizer

    try:
        kind = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        kind = None
    if isinstance(kind, dict) and "bpe" in kind:
        return BPETokenizer.from_json(text)
    return CharTokenizer.from_json(text)
