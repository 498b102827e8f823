"""zoo.sampling: the one sampler behind both backends, tested on fake numpy models."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import zoo.sampling
import zoo.stepstate
from zoo.errors import ArtifactError, DataError, SpecError
from zoo.sampling import (
    CHUNK,
    STATE_BYTES,
    BatchDependent,
    keep_rows,
    sample,
    sample_text,
    step_chunk,
    uniforms,
)

VOCAB = tuple(".abcde")
CONTEXT = 3


def hashed_logits(context: np.ndarray) -> np.ndarray:
    """A deterministic fake model: logits that depend on every id of the context."""
    x = np.asarray(context, np.int64)  # (B, T)
    weights = np.random.default_rng(1).normal(size=(x.shape[1], len(VOCAB), len(VOCAB)))
    out = sum(weights[t][x[:, t]] for t in range(x.shape[1]))  # (B, V)
    out[:, 0] += 0.5 * (x != 0).sum(axis=1)  # longer words end more often
    return out.astype(np.float32)


def draw(**options) -> list[str]:
    settings = {"vocab": VOCAB, "context": CONTEXT, "n": 200, "seed": 0, **options}
    return sample(settings.pop("fn", hashed_logits), **settings)


def test_same_seed_same_words_and_other_seed_other_words() -> None:
    assert draw() == draw()
    assert draw(seed=1) != draw()
    assert all(set(w) <= set(VOCAB[1:]) for w in draw())


def test_words_do_not_depend_on_rounding_noise() -> None:
    # torch and onnxruntime differ by ~1e-6 in the logits; the words must not
    def noisy(x: np.ndarray) -> np.ndarray:
        return hashed_logits(x) + np.random.default_rng().uniform(-1e-6, 1e-6, (len(x), 6))

    assert draw(fn=noisy) == draw()


def test_top_k_1_is_greedy_argmax_path() -> None:
    words = draw(top_k=1, n=5)
    window, greedy = [0] * CONTEXT, ""
    while len(greedy) < 64:
        i = int(hashed_logits(np.array([window])).argmax())
        if i == 0:
            break
        greedy += VOCAB[i]
        window = window[1:] + [i]
    assert words == [greedy] * 5


def test_low_temperature_approaches_greedy_and_high_spreads_out() -> None:
    greedy = draw(top_k=1, n=1)[0]
    assert draw(temperature=1e-3, n=50) == [greedy] * 50
    assert len(set(draw(temperature=5.0))) > len(set(draw(temperature=1.0)))


def test_top_k_keeps_only_the_k_most_likely() -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def recording(x: np.ndarray) -> np.ndarray:
        logits = hashed_logits(x)
        seen.append((x.copy(), np.argsort(-logits, axis=1)[:, :2]))
        return logits

    words = draw(fn=recording, top_k=2, max_length=8)
    top2 = {tuple(row): set(best) for x, tops in seen for row, best in zip(x, tops, strict=True)}
    for word in words:
        window = [0] * CONTEXT
        for ch in word + ".":
            i = VOCAB.index(ch)
            if len(word) < 8 or ch != ".":
                assert i in top2[tuple(window)]
            window = window[1:] + [i]


def test_prefix_is_kept_and_max_length_respected() -> None:
    words = draw(prefix="ab", max_length=5)
    assert all(w.startswith("ab") and len(w) <= 5 for w in words)
    assert any(len(w) == 5 for w in draw(max_length=5, temperature=10.0))
    assert draw(prefix="abc", max_length=3, n=2) == ["abc", "abc"]


def test_never_ending_model_is_cut_at_max_length() -> None:
    def no_end(x: np.ndarray) -> np.ndarray:
        logits = np.zeros((len(x), len(VOCAB)), np.float32)
        logits[:, 0] = -1e9
        return logits

    words = draw(fn=no_end, max_length=7, n=10)
    assert [len(w) for w in words] == [7] * 10


def test_finished_words_leave_the_batch() -> None:
    sizes: list[int] = []

    def counting(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return hashed_logits(x)

    words = draw(fn=BatchDependent(counting), n=300)  # never grouped: a row per word
    assert sizes[0] == 300
    # at step t exactly the words with at least t characters are still growing
    assert sizes == [sum(len(w) >= t for w in words) for t in range(len(sizes))]
    assert sum(len(w) >= len(sizes) for w in words) == 0


def test_words_with_one_prefix_are_computed_once_and_are_the_ungrouped_words() -> None:
    calls: list[np.ndarray] = []

    def recording(x: np.ndarray) -> np.ndarray:
        calls.append(x.copy())
        return hashed_logits(x)

    for options in ({}, {"prefix": "ab"}, {"top_k": 2, "temperature": 0.7}):
        calls.clear()
        words = draw(fn=recording, n=2000, **options)
        grouped = calls[:]
        assert words == draw(fn=BatchDependent(hashed_logits), n=2000, **options)
        assert len(grouped[0]) == 1  # every word starts from the same context
        distinct = [len(np.unique(x, axis=0)) == len(x) for x in grouped]
        assert distinct[:2] == [True, True]  # one row per group while grouped
        # grouping ends when groups are most of the words: then a row per growing word
        assert sum(len(x) for x in grouped) < sum(len(w) + 1 for w in words) * 0.9


def test_zero_words() -> None:
    assert draw(n=0) == []


@pytest.mark.parametrize("options, fragment", [
    ({"temperature": 0.0}, "temperature must be a number > 0"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_k": 0}, "top_k must be an integer >= 1"),
    ({"n": -1}, "n must be an integer >= 0"),
    ({"max_length": 0}, "max_length must be an integer >= 1"),
    ({"prefix": "abcd", "max_length": 3}, "longer than max_length"),
    ({"vocab": tuple("abc")}, "vocab must be '.'"),
    ({"context": 0}, "context must be an integer >= 1"),
])
def test_invalid_settings_raise_spec_error(options: dict, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        draw(**options)


def test_all_bad_settings_are_reported_together() -> None:
    with pytest.raises(SpecError) as info:
        draw(temperature=-1, top_k=0, n=-2)
    assert len(info.value.problems) == 3


def test_prefix_outside_vocabulary_names_characters_and_vocabulary() -> None:
    with pytest.raises(DataError) as info:
        draw(prefix="aXz.")
    message = str(info.value)
    assert "'.'" in message and "'X'" in message and "'z'" in message
    assert "'abcde'" in message and "\n" not in message


def test_model_of_another_vocabulary_is_refused() -> None:
    with pytest.raises(ArtifactError, match="expected \\(1, 6\\) for a 6-symbol"):
        draw(fn=lambda x: np.zeros((len(x), 4), np.float32))  # one context: every word's
    with pytest.raises(ArtifactError, match="expected \\(200, 6\\) for a 6-symbol"):
        draw(fn=BatchDependent(lambda x: np.zeros((len(x), 4), np.float32)))
    with pytest.raises(ArtifactError, match="non-finite"):
        draw(fn=lambda x: np.full((len(x), 6), np.nan, np.float32))


def test_sampling_never_imports_torch() -> None:
    code = ("import sys, zoo.sampling; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# -- index-stable random numbers ---------------------------------------------------------------

def reference_u(seed: int, i: int, step: int) -> float:
    """The generator of zoo/draw.py's docstring in plain Python integers (mod 2**64)."""
    mask, golden = (1 << 64) - 1, 0x9E3779B97F4A7C15

    def mix64(z: int) -> int:
        z ^= z >> 30
        z = (z * 0xBF58476D1CE4E5B9) & mask
        z ^= z >> 27
        z = (z * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    key = mix64(mix64((seed + golden) & mask) ^ i)
    return (mix64((key + (step + 1) * golden) & mask) >> 11) * 2.0**-53


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**63, 2**64 - 1])
def test_uniforms_follow_the_documented_generator(seed: int) -> None:
    index = np.array([0, 1, 7, 2**32 + 5, 2**64 - 1], np.uint64)
    for step in (0, 1, 63):
        got = uniforms(seed, index, step)
        assert got.tolist() == [reference_u(seed, int(i), step) for i in index]
        assert ((got >= 0) & (got < 1)).all()


