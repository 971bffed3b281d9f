"""Passkey retrieval in characters or subword tokens (fope-spec section 6), scaled to short windows.

The prompt is the landmark-attention format the FoPE authors evaluated with: five parts
joined by newlines, as their generator joins its five lines,

    TASK + "\\n" + filler[:a] + "\\n" + NEEDLE + "\\n" + filler[:b] + "\\n" + QUESTION

with the literal strings

    AUTHORS_TASK = "There is an important info hidden inside a lot of irrelevant text.
                    Find it and memorize it. I will quiz you about the important
                    information there."                      (one line, 146 characters)
    TASK         = "Find the pass key."                      (the default, 18 characters)
    filler       = FILLER + " " + FILLER + " " + ...  cut to a or b characters, where
    FILLER       = "The grass is green. The sky is blue. The sun is yellow. Here we go.
                    There and back again."                   (one line)
    NEEDLE       = "The pass key is NNNNN. Remember it. NNNNN is the pass key."  (NNNNN the key)
    QUESTION     = "What is the pass key? The pass key is"

and the answer " NNNNN." is what should follow. Both filler parts start at the beginning
of the sentence stream, as in the authors' code; a part of length 0 leaves an empty line.
The model's greedy continuation is scored by its first number.

Why a short task line by default: the authors count in subword tokens, where their task
line is about 30 of 512. Counted in characters it is 146: a prompt with it needs at least
245 characters, so a 128-character window cannot hold one and a 256-character window has
room for 11 characters of filler. With TASK the minimum is 117 (for 5-digit keys). Every
function takes `task=`; pass AUTHORS_TASK for the original.

Depth: with F = length - (the fixed parts and the 4 newlines) filler characters in all,
a = round(depth * F) go before the needle and b = F - a after it; depth 0 puts the needle
right after the task line, depth 1 right before the question, with the empty filler part
as an empty line between them.

Distance: the lab places the needle by distance rather than depth. The distance is the
number of characters from the key's first digit in the needle to the end of the prompt,
where the model starts writing the answer: how far back it must look. With no filler after
the needle it is min_distance() (81 for 5-digit keys: the rest of the needle, a newline, an
empty filler line, a newline and the question); each character of filler after the needle
adds one, up to the whole prompt but the task line (max_distance). make_prompt_at_distance
builds such a prompt, distance_grid chooses the distances of a window, and
passkey_by_distance scores a fresh key per prompt at every (length, distance).

Tokens: everything above counts characters, the default. With a BPE tokenizer the same
parts are joined as token ids and every length and distance counts tokens (Layout says how
a key is written one digit per token, so every prompt of a length has one layout); the
answer is read back as text. The functions on strings (make_prompt, ...) are in characters;
the ones that take a tokenizer (passkey_examples, retrieved, passkey_by_distance, ...)
count in its units.

Keys: the authors draw 1..50000, so their keys have 1 to 5 digits. Here a key has exactly
`key_digits` digits, uniform over 10^(key_digits-1) .. 10^key_digits - 1 (10000..99999 for
5 digits), so every prompt of one length has the same layout and every answer the same
length.
"""

import re

import numpy as np

from .errors import UserError
from .progress import progress_bar
from .sample import generate

AUTHORS_TASK = ("There is an important info hidden inside a lot of irrelevant text. "
                "Find it and memorize it. I will quiz you about the important information there.")
TASK = "Find the pass key."
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"

_NUMBER = re.compile(r"[0-9]+")
_UNSET = object()

# The lab's prompts: the probe set, scored during training, has keys of its own (drawn from
# PROBE_SEED, then never drawn for an evaluation prompt); the evaluation draws a fresh key
# per prompt from default_rng([EVAL_SEED, seed]), so one seed gives every model the same prompts.
PROBE_SEED, PROBE_PROMPTS = 4321, 32
EVAL_SEED = 1234


