"""Words file -> vocabulary, training examples and a seeded 80/10/10 split.

A window model learns from (context, next character) windows (``Windows``); a sequence model
from whole words, one example each (``Sequences``, makemore.py's layout).

One word per line (a line ends at '\n' only); lines are stripped and blank lines skipped. The
vocabulary is '.' (index 0, the word boundary) followed by the sorted characters of the file.
Windows are built with numpy in one pass, not a Python loop per character. numpy only: the
onnxruntime side uses Vocab too.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import json
import random
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zoo import files
from zoo.errors import DataError

__all__ = ["BUNDLED_VOCAB_SIZE",
           "Vocab", "Dataset", "Windows", "Sequences", "read_words", "windows", "split_words",
           "load_dataset", "default_words_file", "auto_context", "BOUNDARY", "MAX_WORD_LENGTH",
           "AUTO", "IGNORE", "Corpus", "make_dataset"]

BOUNDARY = "."
BUNDLED_VOCAB_SIZE = 27  # the bundled names: '.' and a-z (a test holds it to the file)
AUTO = "auto"  # a sequence model's context: the longest word + 1, from the words file
IGNORE = -1  # the target of a position after a word's end: left out of the loss
MAX_WORD_LENGTH = 256  # longer lines are not words: refuse them with the line number
# control, format (zero-width, BOM), line/paragraph separators, surrogates, unassigned
INVISIBLE = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Cn"))


def default_words_file() -> Path:
    """The bundled corpus, data/names.txt (installed as zoo.bundled)."""
    return Path(str(importlib.resources.files("zoo.bundled") / "names.txt"))


@dataclass(frozen=True)
class Vocab:
    """Symbols by index: '.' first (the word boundary), then the sorted characters."""

    chars: tuple[str, ...]

    @classmethod
    def from_words(cls, words: list[str]) -> Vocab:
        return cls((BOUNDARY, *sorted(set("".join(words)))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def encode(self, text: str, what: str = "text") -> list[int]:
        """Ids of ``text``'s characters; DataError naming any character outside the vocabulary."""
        index = self.index()
        missing = sorted({c for c in text if c not in index or c == BOUNDARY})
        if missing:
            raise DataError(f"{what} {text!r} has characters outside the model's vocabulary: "
                            + ", ".join(repr(c) for c in missing)
                            + f" (the vocabulary is {''.join(self.chars[1:])!r})")
        return [index[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"chars": list(self.chars)}, ensure_ascii=False)

    @staticmethod
    def problem(chars: object) -> str | None:
        """Why ``chars`` is not a vocabulary ('.' then distinct single characters), or None."""
        ok = (isinstance(chars, (list, tuple)) and len(chars) >= 2 and chars[0] == BOUNDARY
              and all(isinstance(c, str) and len(c) == 1 for c in chars)
              and len(set(chars)) == len(chars))
        return None if ok else "expected '.' followed by distinct single characters"

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        data = json.loads(text)
        chars = data.get("chars") if isinstance(data, dict) else None
        if not isinstance(chars, list) or cls.problem(chars):
            raise ValueError("expected {'chars': ['.', ...]} with distinct single characters")
        return cls(tuple(chars))


def read_words(path: str | Path) -> list[str]:
    """The words of a file, one per line, stripped; DataError naming the file and line."""
    return _read(Path(path))[0]


def auto_context(words: list[str]) -> int:
    """A sequence model's context for these words: the longest word + 1 (its start token), so
    every word with its end token fits."""
    return max(map(len, words)) + 1


def _read(path: Path) -> tuple[list[str], str, list[int]]:
    """The words of a file, the sha256 of its bytes (read once, bounded by zoo.files) and the
    line number of each word.

    Lines end only at '\n' (a '\r' before it is dropped): a form feed or U+2028 inside a line
    is a character of that line, so it can neither split a word nor shift the line numbers of
    later messages. A leading UTF-8 byte-order mark is not a symbol and is dropped.
    """
    raw = files.read_bytes(path, files.WORDS, DataError)
    text = files.decode(raw, path, DataError).removeprefix("\ufeff")
    words, lines = [], []
    for number, line in enumerate(text.split("\n"), 1):
        word = line.strip()
        if not word:
            continue
        if len(word) > MAX_WORD_LENGTH:
            raise DataError(f"{path}:{number}: a line of {len(word):,} characters; words are at "
                            f"most {MAX_WORD_LENGTH} (is this a words file, one word per line?)")
        bad = next((c for c in word if c == BOUNDARY or unicodedata.category(c) in INVISIBLE),
                   None)
        if bad is not None:
            why = ("'.' is the word boundary" if bad == BOUNDARY
                   else "control characters cannot be sampled"
                   if unicodedata.category(bad) == "Cc"
                   else f"{unicodedata.name(bad, 'an unassigned code point')} is invisible or "
                        "breaks lines, so it cannot be a symbol of a word")
            raise DataError(f"{path}:{number}: word {word!r} contains {bad!r}; {why}")
        words.append(word)
        lines.append(number)
    if not words:
        raise DataError(f"{path}: no words (the file is empty or has only blank lines)")
    return words, hashlib.sha256(raw).hexdigest(), lines


