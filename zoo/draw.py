"""How the samplers draw: index-stable random numbers and the choice of the next id.

zoo.sampling (numpy) and the web sampler (web/rng.mjs, web/sampler.mjs) follow these rules to
the bit; tests/known_answers.json holds both to one table.

Index-stable random numbers
---------------------------
Word ``i`` (``i = start + position``) of seed ``s`` depends only on (s, i, the settings, the
logits): not on ``n``, on how words are batched, or on the backend. So ``-n 5`` is a prefix of
``-n 10``, ``start=5, n=5`` gives words 5..9, and a service can split a request anywhere. The
uniform for word ``i`` at step ``t`` (0-based count of characters drawn for it so far, the
prefix not counted) is a counter-based hash, SplitMix64's finaliser, in uint64 arithmetic
modulo 2**64 (numpy uint64 here; JavaScript BigInt with ``BigInt.asUintN(64, ...)`` in the web
sampler, which must stay identical)::

    GOLDEN = 0x9E3779B97F4A7C15
    mix64(z): z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
              z ^= z >> 31
    key(s, i)  = mix64(mix64(s + GOLDEN) ^ i)                  # s in [0, 2**64)
    u(s, i, t) = (mix64(key(s, i) + (t + 1) * GOLDEN) >> 11) * 2**-53     # float64 in [0, 1)

Choosing the next id from one row of float32 logits (V values), in float64::

    z = float64(logits)
    if top_k < V: z[z < (k-th largest of z)] = -inf          # ties at the k-th value stay in
    z = (z - max(z)) / temperature     # subtract first: any finite temperature > 0 works
    p = exp(z); cdf = running sum in index order; total = cdf[V-1]
    target = min(u * total, nextafter(total, 0))
    next id = number of indices j with cdf[j] <= target
"""

from __future__ import annotations

import numpy as np

__all__ = ["uniforms", "pick", "word_keys", "keyed_uniforms", "choose"]

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def uniforms(seed: int, index: np.ndarray, step: int) -> np.ndarray:
    """u(seed, i, step) for every word index ``i`` of the uint64 array ``index`` (float64)."""
    return keyed_uniforms(word_keys(seed, index), step)


def pick(logits: np.ndarray, u: np.ndarray, temperature: float = 1.0,
         top_k: int | None = None) -> np.ndarray:
    """The next id of each row of float logits [A, V] for its uniform ``u`` [A] (the rule of
    the module docstring)."""
    size = logits.shape[1]
    return choose(logits, u, temperature, size if top_k is None else min(top_k, size))


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array, in place (numpy wraps modulo 2**64)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def word_keys(seed: int, index: np.ndarray) -> np.ndarray:
    """key(seed, i) for a uint64 array of word indices."""
    base = _mix64(np.array([(int(seed) + _GOLDEN) & _MASK], np.uint64))  # (1,)
    return _mix64(index.astype(np.uint64) ^ base)


def keyed_uniforms(keys: np.ndarray, step: int) -> np.ndarray:
    """u(seed, i, step) for the keys ``word_keys`` gave (float64)."""
    z = _mix64(keys + np.uint64(((step + 1) * _GOLDEN) & _MASK))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53  # exact: < 2**53


def choose(logits: np.ndarray, u: np.ndarray, temperature: float, k: int) -> np.ndarray:
    """Inverse-CDF choice per row from softmax((logits - max) / temperature) over the top k.

    Works on the transposed (V, A) array: with a few dozen symbols and up to thousands of
    rows, a loop over the V rows of contiguous vectors is several times faster than numpy's
    reductions along a short last axis.
    """
    z = logits.T.astype(np.float64, order="C")  # (V, A)
    if k < len(z):
        kth = -np.partition(-z, k - 1, axis=0)[k - 1]  # (A,) the k-th largest per column
        z[z < kth] = -np.inf  # ties at the k-th value stay in: one rule for both backends
    z -= z.max(axis=0)  # (V, A) <= 0, the max at 0: exp cannot overflow
    if temperature != 1.0:
        # a tiny temperature sends every non-max entry to -inf (or -huge): the greedy choice
        with np.errstate(over="ignore", under="ignore"):
            z /= temperature
    with np.errstate(under="ignore"):
        np.exp(z, out=z)  # (V, A) unnormalised probabilities, masked -> 0
    for i in range(1, len(z)):
        z[i] += z[i - 1]  # (V, A) the CDF, unnormalised
    total = z[-1]  # (A,) >= 1: the max contributes exp(0)
    # the first index whose cdf exceeds u * total; never a zero-probability tail entry
    target = np.minimum(u * total, np.nextafter(total, 0))  # (A,)
    chosen = np.zeros(len(u), np.int64)  # (A,)
    for row in z:
        chosen += row <= target
    return chosen