def _check_key_digits(key_digits):
    if not isinstance(key_digits, int) or isinstance(key_digits, bool) or key_digits < 1:
        raise UserError(f"key_digits must be a positive integer, got {key_digits!r}")


class Layout:
    """A passkey prompt's parts as the ids of one tokenizer, and the lengths they give.

    Every length and distance of a Layout counts the tokenizer's units: characters for
    data.CharTokenizer, tokens for a bpe.BPETokenizer; Layout(None) counts characters and
    its ids are the characters' code points (what make_prompt and the other functions on
    strings use). The prompt is the parts' ids joined,

        enc(task) nl filler[:a] nl enc(BEFORE) key enc(MIDDLE) key enc(AFTER) nl filler[:b] nl enc(QUESTION)

    with nl = enc("\\n"), key = enc(" ") + one id per digit, NEEDLE = BEFORE + " {key}" +
    MIDDLE + " {key}" + AFTER, and filler = enc(FILLER) + enc(" " + FILLER) + enc(" " + FILLER)
    + ... cut to a or b ids. With characters this is exactly the module docstring's string.
    With BPE tokens two choices keep the layout the same for every key:

    - a key is written one digit per token, after a token of its own for the space, as the
      Llama tokenizer the FoPE authors used writes numbers; byte-level BPE would merge a
      digit run into tokens whose count depends on the key. So a key takes key_digits + 1
      tokens and the answer " NNNNN." key_digits + 2, whatever the key;
    - no token spans two parts, so a filler part holds exactly a or b tokens and a needle
      distance is exact in tokens (a cut filler may end inside a word, as it does in
      characters). Decoding the ids gives back the prompt's text.
    """

    def __init__(self, tokenizer=None, key_digits=5, task=TASK):
        _check_key_digits(key_digits)
        self.tokenizer, self.key_digits, self.task = tokenizer, key_digits, task
        before, middle, after = NEEDLE.split(" {key}")
        self.task_ids, self.question = self.encode(task), self.encode(QUESTION)
        self.before, self.middle, self.after = self.encode(before), self.encode(middle), self.encode(after)
        self.nl, self.space, self.period = (self._one(c) for c in ("\n", " ", "."))
        self.digits = np.array([self._one(str(d)) for d in range(10)])
        self.filler_head, self.filler_tail = self.encode(FILLER), self.encode(" " + FILLER)
        self.needle_length = len(self.before) + len(self.middle) + len(self.after) + 2 * (key_digits + 1)
        self.key_offset = len(self.before) + 1  # the key's first digit within the needle
        # the shortest prompt (no filler at all) and the distance of a needle with no filler after it
        self.min_prompt_length = len(self.task_ids) + self.needle_length + len(self.question) + 4
        self.min_distance = self.needle_length - self.key_offset + 2 + len(self.question)

    def encode(self, text):
        if self.tokenizer is None:
            return np.array([ord(c) for c in text], dtype=np.int64)
        return np.asarray(self.tokenizer.encode(text), dtype=np.int64)

    def _one(self, char):
        ids = self.encode(char)
        if len(ids) != 1:  # a byte-level BPE has a token for every byte; a vocabulary of characters too
            raise UserError(f"the tokenizer writes {char!r} as {len(ids)} tokens, not one: passkey "
                            "prompts need one token for each digit, the space, the period and the newline")
        return int(ids[0])

    def text(self, ids):
        """The text of ids: the characters of code points for Layout(None), else the tokenizer's decode."""
        if self.tokenizer is None:
            return "".join(map(chr, ids))
        return self.tokenizer.decode(ids)

    def filler(self, n):
        """The first n ids of FILLER + " " + FILLER + " " + ..."""
        repeats = max(0, n - len(self.filler_head)) // len(self.filler_tail) + 1
        return np.concatenate([self.filler_head, *[self.filler_tail] * repeats])[:n]

    def key(self, key):
        """The ids of " " + key: a space token, then one token per digit."""
        key = _key(key)
        if len(key) != self.key_digits:
            raise UserError(f"a pass key of {len(key)} digits in a layout for {self.key_digits}-digit keys")
        return np.array([self.space, *self.digits[[int(d) for d in key]]], dtype=np.int64)

    def answer(self, key):
        """The ids of " " + key + ".", what should follow the prompt."""
        return np.append(self.key(key), self.period)

    def max_distance(self, length):
        """The distance of a needle right after the task line in a prompt of `length`."""
        return self.min_distance + length - self.min_prompt_length

    def prompt(self, length, key, *, depth=_UNSET, distance=_UNSET):
        """(ids, needle_start, key_start): a prompt of exactly `length` ids whose needle starts
        at needle_start and whose key's first digit is at key_start, placed either at `depth`
        (a fraction of the filler before the needle) or at `distance` (length - key_start)."""
        if (depth is _UNSET) == (distance is _UNSET):
            raise ValueError("give the needle's depth or its distance, one of them")
        key_ids = self.key(key)
        if length < self.min_prompt_length:
            raise UserError(f"a passkey prompt of {length} {self.unit}s is too short: with a "
                            f"{self.key_digits}-digit key and a {len(self.task_ids)}-{self.unit} task "
                            f"line it needs at least {self.min_prompt_length}")
        n_filler = length - self.min_prompt_length
        if depth is not _UNSET:
            if not 0 <= depth <= 1:
                raise UserError(f"depth is a fraction of the filler in [0, 1], got {depth}")
            before = round(depth * n_filler)
        else:
            low, high = self.min_distance, self.max_distance(length)
            if not (isinstance(distance, (int, np.integer)) and low <= distance <= high):
                raise UserError(f"a needle distance in a {length}-{self.unit} prompt must be an integer "
                                f"in {low}..{high}, got {distance!r}")
            before = n_filler - (distance - low)
        nl = [self.nl]
        ids = np.concatenate([self.task_ids, nl, self.filler(before), nl, self.before, key_ids, self.middle,
                              key_ids, self.after, nl, self.filler(n_filler - before), nl, self.question])
        needle_start = len(self.task_ids) + 1 + before + 1
        return ids, needle_start, needle_start + self.key_offset

    @property
    def unit(self):
        return "character" if self.tokenizer is None else self.tokenizer.unit


