"""Assembly: shape inference, the model's own spec, and the presets (the model zoo)."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch

from zoo.build import build_model
from zoo.data import Dataset, load_dataset
from zoo.errors import SpecError
from zoo.registry import get_registry
from zoo.train import objective

PRESETS = sorted(get_registry().presets)


def test_shapes_are_inferred_and_the_last_linear_outputs_the_vocabulary() -> None:
    spec = [{"type": "embedding", "dim": 5}, {"type": "flatten_consecutive", "n": 2},
            {"type": "linear", "out": 7}, "tanh", "flatten", "linear"]
    model = build_model(spec, 13, context=4)
    assert model.shapes == [(4, 5), (2, 10), (2, 7), (2, 7), (14,), (13,)]
    assert model.layers[2].weight.shape == (7, 10)  # in-features from the shape before it
    assert model.layers[5].weight.shape == (13, 14)  # out defaults to the vocabulary
    x = torch.randint(0, 13, (3, 4))  # (B, T)
    assert model(x).shape == (3, 13) and model(x).dtype == torch.float32
    assert [(r.label, r.shape, r.params) for r in model.summary()][2] == (
        "entry 2 (linear)", (2, 7), 77)


def test_context_and_vocabulary_come_from_the_arguments() -> None:
    spec = [{"type": "embedding", "dim": 4}, "flatten", "linear"]
    model = build_model(spec, 5, context=6)
    assert (model.context, model.vocab_size, model.layers[2].weight.shape) == (6, 5, (5, 24))
    with pytest.raises(SpecError) as e:
        build_model(spec, 1)
    assert str(e.value) == "<python>: vocabulary size must be an integer >= 2, got 1"


@pytest.mark.parametrize("name", PRESETS)
def test_model_spec_round_trips(name: str, tmp_path: Path) -> None:
    model = build_model(name, 27)
    again = build_model(model.spec, model.vocab_size)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(model.spec.to_dict()), encoding="utf-8")
    from_file = build_model(str(path), 27)
    for other in (again, from_file):
        assert other.context == model.context
        assert [type(m) for m in other.layers] == [type(m) for m in model.layers]
        assert {k: v.shape for k, v in other.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()}
        assert [e.params for e in other.entries] == [e.params for e in model.entries]


def test_the_builder_refuses_models_that_are_too_large(monkeypatch) -> None:
    monkeypatch.setattr("zoo.build.MAX_PARAMS", 10_000)
    with pytest.raises(SpecError) as e:
        build_model("mlp-bn", 27)
    assert str(e.value) == ("preset 'mlp-bn': the model would have 12,097 parameters; layerzoo "
                            "refuses more than 10,000 (set LAYERZOO_MAX_PARAMS to raise the "
                            "limit)")


@functools.cache
def dataset(context: int) -> Dataset:
    return load_dataset(None, context, seed=0)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_loss_at_init_is_near_uniform(name: str) -> None:
    """The output layer starts small, so every preset starts near ln(vocab)."""
    torch.manual_seed(0)
    model = build_model(name, 27)
    data = load_dataset(None, model.context, seed=0, sequence=model.kind == "sequence")
    x, y = (torch.from_numpy(a) for a in data.splits["val"].arrays())  # (N, T), (N,[T])
    with torch.no_grad():
        loss = objective(model.train()(x), y).item()
    assert loss == pytest.approx(math.log(data.vocab.size), rel=0.03)


def test_the_bundled_data_has_27_symbols() -> None:
    assert dataset(3).vocab.size == 27 and dataset(3).vocab.chars[0] == "."


@pytest.mark.parametrize("name, params", [("bigram", 729), ("mlp", 11_897),
                                          ("mlp-bn", 12_097), ("deep-bn", 46_997),
                                          ("wavenet", 76_579), ("transformer", 104_091)])
def test_preset_sizes(name: str, params: int) -> None:
    assert build_model(name, 27).num_parameters() == params


def test_wavenet_is_the_hierarchical_model() -> None:
    model = build_model("wavenet", 27)
    assert model.shapes[:5] == [(8, 24), (4, 48), (4, 128), (4, 128), (4, 128)]
    assert model.shapes[-2:] == [(128,), (27,)]
    assert sum(e.layer.name == "batchnorm" for e in model.entries) == 3
