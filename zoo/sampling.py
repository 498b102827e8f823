"""The sampler: words from any function that maps contexts to next-character logits.

    words = sample(model.numpy_logits, vocab=vocab.chars, context=3, n=20, seed=0)
    words = sample(onnx_model.logits, vocab=onnx_model.vocab, context=3, n=20, seed=0)

numpy only (no torch), so the onnxruntime side can use it. All ``n`` words grow as one batch;
a word that ends leaves the batch, so ``logits_fn`` only ever sees the rows still growing.
The random numbers do not depend on the backend: every step draws one uniform per word for
all ``n`` words (finished or not) from ``numpy.random.default_rng(seed)``, and each row picks
its next character by inverse CDF over a float64 softmax. The same seed therefore gives the
same words through torch and through onnxruntime, whose logits differ only by rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from zoo.data import BOUNDARY, Vocab  # '.' (vocab[0]) ends a word and pads contexts
from zoo.errors import ArtifactError, SpecError

__all__ = ["sample", "LogitsFn", "BOUNDARY"]

MAX_WORDS = 1_000_000  # words per call: one batch, so memory grows with n
MAX_IDS = 1 << 26  # n * max_length: the sampled ids are kept as one int64 array (512 MiB)

LogitsFn = Callable[[np.ndarray], np.ndarray]
"""int64 contexts [B, T] -> float logits [B, V]."""


def sample(logits_fn: LogitsFn, *, vocab: Sequence[str], context: int, n: int, seed: int = 0,
           temperature: float = 1.0, top_k: int | None = None, prefix: str = "",
           max_length: int = 64) -> list[str]:
    """Sample ``n`` words; each starts with ``prefix`` and has at most ``max_length`` characters.

    ``temperature`` divides the logits (lower is more conservative); ``top_k`` keeps only the
    k most likely characters at each step (``top_k=1`` is greedy). The returned words include
    the prefix and leave out the closing '.'; a word that reaches ``max_length`` is cut there.
    Bad settings raise SpecError; prefix characters outside the vocabulary raise DataError.
    """
    chars = _check(vocab, context, n, seed, temperature, top_k, prefix, max_length)
    start = Vocab(chars).encode(prefix, what="prefix")
    size = len(chars)
    k = size if top_k is None else min(top_k, size)
    rng = np.random.default_rng(seed)

    steps = max_length - len(start)
    # (n, T + P + S): '.' padding, the prefix, then the sampled ids (0 once a word has ended);
    # row r's context at step s is a slice of it, so nothing is shifted or concatenated
    ids = np.zeros((n, context + len(start) + steps), np.int64)
    ids[:, context:context + len(start)] = start
    first = context + len(start)  # column of the first sampled id
    active = np.arange(n)  # (A,) rows still growing
    end = first  # one past the last column written
    while end < first + steps and len(active):
        u = rng.random(n)  # (n,) one draw per word, so the stream never depends on A
        logits = _call(logits_fn, ids[active, end - context:end], size)  # (A, V)
        nxt = _pick(logits, u[active], temperature, k)  # (A,)
        ids[active, end] = nxt
        active = active[nxt != 0]
        end += 1
    return _decode(ids[:, first:end], chars, prefix)


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


def _pick(logits: np.ndarray, u: np.ndarray, temperature: float, k: int) -> np.ndarray:
    """Inverse-CDF choice per row from softmax(logits / temperature) over the top k.

    Works on the transposed (V, A) array: with a few dozen symbols and up to millions of rows,
    a loop over the V rows of contiguous vectors is several times faster than numpy's
    reductions along a short last axis.
    """
    z = logits.T.astype(np.float64, order="C")  # (V, A)
    if temperature != 1.0:
        z /= temperature
    if k < len(z):
        kth = -np.partition(-z, k - 1, axis=0)[k - 1]  # (A,) the k-th largest per column
        z[z < kth] = -np.inf  # ties at the k-th value stay in: one rule for both backends
    z -= z.max(axis=0)
    np.exp(z, out=z)  # (V, A) unnormalised probabilities, masked -> 0
    for i in range(1, len(z)):
        z[i] += z[i - 1]  # (V, A) the CDF, unnormalised
    total = z[-1]  # (A,)
    # the first index whose cdf exceeds u * total; never a zero-probability tail entry
    target = np.minimum(u * total, np.nextafter(total, 0))  # (A,)
    chosen = np.zeros(len(u), np.int64)  # (A,)
    for row in z:
        chosen += row <= target
    return chosen


def _call(logits_fn: LogitsFn, window: np.ndarray, size: int) -> np.ndarray:
    logits = np.asarray(logits_fn(window))
    if logits.shape != (len(window), size):
        raise ArtifactError(f"the model returned logits of shape {logits.shape} for "
                            f"{len(window)} contexts; expected ({len(window)}, {size}) for "
                            f"a {size}-symbol vocabulary (is it the model of this vocabulary?)")
    if not np.isfinite(logits).all():
        raise ArtifactError("the model returned non-finite logits (NaN or inf); its weights "
                            "are broken")
    return logits


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check(vocab: Sequence[str], context: int, n: int, seed: int, temperature: float,
           top_k: int | None, prefix: str, max_length: int) -> tuple[str, ...]:
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
    elif n > MAX_WORDS:
        problems.append(f"n must be at most {MAX_WORDS:,} per call, got {n:,}; sample in "
                        "batches")
    if not _is_int(seed) or seed < 0:
        problems.append(f"seed must be an integer >= 0, got {seed!r}")
    if (not isinstance(temperature, (int, float)) or isinstance(temperature, bool)
            or not math.isfinite(temperature) or temperature <= 0):
        problems.append(f"temperature must be a number > 0, got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        problems.append(f"top_k must be an integer >= 1 (or None for all), got {top_k!r}")
    if not isinstance(prefix, str):
        problems.append(f"prefix must be a string, got {prefix!r}")
    if not _is_int(max_length) or max_length < 1:
        problems.append(f"max_length must be an integer >= 1, got {max_length!r}")
    elif isinstance(prefix, str) and len(prefix) > max_length:
        problems.append(f"prefix {prefix!r} is longer than max_length {max_length}")
    elif _is_int(n) and 0 <= n <= MAX_WORDS and n * max_length > MAX_IDS:
        problems.append(f"n * max_length must be at most {MAX_IDS:,}, got {n:,} * "
                        f"{max_length:,}; sample fewer or shorter words per call")
    if problems:
        raise SpecError(problems, "sampling")
    return chars
