"""Sequence models: whole words as examples, every position trained, the same loss as window
models, makemore.py's model family with its sizes, and stepping without recomputing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lanes import slow_but
from matrix import assert_clean_error, snapshot

from zoo.build import build_model, model_kind
from zoo.data import IGNORE, Corpus, Vocab, load_dataset, make_dataset
from zoo.errors import DataError, SpecError
from zoo.registry import get_registry
from zoo.sampling import sample
from zoo.train import evaluate, objective, train

# makemore.py's parameter counts on names.txt (vocabulary 27, block size 16), its defaults
MAKEMORE = {"makemore-transformer": 204_544, "makemore-gru": 28_315, "makemore-rnn": 11_803,
            "makemore-bow": 12_827}
SEQUENCE = [p for p in sorted(get_registry().presets) if model_kind(p, 27) == "sequence"]


def words_file(tmp_path: Path, words: list[str], name: str = "w.txt") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def test_each_word_is_one_example_as_makemore_lays_it_out(tmp_path: Path) -> None:
    words = ["ab", "c", "abcd"] + [f"x{'y' * i}" for i in range(9)]  # 12 words
    data = load_dataset(words_file(tmp_path, words), 10, seed=1, sequence=True)
    split = data.splits["train"]
    vocab = data.vocab.index()
    for i in range(len(split)):
        x, y = (row[0] for row in split.batch(np.array([i])))  # (T,), (T,)
        n = int((y != IGNORE).sum())  # the word's characters + its end token
        word = "".join(data.vocab.chars[c] for c in y[:n - 1])
        assert word in words and n == len(word) + 1
        assert list(x[:n]) == [0, *[vocab[c] for c in word]]  # '.' first, then the word
        assert list(y[:n]) == [*[vocab[c] for c in word], 0]  # the word, then '.'
        assert list(x[n:]) == [0] * (10 - n) and list(y[n:]) == [IGNORE] * (10 - n)
    windows = load_dataset(words_file(tmp_path, words), 3, seed=1).splits["train"]
    assert split.targets == len(windows)  # one prediction per character, end tokens included


def test_auto_context_is_the_longest_word_plus_one(tmp_path: Path) -> None:
    path = words_file(tmp_path, ["anna", "bo", "christopher"] + ["ed"] * 9)
    assert Corpus.read(path).context("auto") == 12
    assert load_dataset(None, "auto", 42, sequence=True).context == 16  # names.txt


def test_a_word_longer_than_the_context_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "w.txt"
    path.write_text("anna\n\nbo\nchristopher\n" + "ed\n" * 9, encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_dataset(path, 8, 42, sequence=True)
    assert str(e.value) == (
        f"{path}:4: word 'christopher' has 11 characters, but a sequence model of context 8 "
        "holds words of at most 7 (its start token takes a position); set model.context to "
        "'auto' or to 12 or more")


def test_window_and_sequence_models_report_the_same_quantity(tmp_path: Path) -> None:
    """A bigram as a window model (context 1) and as a sequence model, with the same table,
    predict every character of every word identically: their losses are one number."""
    data = words_file(tmp_path, get_words()[:300])
    torch.manual_seed(0)
    seq = build_model([{"type": "embedding", "dim": 8}, "linear"], 27, context=16)
    win = build_model([{"type": "embedding", "dim": 8}, "flatten", "linear"], 27, context=1)
    state = seq.state_dict()
    win.load_state_dict({k.replace("layers.1.", "layers.2."): v for k, v in state.items()})
    sequences = load_dataset(data, 16, 3, sequence=True).splits["val"]
    windows = load_dataset(data, 1, 3).splits["val"]
    assert sequences.targets == len(windows)
    assert evaluate(seq, sequences) == pytest.approx(evaluate(win, windows), rel=1e-6)
    x, y = sequences.arrays()
    logits = seq(torch.from_numpy(x))  # (N, T, V)
    kept = torch.from_numpy(y) != IGNORE
    nll = -torch.log_softmax(logits, -1)[kept].gather(1, torch.from_numpy(y)[kept][:, None])
    assert objective(logits, torch.from_numpy(y)).item() == pytest.approx(nll.mean().item(),
                                                                          rel=1e-6)


def get_words() -> list[str]:
    return Corpus.read(None).words


@pytest.mark.parametrize("preset, count", MAKEMORE.items())
def test_makemore_presets_have_makemore_parameter_counts(preset: str, count: int) -> None:
    model = build_model(preset, 27)
    assert model.kind == "sequence" and model.context == 16
    assert model.num_parameters() == count


@pytest.mark.parametrize("preset", slow_but(SEQUENCE, "makemore-rnn", "makemore-gru",
                                             "makemore-bow"))
def test_stepping_gives_the_full_forward_at_every_position(preset: str) -> None:
    torch.manual_seed(1)
    model = build_model(preset, 27).eval()
    x, _ = load_dataset(None, model.context, 42, sequence=True).splits["val"].batch(
        np.arange(50))  # (B, T)
    with torch.no_grad():
        full = model(torch.from_numpy(x))  # (B, T, V)
        state, worst = model.initial_state(len(x)), 0.0
        for t in range(x.shape[1]):
            logits, state = model.step(torch.from_numpy(x[:, t]), state, torch.tensor(t))
            worst = max(worst, (logits - full[:, t]).abs().max().item())
    assert worst < 1e-5
    vocab = Vocab.from_words(get_words()).chars
    options = {"vocab": vocab, "context": model.context, "n": 40, "seed": 5}
    words = sample(model.stepper(), **options)
    assert words == sample(model.stepper(recompute=True), **options)
    assert all(1 <= len(w) <= model.context for w in words if w)


def test_a_sequence_model_trains_on_every_position(tmp_path: Path) -> None:
    data = words_file(tmp_path, get_words()[:400])
    result = train("makemore-gru", data=data, out=tmp_path / "run", progress=False,
                   overrides={"steps": 60, "eval_every": 30, "batch_size": 32})
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    spec = json.loads((tmp_path / "run" / "spec.json").read_text())
    longest = max(len(w) for w in get_words()[:400])
    assert meta["kind"] == "sequence" and spec["model"]["context"] == longest + 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert rows[-1]["val_loss"] < rows[0]["losses"][0] < math.log(27) + 0.1
    assert result.metrics["val_loss"] == pytest.approx(rows[-1]["val_loss"])
    dataset = make_dataset(Corpus.read(data), spec["model"]["context"], 42, sequence=True)
    assert meta["data"]["windows"]["val"] == dataset.splits["val"].targets


@pytest.mark.parametrize("spec, fragments", [
    ('[model]\ncontext = "auto"\nlayers = [{type = "embedding", dim = 4}, "flatten", '
     '"linear"]\n', ["model.context = 'auto' (the longest word + 1) is for sequence models",
                     "give model.context a number"]),
    ('[model]\ncontext = 16\nlayers = [{type = "embedding", dim = 4}, "batchnorm", '
     '"linear"]\n', ["entry 1 (batchnorm) of plugin 'norm' is not causal on [B, T, C]"]),
    ('[model]\ncontext = 5\nlayers = [{type = "embedding", dim = 4}, "linear"]\n',
     [":", "has 15 characters, but a sequence model of context 5 holds words of at most 4"]),
])
def test_bad_sequence_specs_are_one_line_and_write_nothing(spec: str, fragments: list[str],
                                                           tmp_path: Path, cli) -> None:
    path = tmp_path / "s.toml"
    path.write_text(spec, encoding="utf-8")
    before = snapshot(tmp_path)
    result = cli("train", str(path), "--out", str(tmp_path / "run"))
    assert_clean_error(result, *fragments)
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


def test_a_prefix_must_leave_room_in_the_context() -> None:
    model = build_model("makemore-bow", 27)
    vocab = Vocab.from_words(get_words()).chars
    with pytest.raises(SpecError) as e:
        sample(model.stepper(), vocab=vocab, context=16, n=2, prefix="a" * 16, max_length=64)
    assert str(e.value) == ("sampling: prefix 'aaaaaaaaaaaaaaaa' has 16 characters, but this "
                            "sequence model holds words of at most 16 (its context), so a "
                            "prefix may have at most 15")
