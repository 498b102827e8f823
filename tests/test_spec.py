"""Specs: Python, TOML and JSON give the same model; bad specs get every problem, by entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from zoo.build import build_model
from zoo.errors import SpecError
from zoo.registry import get_registry
from zoo.spec import Spec, expand, load_spec, read_spec_file

# exact messages ("did you mean ...") must not depend on what else is installed: only the
# built-in plugins load here (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("fresh_registry")

LAYERS = [{"type": "embedding", "dim": 10}, "flatten",
          {"repeat": 2, "layers": [{"type": "linear", "out": 32, "bias": False}, "batchnorm",
                                   "tanh"]},
          "linear"]
TOML = """\
description = "two hidden layers"

[model]
context = 4
layers = [
  { type = "embedding", dim = 10 },
  "flatten",
  { repeat = 2, layers = [{ type = "linear", out = 32, bias = false }, "batchnorm", "tanh"] },
  "linear",
]

[train]
steps = 100
lr = 0.05
"""
AS_DICT = {"description": "two hidden layers", "model": {"context": 4, "layers": LAYERS},
           "train": {"steps": 100, "lr": 0.05}}


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return model.state_dict()


def built(source: Any, **kw: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(source, 27, **kw)


def test_python_toml_and_json_specs_build_the_same_model(tmp_path: Path) -> None:
    toml_file = tmp_path / "two.toml"
    toml_file.write_text(TOML, encoding="utf-8")
    json_file = tmp_path / "two.json"
    json_file.write_text(json.dumps(AS_DICT), encoding="utf-8")
    models = [built(LAYERS, context=4), built(AS_DICT), built(str(toml_file)), built(json_file)]
    want = state(models[0])
    for model in models[1:]:
        assert model.context == 4
        got = state(model)
        assert list(got) == list(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key
    spec = read_spec_file(toml_file)
    assert (spec.description, spec.train, spec.source) == (
        "two hidden layers", {"steps": 100, "lr": 0.05}, str(toml_file))
    assert spec.to_dict() == AS_DICT


def test_repeat_blocks_unroll_with_labels() -> None:
    entries = expand(load_spec(LAYERS))
    assert [e.layer.name for e in entries] == ["embedding", "flatten"] + [
        "linear", "batchnorm", "tanh"] * 2 + ["linear"]
    assert [e.index for e in entries] == list(range(9))
    assert entries[5].label == "entry 2.0 (linear, repeat 2 of 2)"
    assert entries[5].params.out == 32 and entries[5].params.bias is False
    assert entries[8].label == "entry 3 (linear)" and entries[8].params.out is None


def test_a_python_list_defaults_to_context_3_and_context_overrides() -> None:
    assert load_spec(["embedding", "flatten", "linear"]).context == 3
    assert load_spec(AS_DICT, context=7).context == 7


def test_a_preset_name_loads_its_spec() -> None:
    spec = load_spec("wavenet")
    assert (spec.context, spec.source) == (8, "preset 'wavenet'")


def entry(*layers: Any) -> list[Any]:
    return [{"type": "embedding", "dim": 4}, "flatten", *layers, "linear"]


# (spec, exact message). Every message names the entry, the key, what was expected and given.
BAD_SPECS = [
    pytest.param(entry("batchnrom"),
                 "<python>: entry 2: unknown layer 'batchnrom' (did you mean 'batchnorm'?)",
                 id="unknown-layer"),
    pytest.param(entry({"type": "linear", "outt": 5}),
                 "<python>: entry 2 (linear): unknown key 'outt' (did you mean 'out'?); linear "
                 "takes 'out', 'bias', 'init', 'gain', 'scale'", id="unknown-key"),
    pytest.param(entry({"type": "linear", "out": "big"}),
                 "<python>: entry 2 (linear): key 'out': expected an integer or none >= 1, got "
                 "string 'big'", id="wrong-type"),
    pytest.param(entry({"type": "linear", "bias": 1}),
                 "<python>: entry 2 (linear): key 'bias': expected true or false, got int 1",
                 id="int-for-bool"),
    pytest.param(entry({"type": "dropout", "p": 1.5}),
                 "<python>: entry 2 (dropout): key 'p': expected a finite number >= 0 and <= 1, "
                 "got float 1.5",
                 id="out-of-range"),
    pytest.param(entry({"type": "linear", "init": "he"}),
                 "<python>: entry 2 (linear): key 'init': expected one of 'kaiming', 'xavier', "
                 "'normal', 'zeros', got string 'he'", id="not-a-choice"),
    pytest.param(entry({"out": 5}),
                 "<python>: entry 2: key 'type' is missing: expected a layer name, e.g. "
                 "{type = \"linear\", out = 200}, or a block {repeat = N, layers = [...]} or "
                 "{residual = [...]}",
                 id="missing-type"),
    pytest.param(entry({"type": "linear"}, "tanh"),
                 "<python>: entry 2 (linear): key 'out' is missing: expected an integer >= 1 "
                 "(only the last linear defaults to the vocabulary size)", id="missing-out"),
    pytest.param(entry(3), "<python>: entry 2: expected a layer name or a table with 'type', "
                 "got int 3", id="not-an-entry"),
    pytest.param([{"type": "embedding"}, {"type": "flatten_consecutive", "n": 2}, "linear"],
                 "<python>: entry 1 (flatten_consecutive): cannot merge 2 consecutive "
                 "positions of a sequence of length 3: 3 is not a multiple of 2; its input "
                 "(3, 27) comes from entry 0 (embedding)", id="shapes-do-not-fit"),
    pytest.param(entry("flatten_consecutive"),
                 "<python>: entry 2 (flatten_consecutive): expects a sequence [B, T, C], got "
                 "features of shape (12,); its input (12,) comes from entry 1 (flatten)",
                 id="shapes-name-both-entries"),
    pytest.param(["flatten", "linear"],
                 "<python>: entry 0 (flatten) takes features but the model input (token ids) "
                 "gives token ids; start the layers with one that takes token ids "
                 "('embedding')", id="no-embedding"),
    pytest.param(["embedding", "flatten", {"type": "linear", "out": 5}],
                 "<python>: the model must end with logits of shape (27,) for a 27-symbol "
                 "vocabulary, but entry 2 (linear) gives (5,); end with a layer that gives "
                 "(27,), such as a linear map to the vocabulary", id="wrong-output"),
    pytest.param([], "<python>: model.layers is empty: a model needs at least one layer",
                 id="empty"),
    pytest.param(entry({"repeat": 0, "layers": ["tanh"]}),
                 "<python>: entry 2 (repeat block): key 'repeat': expected an integer >= 1, "
                 "got int 0", id="repeat-0"),
    pytest.param(entry({"repeat": "two", "layers": ["tanh"]}),
                 "<python>: entry 2 (repeat block): key 'repeat': expected an integer >= 1, "
                 "got string 'two'", id="repeat-two"),
    pytest.param(entry({"repeat": 2, "layers": []}),
                 "<python>: entry 2 (repeat block): key 'layers': expected a non-empty list of "
                 "layer entries, got list []", id="repeat-empty"),
    pytest.param(entry({"repeat": 2, "layer": ["tanh"]}),
                 "<python>: 2 problems: entry 2 (repeat block): unknown key 'layer' (did you "
                 "mean 'layers'?); entry 2 (repeat block): key 'layers': expected a non-empty "
                 "list of layer entries, got nothing", id="repeat-typo"),
    pytest.param(5, "expected a list of layer entries, a table, a file path or a preset name, "
                 "got int 5", id="not-a-spec"),
    pytest.param({"model": {"layers": entry()}, "modle": 1},
                 "<python>: top level: unknown key 'modle' (did you mean 'model'?); expected "
                 "one of 'description', 'model', 'train'", id="top-level-typo"),
    pytest.param({"layers": entry()},
                 "<python>: 2 problems: top level: unknown key 'layers'; expected one of "
                 "'description', 'model', 'train'; key 'model' is missing: expected a table "
                 "with 'layers' (and optionally 'context')", id="no-model-table"),
    pytest.param({"model": {"layers": entry(), "context": "3"}},
                 "<python>: model.context: expected an integer >= 1 or 'auto', got string '3'",
                 id="context-type"),
    pytest.param({"model": {"layers": entry()}, "train": {"step": 5}},
                 "<python>: train: unknown key 'step' (did you mean 'steps'?)",
                 id="bad-train-key"),
    pytest.param({"model": {"layers": entry()}, "train": {"lr": "fast"}},
                 "<python>: train.lr: expected a finite number >= 0, got string 'fast'",
                 id="bad-train-value"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS)
def test_bad_spec_message(spec: Any, message: str) -> None:
    with pytest.raises(SpecError) as e:
        build_model(spec, 27)
    assert str(e.value) == message


def test_a_missing_reduction_names_every_registered_reduction() -> None:
    reductions = [n for n, t in get_registry().layers.items() if t.reduction]
    assert {"flatten", "last", "mean"} <= set(reductions)
    with pytest.raises(SpecError) as e:  # a time axis of 2 after merging pairs: neither kind
        build_model(["embedding", "flatten_consecutive", "linear"], 27, context=4)
    listed = ", ".join(repr(n) for n in reductions[:-1]) + f" or {reductions[-1]!r}"
    assert str(e.value) == (
        "<python>: the model must end with logits of shape (27,) for a 27-symbol vocabulary "
        "(a window model) or (4, 27) (a sequence model, a prediction per position), but "
        f"entry 2 (linear) gives (2, 27); add a {listed} before the last layer to reduce "
        "the time axis")


def test_logits_at_every_position_make_a_sequence_model() -> None:
    model = build_model(["embedding", "linear"], 27)  # a bigram model, trained per position
    assert model.kind == "sequence"
    assert model(torch.zeros((2, 3), dtype=torch.int64)).shape == (2, 3, 27)
    assert build_model(["embedding", "flatten", "linear"], 27).kind == "window"


def test_a_sequence_model_refuses_a_layer_that_is_not_causal() -> None:
    with pytest.raises(SpecError) as e:
        build_model(["embedding", "batchnorm", "linear"], 27)
    assert str(e.value) == (
        "<python>: entry 1 (batchnorm) of plugin 'norm' is not causal on [B, T, C] (no "
        "causal=True in the layer type), but a sequence model (logits [B, T, V]) trains every "
        "position at once, so a layer that sees later positions would leak them; use causal "
        "layers, or reduce the time axis for a window model")


def test_every_problem_is_reported_at_once() -> None:
    spec = {"model": {"context": 0, "layers": [
        "embdding", {"type": "linear", "out": -1}, {"type": "tanh", "x": 1},
        {"repeat": 0, "layers": ["tanh"]},
        {"repeat": 3, "layers": [{"type": "dropout", "p": 2}]}]},
        "train": {"optimiser": "sgd"}}
    with pytest.raises(SpecError) as e:
        build_model(spec, 27)
    assert e.value.problems == [
        "model.context: expected an integer from 1 to 4096, got 0",
        "train: unknown key 'optimiser' (did you mean 'optimizer'?)",
        "entry 0: unknown layer 'embdding' (did you mean 'embedding' or "
        "'position_embedding'?)",
        "entry 1 (linear): key 'out': expected an integer or none >= 1, got int -1",
        "entry 2 (tanh): unknown key 'x'; tanh takes none",
        "entry 3 (repeat block): key 'repeat': expected an integer >= 1, got int 0",
        # the same mistake in every repeat is reported once
        "entry 4.0 (dropout, repeat 1 of 3): key 'p': expected a finite number >= 0 and <= 1, "
        "got int 2",
    ]
    assert str(e.value).startswith("<python>: 7 problems: model.context: ")


@pytest.mark.parametrize("name, text, message", [
    ("bad.toml", "[model]\nlayers = [\"tanh\",\n  oops]\n",
     "{path}:3: invalid TOML: Invalid value"),
    ("bad.json", '{"model": {\n  "layers": [}\n}', "{path}:2:14: invalid JSON: "),
    ("list.json", '["embedding", "flatten", "linear"]',
     "{path}: expected a table with 'model' (and optionally 'train', 'description'), got "
     "list ['embedding', 'flatten', 'linear']"),
    ("noname.toml", "[model]\nlayers = [{ out = 3 }]\n",
     "{path}: entry 0: key 'type' is missing"),
])
def test_spec_file_errors_name_the_file_and_line(tmp_path: Path, name: str, text: str,
                                                 message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as e:
        build_model(str(path), 27)
    assert str(e.value).startswith(message.format(path=path))


def test_missing_spec_file_and_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        load_spec(str(tmp_path / "nope.toml"))
    assert str(e.value) == f"{tmp_path / 'nope.toml'}: no such spec file"
    with pytest.raises(SpecError) as e:
        load_spec("wavnet")
    assert str(e.value) == ("no preset or spec file named 'wavnet' (did you mean 'wavenet'?); "
                            "`zoo presets` lists presets")


def test_spec_validation_needs_no_torch_build() -> None:
    spec = load_spec(entry({"type": "linear", "out": 8}))
    assert isinstance(spec, Spec) and len(expand(spec)) == 4
