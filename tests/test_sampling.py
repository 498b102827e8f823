"""zoo.sampling: the one sampler behind both backends, tested on fake numpy models."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from zoo.errors import ArtifactError, DataError, SpecError
from zoo.sampling import sample

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

    words = draw(fn=counting, n=300)
    assert sizes[0] == 300
    # at step t exactly the words with at least t characters are still growing
    assert sizes == [sum(len(w) >= t for w in words) for t in range(len(sizes))]
    assert sum(len(w) >= len(sizes) for w in words) == 0


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
    with pytest.raises(ArtifactError, match="expected \\(200, 6\\)"):
        draw(fn=lambda x: np.zeros((len(x), 4), np.float32))
    with pytest.raises(ArtifactError, match="non-finite"):
        draw(fn=lambda x: np.full((len(x), 6), np.nan, np.float32))


def test_sampling_never_imports_torch() -> None:
    code = ("import sys, zoo.sampling; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