def min_prompt_length(key_digits=5, task=TASK, tokenizer=None):
    """The shortest prompt that holds the fixed parts, no filler at all: in characters, or in
    the tokenizer's units (Layout)."""
    return Layout(tokenizer, key_digits, task).min_prompt_length


def make_prompt(length, depth, key, task=TASK):
    """(prompt, needle_start): a prompt of exactly `length` characters ending with QUESTION,
    the needle holding `key` (a string of digits) starting at index needle_start.

    needle_start = len(task) + 1 + round(depth * F) + 1, F the filler characters in all.
    """
    layout = Layout(None, len(_key(key)), task)
    ids, needle_start, _ = layout.prompt(length, key, depth=depth)
    return layout.text(ids), needle_start


def _key(key):
    key = str(key)
    if not _NUMBER.fullmatch(key):
        raise UserError(f"a pass key is a string of digits, got {key!r}")
    return key


def draw_keys(rng, n, key_digits=5, exclude=()):
    """n random keys, strings of exactly key_digits digits with no leading zero.

    Uniform over 10^(key_digits-1) .. 10^key_digits - 1 less the keys in `exclude` (drawn
    again until one is not); the authors' 1..50000 would give keys of different lengths
    (see the module docstring).
    """
    _check_key_digits(key_digits)
    low, high = 10 ** (key_digits - 1), 10 ** key_digits
    exclude = set(exclude)
    if sum(1 for k in exclude if _NUMBER.fullmatch(k) and low <= int(k) < high) >= high - low:
        raise UserError(f"no {key_digits}-digit key is left to draw once {len(exclude)} are excluded")
    keys = []
    while len(keys) < n:
        keys += [k for k in map(str, rng.integers(low, high, size=n - len(keys))) if k not in exclude]
    return keys


