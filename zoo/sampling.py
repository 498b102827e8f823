"""The sampler: words from a window model's logits function or a sequence model's stepper.

    words = sample(model.numpy_logits, vocab=vocab.chars, context=3, n=20, seed=0)
    words = sample(onnx_model.logits, vocab=onnx_model.vocab, context=3, n=20, seed=0)
    words = sample(model.stepper(), vocab=vocab.chars, context=16, n=20, seed=0)
    for text in sample_text(onnx_model.logits, ..., n=10**7): sys.stdout.write(text)

numpy only (no torch), so the onnxruntime side can use it.

The random numbers and the rule that turns logits into the next id are zoo.draw's: word
``i`` of seed ``s`` depends only on (s, i, the settings, the logits), not on ``n``, on how
words are batched, or on the backend.

A window model's word starts as T '.' ids and the prefix ids, and ends when id 0 ('.') is
drawn or at ``max_length`` characters (prefix included). A sequence model (a ``Stepper``) is
stepped from its zero state: position 0 takes '.', the next positions the prefix, and each
later position the id drawn at the one before; nothing before a position is computed again.
Its words end at '.', at ``max_length``, or when the context's T positions are used (T
characters at most). torch and onnxruntime logits differ only by
rounding, so the same seed gives the same words through both.

Words are made in chunks of at most ``CHUNK`` words, fewer for a sequence model with a large
state (``step_chunk``); a word that ends leaves its chunk's batch, so ``logits_fn`` only ever
sees rows still growing: memory is bounded whatever ``n``.
Within a chunk, words whose ids so far are the same are computed once while such groups are
few (every word at position 0, at most V groups at position 1, ...): a model computes each
row on its own, so the words, and the random numbers, are those of one row per word. A model
whose rows depend on each other (an int8 graph) sets ``batch_dependent = True`` and is never
grouped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from zoo.data import BOUNDARY, Vocab  # '.' (vocab[0]) ends a word and pads contexts
from zoo.draw import choose, keyed_uniforms, pick, uniforms, word_keys
from zoo.errors import ArtifactError, SpecError
from zoo.recipe import MAX_SEED
from zoo.stepstate import Stepper, entries_so_far, keep_rows, thread_buffers, write_entries

__all__ = ["sample", "sample_text", "uniforms", "pick", "step_chunk", "entries_so_far",
           "write_entries", "keep_rows", "LogitsFn", "Stepper", "BatchDependent", "BOUNDARY"]

WORKERS = 2  # chunks growing at once (threads): the model of one overlaps the numpy of another
CHUNK = 4096  # words per batch: amortises each call (1,024 cost small models up to 1.8x)
# a stepper's chunk is CHUNK halved until its state (fp32, every position) fits this: memory
# stays bounded for a large model, and a small one's caches stay nearer the CPU's caches
# (seq-transformer, 32 KiB a word: 2,048 words, 1.05-1.09x the CPU time of 4,096)
STATE_BYTES = 64 << 20
MAX_IDS = 1 << 24  # ids held per chunk (128 MiB of int64): shrinks the chunk for long words
MAX_LENGTH = MAX_IDS // 2  # a longer word would not fit a chunk of one row
SHARED = 0.75  # words are grouped by prefix while groups are at most this share of them (0: never)
MAX_LIST = 10_000_000  # words ``sample`` returns as one list; ``sample_text`` streams any n

LogitsFn = Callable[[np.ndarray], np.ndarray]
"""int64 contexts [B, T] -> float logits [B, V]."""


def sample(logits_fn: LogitsFn | Stepper, *, vocab: Sequence[str], context: int, n: int,
           seed: int = 0, start: int = 0, temperature: float = 1.0, top_k: int | None = None,
           prefix: str = "", max_length: int = 64) -> list[str]:
    """Words ``start`` .. ``start + n - 1``; each starts with ``prefix``, at most ``max_length``
    characters long.

    ``temperature`` divides the logits (lower is more conservative); ``top_k`` keeps only the
    k most likely characters at each step (``top_k=1`` is greedy). The returned words include
    the prefix and leave out the closing '.'; a word that reaches ``max_length`` is cut there.
    Bad settings raise SpecError; prefix characters outside the vocabulary raise DataError.
    """
    chars = _check(vocab, context, n, seed, start, temperature, top_k, prefix, max_length)
    if n > MAX_LIST:  # a list holds every word at once: stream larger requests instead
        raise SpecError(f"n must be at most {MAX_LIST:,} for a list of words, got {_short(n)}; "
                        "sample_text (or `zoo sample`) streams any number", "sampling")
    words: list[str] = []
    for grown in _chunks(logits_fn, chars, context, n, seed, start, temperature, top_k,
                         prefix, max_length):
        words.extend(_decode(grown, chars, prefix))
    return words


def sample_text(logits_fn: LogitsFn | Stepper, *, vocab: Sequence[str], context: int, n: int,
                seed: int = 0, start: int = 0, temperature: float = 1.0,
                top_k: int | None = None, prefix: str = "",
                max_length: int = 64) -> Iterator[str]:
    """The words of ``sample``, streamed: one string per chunk, each word followed by '\\n'.

    Memory stays bounded for any ``n``; nothing is joined word by word in Python.
    """
    chars = _check(vocab, context, n, seed, start, temperature, top_k, prefix, max_length)
    points = np.array([ord("\n")] + [ord(c) for c in chars[1:]], np.uint32)  # id 0 -> '\n'
    head = Vocab(chars).encode(prefix, what="prefix")  # nonzero ids
    for grown in _chunks(logits_fn, chars, context, n, seed, start, temperature, top_k,
                         prefix, max_length):
        rows, width = grown.shape
        # (rows, P + width + 1): the prefix, the drawn ids, and a final 0 for words cut at
        # max_length; each row is kept up to and including its first 0 (its '\n')
        full = np.zeros((rows, len(head) + width + 1), np.int64)
        full[:, :len(head)] = head
        full[:, len(head):len(head) + width] = grown
        ended = full == 0  # (rows, W)
        keep = np.cumsum(ended, axis=1) - ended == 0  # (rows, W) before or at the first 0
        yield points[full[keep]].tobytes().decode("utf-32-le")


def _chunks(logits_fn: LogitsFn | Stepper, chars: tuple[str, ...], context: int, n: int, seed: int,
            start: int, temperature: float, top_k: int | None, prefix: str,
            max_length: int) -> Iterator[np.ndarray]:
    """Per chunk of words, in order, their drawn ids (rows, S): 0 ends a word, a row may be
    all nonzero if it was cut at max_length. Only the columns some word reached are returned.

    Chunks are independent, so ``WORKERS`` of them grow at once in threads: while one waits
    for the model (onnxruntime and torch release the GIL), another picks its characters in
    numpy. At most ``WORKERS + 1`` chunks are held, whatever ``n``.
    """
    begin = Vocab(chars).encode(prefix, what="prefix")
    stepped = _is_stepper(logits_fn)
    if stepped and len(begin) >= context:
        raise SpecError(f"prefix {prefix[:40]!r} has {len(begin)} characters, but this sequence "
                        f"model holds words of at most {context} (its context), so a prefix "
                        f"may have at most {context - 1}", "sampling")
    k = len(chars) if top_k is None else min(top_k, len(chars))
    width = context + max_length  # a window model's ids per word: padding, prefix, drawn
    rows_per_chunk = step_chunk(logits_fn) if stepped else max(1, min(CHUNK, MAX_IDS // width))
    starts = iter(range(0, n, rows_per_chunk))
    share = SHARED > 0 and not getattr(logits_fn, "batch_dependent", False)

    def grow(lo: int) -> np.ndarray:
        rows = min(rows_per_chunk, n - lo)
        index = np.uint64(start + lo) + np.arange(rows, dtype=np.uint64)  # (R,) word indices
        grower = _grow_steps if stepped else _grow
        return grower(logits_fn, word_keys(seed, index), begin, len(chars), context, max_length,
                      temperature, k, share)

    with ThreadPoolExecutor(WORKERS) as pool:
        pending = deque(pool.submit(grow, lo) for lo in islice(starts, WORKERS + 1))
        while pending:
            block = pending.popleft().result()
            for lo in islice(starts, 1):
                pending.append(pool.submit(grow, lo))
            yield block


def step_chunk(stepper: Stepper) -> int:
    """Words per chunk for a sequence model: ``CHUNK`` halved until the state of that many
    words, every position, is at most ``STATE_BYTES`` (at least 1). Halving keeps each chunk's
    first word a multiple of it within ``CHUNK``-word batches, as the web sampler makes them."""
    per_word = sum(a.size * 4 for a in stepper.start(1))  # fp32 bytes
    rows = CHUNK
    while rows > 1 and rows * per_word > STATE_BYTES:
        rows //= 2
    return rows


def _grow(logits_fn: LogitsFn, keys: np.ndarray, begin: list[int], size: int, context: int,
          max_length: int, temperature: float, k: int, share: bool) -> np.ndarray:
    """The drawn ids of one chunk of words with these keys (rows, S).

    Words with the same ids so far have the same context: while such groups are few
    (``_Groups``), the model sees one context per group."""
    rows, steps = len(keys), max_length - len(begin)
    # (R, T + P + S): '.' padding, the prefix, then the drawn ids (0 once a word ended);
    # row r's context at step s is a slice of it, so nothing is shifted or concatenated
    ids = np.zeros((rows, context + len(begin) + steps), np.int64)
    ids[:, context:context + len(begin)] = begin
    first = context + len(begin)  # column of the first drawn id
    active = np.arange(rows)  # (A,) rows still growing
    groups = _Groups(rows, size) if share else None
    end = first  # one past the last column written
    while end < first + steps and len(active):
        u = keyed_uniforms(keys[active], end - first)  # (A,)
        if groups is None:
            logits = _call(logits_fn, ids[active, end - context:end], size)  # (A, V)
        else:  # one context per group: its first word's
            logits = _call(logits_fn, ids[active[groups.first], end - context:end],
                           size)[groups.of]  # (A, V)
        nxt = choose(logits, u, temperature, k)  # (A,)
        ids[active, end] = nxt
        going = nxt != 0
        active = active[going]
        if groups is not None and not groups.split(going, nxt[going]):
            groups = None
        end += 1
    return ids[:, first:end]


class _Groups:
    """The growing words of a chunk, grouped by their ids so far (a prefix tree's level).

    Words of one group have the same prefix, so a model that computes each row on its own
    gives them the same logits: it is run on one row per group. At the first positions there
    are few groups (one at position 0, at most V at position 1), later nearly as many as words;
    once groups are more than ``SHARED`` of the words, grouping stops (``split`` says so).
    A file whose rows depend on each other (an int8 graph quantises its activations over the
    whole batch) declares ``batch_dependent`` and is never grouped."""

    def __init__(self, words: int, size: int) -> None:
        self.size = size
        self.of = np.zeros(words, np.intp)  # (A,) each growing word's group
        self.first = np.zeros(1, np.intp)  # (G,) each group's first word (index into A)
        self.parent = np.zeros(1, np.intp)  # (G,) each group's group before the last split
        self.last = np.zeros(1, np.int64)  # (G,) each group's last id

    def split(self, going: np.ndarray, drawn: np.ndarray) -> bool:
        """The words still growing (mask ``going`` over the words) drew ``drawn``: regroup by
        (group, drawn id). False, and grouping is over, when groups would be too many."""
        kept = self.of[going]  # (A',) the groups of the words still growing
        key = kept * self.size + drawn  # (A',) one value per (group, next id)
        unique, first, of = np.unique(key, return_index=True, return_inverse=True)
        if len(unique) > SHARED * len(key):
            self.of, self.parent = np.arange(len(key)), kept  # every word its own row
            return False
        self.of, self.first = of.reshape(-1), first
        self.parent, self.last = unique // self.size, unique % self.size
        return True


class BatchDependent:
    """A logits function whose rows depend on the other rows of the batch (an int8 graph's
    activations are quantised over the whole batch): the sampler never groups its rows."""

    batch_dependent = True

    def __init__(self, logits_fn: LogitsFn) -> None:
        self.logits_fn = logits_fn

    def __call__(self, context: np.ndarray) -> np.ndarray:
        return self.logits_fn(context)


def _is_stepper(model: object) -> bool:
    return callable(getattr(model, "step", None)) and callable(getattr(model, "start", None))


def _grow_steps(stepper: Stepper, keys: np.ndarray, begin: list[int], size: int, context: int,
                max_length: int, temperature: float, k: int, share: bool) -> np.ndarray:
    """The drawn ids of one chunk of words (rows, S), stepping a sequence model: each
    position's ids go in once, with the state the earlier ones left.

    While words with the same ids so far are grouped (``_Groups``), the state holds one row
    per group: a group's words share its prefix, so they share its state and logits, and a
    split copies each new group's parent row (only the entries so far). Then the state holds
    a row per word, and a word that ends keeps its row (its logits are computed and ignored)
    until fewer than half the rows are growing: then the state is compacted to those rows.
    Copying a cache on every step that a word ends would cost more than the rows it saves.
    A batch-dependent model (int8) is never grouped, and the web sampler keeps the same rows
    as this one: the same words need the same batches."""
    rows = len(keys)
    steps = min(max_length, context) - len(begin)  # a word holds at most T characters
    grown = np.zeros((rows, steps), np.int64)  # (R, S) drawn ids, 0 once a word ended
    width = 1 if share else rows  # every word's prefix is the same: one state row if grouped
    state = stepper.start(width)
    buffers = thread_buffers()
    ids = np.zeros(width, np.int64)  # position 0 takes '.'
    for position, given in enumerate(begin):  # the prefix: fed, not drawn
        state = stepper.step(ids, state, position)[1]
        ids = np.full(width, given, np.int64)
    drawn = 0
    if share:
        groups = _Groups(rows, size)
        words = np.arange(rows)  # (A,) the growing words
        while drawn < steps and len(words):
            logits, state = stepper.step(ids, state, len(begin) + drawn)
            logits = _checked(logits, len(ids), size)  # (G, V)
            nxt = choose(logits[groups.of], keyed_uniforms(keys[words], drawn), temperature, k)
            grown[words, drawn] = nxt
            drawn += 1
            going = nxt != 0
            words = words[going]
            grouped = groups.split(going, nxt[going])
            if len(words):  # the state of each new group, or of each word when grouping ends
                state = keep_rows(state, groups.parent, stepper.caches, len(begin) + drawn,
                                  buffers)
            ids = groups.last if grouped else nxt[going]
            if not grouped:
                break
        batch = words  # (B,) the word of each row of the batch
    else:
        batch = np.arange(rows)
    growing = np.ones(len(batch), bool)  # (B,) whether that word is still growing
    while drawn < steps and growing.any():
        logits, state = stepper.step(ids, state, len(begin) + drawn)
        logits = _checked(logits, len(batch), size)
        live = np.flatnonzero(growing)  # rows of the batch to draw for
        nxt = choose(logits[live], keyed_uniforms(keys[batch[live]], drawn), temperature, k)
        grown[batch[live], drawn] = nxt
        ids[live] = nxt
        growing[live] = nxt != 0
        drawn += 1
        if growing.sum() * 2 < len(batch):
            keep = np.flatnonzero(growing)
            batch, ids, growing = batch[keep], ids[keep], growing[keep]
            state = keep_rows(state, keep, stepper.caches, len(begin) + drawn, buffers)
    return grown[:, :drawn]


def _decode(grown: np.ndarray, chars: tuple[str, ...], prefix: str) -> list[str]:
    """Rows of ids (0-terminated) as strings, in one decode rather than a join per word."""
    points = np.array([0] + [ord(c) for c in chars[1:]], np.uint32)[grown]  # (n, S)
    text = points.tobytes().decode("utf-32-le")
    width = grown.shape[1]
    lengths = np.count_nonzero(grown, axis=1).tolist()  # nonzero up to the end of a word
    if prefix:
        return [prefix + text[row * width:row * width + size]
                for row, size in enumerate(lengths)]
    return [text[row * width:row * width + size] for row, size in enumerate(lengths)]


def _call(logits_fn: LogitsFn, window: np.ndarray, size: int) -> np.ndarray:
    return _checked(logits_fn(window), len(window), size)


def _checked(logits: np.ndarray, rows: int, size: int) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.shape != (rows, size):
        raise ArtifactError(f"the model returned logits of shape {logits.shape} for "
                            f"{rows} contexts; expected ({rows}, {size}) for "
                            f"a {size}-symbol vocabulary (is it the model of this vocabulary?)")
    if not np.isfinite(logits).all():
        raise ArtifactError("the model returned non-finite logits (NaN or inf); its weights "
                            "are broken")
    return logits


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check(vocab: Sequence[str], context: int, n: int, seed: int, start: int,
           temperature: float, top_k: int | None, prefix: str,
           max_length: int) -> tuple[str, ...]:
    """Every problem with the settings at once, as one SpecError."""
    chars = tuple(vocab)
    problems = []
    if Vocab.problem(chars):
        problems.append("vocab must be '.' followed by distinct single characters, got "
                        f"{''.join(map(str, chars))[:40]!r}")
    if not _is_int(context) or context < 1:
        problems.append(f"context must be an integer >= 1, got {context!r}")
    if not _is_int(n) or n < 0:
        problems.append(f"n must be an integer >= 0, got {n!r}")
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        problems.append(f"seed must be an integer in [0, 2**64), got {_short(seed)}")
    if not _is_int(start) or not 0 <= start <= MAX_SEED:
        problems.append(f"start must be an integer in [0, 2**64), got {_short(start)}")
    elif _is_int(n) and n > 0 and start + n > MAX_SEED + 1:
        problems.append(f"start + n must be at most 2**64 (word indices are uint64), got "
                        f"{_short(start)} + {_short(n)}")
    if (not isinstance(temperature, (int, float, np.floating)) or isinstance(temperature, bool)
            or not math.isfinite(temperature) or temperature <= 0):
        problems.append(f"temperature must be a number > 0 and finite, got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        problems.append(f"top_k must be an integer >= 1 (or None for all), got {top_k!r}")
    if not isinstance(prefix, str):
        problems.append(f"prefix must be a string, got {prefix!r}")
    if not _is_int(max_length) or not 1 <= max_length <= MAX_LENGTH:
        problems.append(f"max_length must be an integer >= 1 and <= {MAX_LENGTH:,}, got "
                        f"{_short(max_length)}")
    elif isinstance(prefix, str) and len(prefix) > max_length:
        problems.append(f"prefix {prefix[:40]!r} is longer than max_length {max_length}")
    if problems:
        raise SpecError(problems, "sampling")
    return chars


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"