def test_words_depend_on_their_index_only() -> None:
    ten = draw(n=10)
    assert draw(n=5) == ten[:5]
    assert draw(start=5, n=5) == ten[5:]
    assert draw(start=3, n=1) == ten[3:4]


def test_chunking_does_not_change_the_words(monkeypatch: pytest.MonkeyPatch) -> None:
    import zoo.sampling

    words = draw(n=50, prefix="a", top_k=3)
    monkeypatch.setattr(zoo.sampling, "CHUNK", 7)
    assert draw(n=50, prefix="a", top_k=3) == words


def test_streamed_text_is_the_words_one_per_line() -> None:
    for options in ({}, {"prefix": "ab", "max_length": 4}, {"top_k": 2, "start": 9}):
        settings = {"vocab": VOCAB, "context": CONTEXT, "n": 300, "seed": 3, **options}
        text = "".join(sample_text(hashed_logits, **settings))
        assert text == "".join(w + "\n" for w in sample(hashed_logits, **settings))


@pytest.mark.parametrize("temperature", [1e-310, 5e-324, 1e-30, 1e300])
def test_any_finite_positive_temperature_works_without_warnings(temperature: float) -> None:
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        words = draw(temperature=temperature, n=20)
    if temperature < 1e-20:
        assert words == draw(top_k=1, n=20)  # vanishing temperature: the greedy word
    assert all(set(w) <= set(VOCAB[1:]) for w in words)


@pytest.mark.parametrize("options, fragment", [
    ({"seed": 2**64}, "seed must be an integer in [0, 2**64)"),
    ({"seed": -1}, "seed must be an integer in [0, 2**64)"),
    ({"start": 2**64 - 1, "n": 2}, "start + n must be at most 2**64"),
    ({"start": -1}, "start must be an integer"),
])
def test_seed_and_start_out_of_range_are_refused(options: dict, fragment: str) -> None:
    with pytest.raises(SpecError, match=re.escape(fragment)):
        draw(**options)