def has_repeated_digit(key):
    """Whether some digit occurs twice in the key ('12315' yes, '12345' no)."""
    return len(set(key)) < len(key)


def probe_keys(key_digits=5):
    """The probe set's PROBE_PROMPTS keys, always the same; evaluation prompts never use them."""
    return draw_keys(np.random.default_rng(PROBE_SEED), PROBE_PROMPTS, key_digits)


def min_distance(key_digits=5, tokenizer=None):
    """The distance of a needle with no filler after it (see the module docstring)."""
    return Layout(tokenizer, key_digits).min_distance


def max_distance(length, key_digits=5, task=TASK, tokenizer=None):
    """The distance of a needle right after the task line in a prompt of `length`."""
    return Layout(tokenizer, key_digits, task).max_distance(length)


def make_prompt_at_distance(length, distance, key, task=TASK):
    """(prompt, key_start): a prompt of exactly `length` characters whose key's first digit,
    at index key_start, is `distance` characters before its end: length - key_start = distance.

    distance = min_distance + b, b the filler characters after the needle; the filler before
    it takes the rest. Any distance in min_distance .. max_distance(length) is allowed.
    """
    layout = Layout(None, len(_key(key)), task)
    ids, _, key_start = layout.prompt(length, key, distance=distance)
    return layout.text(ids), key_start


def distance_range(length, key_digits=5, task=TASK, tokenizer=None):
    """(shortest, longest) needle distance in a window of `length`: min_distance and the
    whole prompt but its task line."""
    layout = Layout(tokenizer, key_digits, task)
    return layout.min_distance, layout.max_distance(prompt_length(length, key_digits))