class Windows:
    """The (context, next id) pairs of a list of words, built on demand from one flat array.

    Memory is O(characters), whatever the context length: ``tokens`` holds every word followed
    by its closing '.', and every position of it is one pair's target. A pair's context is the
    T ids before its target, with '.' standing in for everything before the word's start.
    """

    def __init__(self, words: list[str], vocab: Vocab, context: int) -> None:
        self.context = context
        lengths = np.fromiter((len(w) + 1 for w in words), np.int64, len(words))  # + the '.'
        dtype = np.uint8 if vocab.size <= 256 else np.int32
        self.tokens = np.zeros(int(lengths.sum()), dtype)  # (N,) every word, then '.'
        if words:
            codes = np.frombuffer("".join(words).encode("utf-32-le"), dtype=np.uint32)
            table = np.array([ord(c) for c in vocab.chars[1:]], dtype=np.uint32)  # sorted
            ends = np.cumsum(lengths) - 1  # (words,) position of each closing '.'
            chars = np.ones(len(self.tokens), bool)
            chars[ends] = False
            self.tokens[chars] = np.searchsorted(table, codes) + 1
        starts = np.cumsum(lengths) - lengths
        self.starts = np.repeat(starts, lengths)  # (N,) where each target's word begins

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def targets(self) -> int:
        """Characters predicted over the split, end tokens included: one per window."""
        return len(self.tokens)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs ``idx`` as X int64 [B, T] (contexts) and Y int64 [B] (next ids)."""
        idx = np.asarray(idx, np.int64)  # (B,)
        pos = idx[:, None] - self.context + np.arange(self.context)  # (B, T)
        inside = pos >= self.starts[idx][:, None]  # (B, T) False before the word's start
        x = np.where(inside, self.tokens[np.maximum(pos, 0)], 0).astype(np.int64)
        return x, self.tokens[idx].astype(np.int64)

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every pair in order, ``size`` at a time (bounded memory on any split)."""
        for i in range(0, len(self), size):
            yield self.batch(np.arange(i, min(i + size, len(self))))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every pair at once: X int64 [N, T], Y int64 [N] (memory O(N * T): small data only)."""
        return self.batch(np.arange(len(self)))


class Sequences:
    """Every word as one example, as makemore.py lays them out: inputs '.' then the word's
    characters, targets the characters then '.', each padded to the context T.

    Position t's target is the id after the t + 1 ids before it; positions after the word's
    end have target ``IGNORE`` and are left out of the loss, so the mean loss is the mean NLL
    per character, end token included: the quantity ``Windows`` gives for a window model.
    """

    def __init__(self, words: list[str], vocab: Vocab, context: int) -> None:
        self.context = context
        self.flat = Windows(words, vocab, 1)  # its tokens: every word, then '.'
        self.lengths = np.fromiter((len(w) + 1 for w in words), np.int64, len(words))
        self.begins = np.cumsum(self.lengths) - self.lengths  # (words,) where each begins
        self.targets = int(self.lengths.sum())  # characters and end tokens: the loss's count

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Words ``idx`` as X int64 [B, T] (inputs) and Y int64 [B, T] (targets)."""
        idx = np.asarray(idx, np.int64)  # (B,)
        pos = np.arange(self.context)  # (T,)
        n = self.lengths[idx][:, None]  # (B, 1) characters + 1
        at = self.begins[idx][:, None] + pos  # (B, T) flat index of position t's target
        tokens = self.flat.tokens
        y = np.where(pos < n, tokens[np.minimum(at, len(tokens) - 1)].astype(np.int64),
                     IGNORE)  # (B, T)
        x = np.zeros(y.shape, np.int64)  # (B, T): '.' first, and '.' after the end
        x[:, 1:] = np.where(pos[1:] < n, tokens[np.minimum(at[:, :-1], len(tokens) - 1)], 0)
        return x, y

    def chunks(self, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every word in order, ``size`` at a time."""
        for i in range(0, len(self), size):
            yield self.batch(np.arange(i, min(i + size, len(self))))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Every word at once: X, Y int64 [N, T]."""
        return self.batch(np.arange(len(self)))


def windows(words: list[str], vocab: Vocab, context: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (context, next id) pair of every word, '.'-padded: X int64 [N, T], Y int64 [N]."""
    return Windows(words, vocab, context).arrays()


def split_words(words: list[str], seed: int) -> tuple[list[str], list[str], list[str]]:
    """A seeded 80/10/10 split by word (the same for the same words and seed).

    It shuffles exactly as the makemore lectures do (``random.seed(seed); random.shuffle``,
    then cut at 80% and 90%), so with seed 42 on the lecture's names.txt the validation split
    is the lecture's and losses compare directly with the published figures.
    """
    if len(words) < 10:
        raise DataError(f"{len(words)} words are too few for an 80/10/10 split; need at least 10")
    pick = list(words)
    random.Random(seed).shuffle(pick)
    n1, n2 = int(0.8 * len(pick)), int(0.9 * len(pick))
    return pick[:n1], pick[n1:n2], pick[n2:]


@dataclass(frozen=True)
class Dataset:
    """A words file made ready for training: vocabulary, split, windows or sequences."""

    path: str
    sha256: str
    vocab: Vocab
    context: int
    splits: dict[str, Windows | Sequences]  # "train" | "val" | "test"
    words: dict[str, int]  # words per split


@dataclass(frozen=True)
class Corpus:
    """A words file as read: its words, the line of each, the sha256 of its bytes."""

    path: Path
    words: list[str]
    lines: list[int]
    sha256: str

    @classmethod
    def read(cls, path: str | Path | None) -> Corpus:
        """Read a words file (default: the bundled names.txt)."""
        path = Path(path) if path is not None else default_words_file()
        words, digest, lines = _read(path)
        return cls(path, words, lines, digest)

    @functools.cached_property
    def vocab(self) -> Vocab:
        """The file's vocabulary ('.' and its sorted characters)."""
        return Vocab.from_words(self.words)

    def context(self, context: int | str) -> int:
        """A sequence model's context for this file: ``"auto"`` is the longest word + 1; a
        number is checked to hold every word with its start token (DataError naming the
        line of the longest word when it does not fit)."""
        if context == AUTO:
            return auto_context(self.words)
        longest = max(range(len(self.words)), key=lambda i: len(self.words[i]))
        if len(self.words[longest]) + 1 > context:
            raise DataError(f"{self.path}:{self.lines[longest]}: word "
                            f"{self.words[longest][:40]!r} has {len(self.words[longest])} "
                            f"characters, but a sequence model of context {context} holds "
                            f"words of at most {context - 1} (its start token takes a "
                            "position); set model.context to 'auto' or to "
                            f"{len(self.words[longest]) + 1} or more")
        return context


def load_dataset(path: str | Path | None, context: int | str, seed: int, *,
                 sequence: bool = False) -> Dataset:
    """Read, split and window a words file (default: the bundled names.txt); with
    ``sequence``, every word is one example and ``context`` may be ``"auto"``."""
    return make_dataset(Corpus.read(path), context, seed, sequence=sequence)


def make_dataset(corpus: Corpus, context: int | str, seed: int, *,
                 sequence: bool = False) -> Dataset:
    """A read words file split and made into windows (or, with ``sequence``, whole words)."""
    words, path, vocab = corpus.words, corpus.path, corpus.vocab
    if sequence:
        context = corpus.context(context)
    try:
        parts = dict(zip(("train", "val", "test"), split_words(words, seed), strict=False))
    except DataError as e:
        raise DataError(f"{path}: {e}") from None
    kind = Sequences if sequence else Windows
    assert isinstance(context, int)
    return Dataset(str(path), corpus.sha256, vocab, context,
                   {k: kind(v, vocab, context) for k, v in parts.items()},
                   {k: len(v) for k, v in parts.items()})