def test_top_seed_and_last_index_work() -> None:
    assert len(draw(seed=2**64 - 1, start=2**64 - 3, n=3)) == 3


def test_a_list_is_capped_but_the_stream_is_not() -> None:
    """``sample`` refuses more words than a list should hold; ``sample_text`` streams them."""
    from zoo.sampling import MAX_LIST

    vocab = (".", "a", "b")
    uniform = lambda x: np.zeros((len(x), 3), np.float32)  # noqa: E731
    with pytest.raises(SpecError, match="sample_text"):
        sample(uniform, vocab=vocab, context=2, n=MAX_LIST + 1, seed=0)
    stream = sample_text(uniform, vocab=vocab, context=2, n=10**12, seed=0)
    first = next(stream)  # lazily: the first chunk only
    assert first.count("\n") >= 1 and set(first) <= {"a", "b", "\n"}


def test_keep_rows_copies_the_entries_so_far_of_the_kept_rows() -> None:
    rng = np.random.default_rng(0)
    cache = rng.normal(size=(6, 5, 3)).astype(np.float32)  # (T, B, C): time first
    hidden = rng.normal(size=(5, 4)).astype(np.float32)  # (B, H)
    rows = np.array([0, 3, 4])
    kept_cache, kept_hidden = keep_rows([cache, hidden], rows, [True, False], 2)
    assert kept_cache.shape == (6, 3, 3) and kept_hidden.shape == (3, 4)
    assert np.array_equal(kept_cache[:2], cache[:2, rows])  # entries 0 and 1, rows kept
    assert np.array_equal(kept_hidden, hidden[rows])


def test_state_copies_alternate_between_two_reused_buffers_and_never_overwrite_their_source(
) -> None:
    rng = np.random.default_rng(2)
    cache = rng.normal(size=(6, 5, 3)).astype(np.float32)  # (T, B, C)
    buffers = zoo.stepstate.Buffers()
    first = keep_rows([cache], np.array([0, 2, 4]), [True], 4, buffers)[0]
    expected = cache[:4, [0, 2, 4]].copy()
    second = keep_rows([first], np.array([2, 0]), [True], 4, buffers)[0]
    assert np.array_equal(first[:4], expected)  # the source was not written
    assert np.array_equal(second[:4], expected[:, [2, 0]])
    assert not np.may_share_memory(first, second)
    third = keep_rows([second], np.array([1]), [True], 4, buffers)[0]
    assert np.may_share_memory(third, first)  # first's buffer again: second is the source
    assert np.array_equal(third[:4], expected[:, [0]]) and third.flags.c_contiguous


class CountingStepper:
    """A batch-dependent sequence model with one cache of ``floats`` floats a word (``length``
    positions): it records the batch of every step; its logits favour ending after 3 ids."""

    batch_dependent = True

    def __init__(self, floats: int, length: int = 8) -> None:
        self.length, self.width = length, floats // length
        self.caches = [True]
        self.batches: list[int] = []

    def start(self, rows: int) -> list[np.ndarray]:
        return [np.zeros((self.length, rows, self.width), np.float32)]

    def step(self, ids, state, position):
        self.batches.append(len(ids))
        logits = np.zeros((len(ids), 3), np.float32)
        logits[:, 0] = 10.0 if position >= 3 else -10.0
        return logits, [state[0]]


@pytest.mark.parametrize("floats", [8, 8192, 8 * 8192, 8 * 2**20])
def test_a_sequence_models_chunk_holds_a_bounded_state(floats: int) -> None:
    stepper = CountingStepper(floats)
    rows = step_chunk(stepper)
    assert rows >= 1 and CHUNK % rows == 0  # halvings of CHUNK: batches stay aligned
    assert rows * floats * 4 <= STATE_BYTES or rows == 1
    assert rows == CHUNK or 2 * rows * floats * 4 > STATE_BYTES  # the largest that fits
    words = sample(stepper, vocab=[".", "a", "b"], context=8, n=rows + 3, seed=0)
    assert len(words) == rows + 3
    assert max(stepper.batches) == rows  # never a larger batch: the memory bound holds


def test_a_large_state_gives_smaller_chunks_with_the_same_words(monkeypatch) -> None:
    vocab = [".", "a", "b", "c"]

    class Hashed(CountingStepper):
        batch_dependent = False

        def step(self, ids, state, position):
            context = np.stack([ids, np.full_like(ids, position), ids], axis=1) % len(VOCAB)
            logits = hashed_logits(context)  # (B, 6): a function of the last id and position
            return logits[:, :4], [state[0]]

    before = sample(Hashed(64), vocab=vocab, context=8, n=300, seed=3)
    monkeypatch.setattr(zoo.sampling, "STATE_BYTES", 64 * 4 * 16)  # 16 words a chunk
    assert step_chunk(Hashed(64)) == 16
    assert sample(Hashed(64), vocab=vocab, context=8, n=300, seed=3) == before