def distance_grid(length, train_len, key_digits=5, task=TASK, tokenizer=None):
    """The needle distances scored in a window of `length`: the shortest (min_distance), each
    of N/2, N, 2N, 4N, ... that lies between, and the longest (the whole prompt but its task
    line), so every length has distances below N and one as far as the window allows.
    Characters, or the tokenizer's units."""
    low, high = distance_range(length, key_digits, task, tokenizer)
    middle, d = [], max(1, train_len // 2)
    while d < high:
        if d > low:
            middle.append(d)
        d *= 2
    return sorted({low, *middle, high})


def retrieved(model, tokenizer, length, distances, keys, task=TASK):
    """(len(keys),) bool: whether the greedy answer's first number is the key, for prompts in a
    window of `length` with key i at distances[i]. One batch through the KV cache."""
    key_digits = len(keys[0])
    layout = Layout(tokenizer, key_digits, task)
    prompt_len = prompt_length(length, key_digits)
    idx = np.stack([layout.prompt(prompt_len, key, distance=int(d))[0] for d, key in zip(distances, keys)])
    out = generate(model, idx, key_digits + 2, temperature=0, window=length)
    return np.array([first_number(tokenizer.decode(row)) == k for row, k in zip(out[:, prompt_len:], keys)])


def probe_accuracy(model, tokenizer, train_len, key_digits=5, task=TASK):
    """Passkey accuracy at N on the probe set: PROBE_PROMPTS prompts with probe_keys(), their
    distances evenly spread from the shortest to the longest. What the lab logs during training."""
    keys = probe_keys(key_digits)
    low, high = distance_range(train_len, key_digits, task, tokenizer)
    distances = np.round(np.linspace(low, high, len(keys))).astype(int)
    return float(retrieved(model, tokenizer, train_len, distances, keys, task).mean())


def passkey_by_distance(model, tokenizer, lengths, train_len, prompts, seed, key_digits=5, task=TASK,
                        progress=True):
    """Passkey retrieval at every length and every distance_grid distance, `prompts` prompts
    per (length, distance) cell, each with a key drawn fresh (uniform, never a probe key) from
    default_rng([EVAL_SEED, seed]). Returns {"lengths", "distances" (per length), "keys" and
    "correct" (per length, per distance, per prompt; correct is 0 or 1)}."""
    if not isinstance(prompts, int) or isinstance(prompts, bool) or prompts < 1:
        raise UserError(f"prompts must be a positive integer, got {prompts!r}")
    rng = np.random.default_rng([EVAL_SEED, seed])
    probe = probe_keys(key_digits)
    grids = [distance_grid(L, train_len, key_digits, task, tokenizer) for L in lengths]
    result = dict(lengths=list(lengths), distances=grids, keys=[], correct=[])
    with progress_bar(progress, sum(map(len, grids)), "passkey", "cell") as bar:
        for L, distances in zip(lengths, grids):
            keys_L, correct_L = [], []
            for d in distances:
                keys = draw_keys(rng, prompts, key_digits, exclude=probe)
                keys_L.append(keys)
                correct_L.append(retrieved(model, tokenizer, L, [d] * prompts, keys, task).astype(int).tolist())
                bar.update()
            result["keys"].append(keys_L)
            result["correct"].append(correct_L)
    return result


def prompt_length(length, key_digits=5):
    """The prompt's characters (or tokens) in a window of `length`: length - key_digits - 1.

    The window holds the prompt and the answer " NNNNN" but its final ".", which is only
    ever a target: in training the last entry of y, in evaluation the last character
    (token) written; in tokens too the answer is key_digits + 2 of them (Layout).
    passkey_examples and passkey_accuracy both lay out a window this way, so evaluation at
    train_len puts every character (token) where training put it.
    """
    return length - key_digits - 1


def passkey_examples(rng, n, length, tokenizer, key_digits=5, task=TASK, loss="all"):
    """(x, y), each (n, length) int64: passkey rows to mix into training batches.

    Each row's text is a prompt of prompt_length(length, key_digits) characters (tokens,
    with a BPE tokenizer: Layout), its needle at a depth uniform in [0, 1], then the answer
    " " + key + ".": length + 1 ids, x = ids[:-1], y = ids[1:]. With loss="answer" every target but the answer's
    key_digits + 2 characters is -1, which the loss ignores; loss="keys" also keeps the
    targets of the needle's second copy of the key (a copy over a short distance, the
    same skill as the answer's copy over a long one); with loss="all" the model also
    learns to predict the task line, filler, needle and question.
    """
    if loss not in ("all", "answer", "keys"):
        raise UserError(f"loss must be 'all', 'answer' or 'keys', got {loss!r}")
    layout = Layout(tokenizer, key_digits, task)
    minimum = layout.min_prompt_length + key_digits + 1
    answer_len = key_digits + 2  # " " + key + "."
    if length < minimum:
        raise UserError(f"passkey training rows of {length} {layout.unit}s are too short: with a "
                        f"{key_digits}-digit key and a {len(layout.task_ids)}-{layout.unit} task line "
                        f"they need at least {minimum}")
    keys = draw_keys(rng, n, key_digits)
    depths = rng.random(n)
    prompts = [layout.prompt(prompt_length(length, key_digits), key, depth=depth)
               for depth, key in zip(depths, keys)]
    ids = np.stack([np.append(p, layout.answer(key)) for (p, _, _), key in zip(prompts, keys)])
    x, y = ids[:, :-1], ids[:, 1:].copy()
    if loss in ("answer", "keys"):
        keep = np.zeros(y.shape, dtype=bool)
        keep[:, -answer_len:] = True
        if loss == "keys":
            # The needle's second copy of the key: y[:, p - 1] is the target for text[p].
            for row, (_, _, key_start) in enumerate(prompts):
                second = key_start + key_digits + len(layout.middle) + 1  # past the key, MIDDLE, the space
                keep[row, second - 1:second - 1 + key_digits] = True
        y[~keep] = -1
    return x, y


def first_number(text):
    """The first run of digits in text, as a string ("007" stays "007"); None if there is none."""
    match = _NUMBER.search(text)
    return match.group() if match else None


def score(continuations, keys):
    """The share of continuations whose first number is their key (strings, one per row)."""
    if len(continuations) != len(keys):
        raise ValueError(f"{len(continuations)} continuations for {len(keys)} keys")
    return float(np.mean([first_number(c) == k for c, k in zip(continuations, keys)]))


def passkey_accuracy(model, tokenizer, length, depths, trials, seed, key_digits=5, task=TASK,
                     progress=False):
    """Accuracy (len(depths),): for each depth, the share of `trials` prompts whose greedy
    continuation's first number is the key.

    `length` is the window the model reads, as for a training row of passkey_examples: a
    prompt of prompt_length(length, key_digits) characters, then the answer " NNNNN" that
    the model writes; the final "." of the answer is predicted at the window's last position
    and never read back. So at length = train_len every character sits at the position it
    has in training. The keys come from default_rng(seed) and are the same at every depth
    (and, for one seed, at every length), so cells differ only in where the needle sits.
    The rows of a depth go through the model as one batch, decoded greedily through the KV
    cache with a window of `length`: nothing of the prompt is ever cropped (long prompts
    take the chunked attention path by themselves).
    """
    if not isinstance(trials, int) or trials < 1:
        raise UserError(f"trials must be a positive integer, got {trials!r}")
    prompt_len = prompt_length(length, key_digits)
    layout = Layout(tokenizer, key_digits, task)
    keys = draw_keys(np.random.default_rng(seed), trials, key_digits)
    accuracy = np.empty(len(depths))
    bar = progress_bar(progress, len(depths), f"passkey {length}", "depth")
    for i, depth in enumerate(depths):
        idx = np.stack([layout.prompt(prompt_len, key, depth=depth)[0] for key in keys])
        out = generate(model, idx, key_digits + 2, temperature=0, window=length)
        accuracy[i] = score([tokenizer.decode(row) for row in out[:, prompt_len:]], keys)
        bar.update()
    bar.close()
    return accuracy


def needle_grid(model, tokenizer, lengths, depths, trials, seed, key_digits=5, task=TASK,
                progress=True):
    """Accuracy (len(lengths), len(depths)): passkey_accuracy for every length and depth.

    Every cell uses the same `trials` keys. Accuracy by length is grid.mean(axis=1).
    """
    grid = np.empty((len(lengths), len(depths)))
    with progress_bar(progress, grid.size, "needle grid", "cell") as bar:
        for i, length in enumerate(lengths):
            for j, depth in enumerate(depths):
                grid[i, j] = passkey_accuracy(model, tokenizer, length, [depth], trials, seed,
                                              key_digits, task)[0]
                bar.update()
    return grid


def plot_needle_grid(grid, lengths, depths, *, trials, ax=None, title=None):
    """Heatmap of a needle_grid: lengths on x, depth on y (0 at the top, as in the prompt),
    each cell's accuracy written in it; the title states the trials per cell. Returns ax.

    Without ax it draws on a new matplotlib Figure (no pyplot, so any backend works);
    show it with ax.figure in a notebook, or save it with ax.figure.savefig(path).
    """
    from matplotlib.figure import Figure

    grid = np.asarray(grid, dtype=float)
    if grid.shape != (len(lengths), len(depths)):
        raise ValueError(f"grid has shape {grid.shape}, but {len(lengths)} lengths and "
                         f"{len(depths)} depths need ({len(lengths)}, {len(depths)})")
    if ax is None:
        ax = Figure(figsize=(1.5 + 0.7 * len(lengths), 1.0 + 0.4 * len(depths)),
                    layout="constrained").subplots()
    image = ax.imshow(grid.T, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
    for i, j in np.ndindex(grid.shape):
        ax.text(i, j, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
    ax.set_xlabel("prompt length (characters)")
    ax.set_ylabel("needle depth")
    caption = f"passkey accuracy, {trials} trials per cell"
    ax.set_title(f"{title}\n{caption}" if title else caption)
    ax.figure.colorbar(image, ax=ax, label="accuracy")
    return ax
