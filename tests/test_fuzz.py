"""Property-based tests: any spec or sampling input builds/samples, or raises ZooError.

The spec side fuzzes ``Spec.from_dict``, ``expand`` and ``build_model`` with arbitrary
JSON-like values, TOML/JSON text and bytes in files, and near-valid specs (registry layer names
and typos of them, right and wrong keys and values, nested repeat blocks). A model that builds
must also run: int64 [B, T] -> logits [B, V]. The sampler side fuzzes every argument of
``zoo.sampling.sample``, over a numpy model and over an onnxruntime model.

The Hypothesis profiles live in conftest.py: "ci" (default; bounded, derandomized) and
"thorough" (HYPOTHESIS_PROFILE=thorough).
"""

from __future__ import annotations

import functools
import json
import math
import string
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

import zoo.build
from zoo.build import build_model
from zoo.errors import ZooError
from zoo.recipe import Recipe
from zoo.registry import Registry
from zoo.sampling import sample
from zoo.spec import Spec, expand, read_spec_file

MAX_PARAMS = 300_000  # the fuzzed models stay small and quick; larger ones must be refused


@pytest.fixture(scope="module", autouse=True)
def _small_models() -> Iterator[None]:
    # module scope: hypothesis runs many examples per test, so no function-scoped monkeypatch
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(zoo.build, "MAX_PARAMS", MAX_PARAMS)
        patch.delenv(zoo.build.MAX_PARAMS_ENV, raising=False)  # it would override the limit
        yield


@functools.cache
def registry() -> Registry:
    return Registry.load(strict=False)


@functools.cache
def layer_table() -> dict[str, dict[str, list[Any]]]:
    """Each registered layer's parameter names, with values worth trying for each."""
    table = {}
    for name, layer in registry().layers.items():
        table[name] = {p.name: _choices(p.annotation) for p in layer.parameters()}
    return table


def _choices(annotation: Any) -> list[Any]:
    out: list[Any] = []
    for option in typing.get_args(annotation) or (annotation,):
        if typing.get_origin(option) is typing.Literal:
            out += list(typing.get_args(option))
    return out


# -- values -------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10))
JSONLIKE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=16)
# values a layer parameter might be given: mostly plausible, sometimes absurd
PARAM_VALUES = st.one_of(
    st.integers(-3, 40), st.sampled_from([0, 1, 2, 3, 8, 1000, 10**6, 2**40, 2**70]),
    st.floats(-2, 2), st.sampled_from([0.0, 1e-12, 0.5, 1.0, 1.5, 1e30, math.nan, math.inf]),
    st.booleans(), st.none(), st.sampled_from(["auto", "tanh", "none", "zeros", "normal",
                                               "kaiming", "xavier", "", "200"]),
    st.lists(st.integers(0, 4), max_size=2), st.dictionaries(st.text(max_size=3),
                                                             st.integers(), max_size=1))


def one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (and False when shrinking: the unmutated case)."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def typo(draw: st.DrawFn, word: str) -> str:
    """``word`` with one character dropped, doubled, replaced or swapped, or its case changed."""
    i = draw(st.integers(0, max(len(word) - 1, 0)))
    how = draw(st.sampled_from(["drop", "double", "replace", "swap", "upper", "space"]))
    if how == "drop":
        return word[:i] + word[i + 1:]
    if how == "double":
        return word[:i] + word[i:i + 1] * 2 + word[i + 1:]
    if how == "replace":
        return word[:i] + draw(st.sampled_from(string.ascii_lowercase + "-_ 9é")) + word[i + 1:]
    if how == "swap" and len(word) > i + 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if how == "upper":
        return word.upper()
    return f" {word}"


@st.composite
def layer_entry(draw: st.DrawFn, depth: int = 0) -> Any:
    """One entry of model.layers: valid-looking mostly, broken in one way or another often."""
    table = layer_table()
    name = draw(st.sampled_from(sorted(table)))
    kind = draw(st.sampled_from(["name", "table", "table", "typo", "junk"]
                                + (["repeat"] if depth < 2 else [])))
    if kind == "name":
        return name
    if kind == "typo":
        return draw(typo(name)) if draw(st.booleans()) else {"type": draw(typo(name))}
    if kind == "junk":
        return draw(JSONLIKE)
    if kind == "repeat":
        block: dict[str, Any] = {
            "repeat": draw(st.one_of(st.integers(-1, 4), st.sampled_from([2000, "2", 1.0,
                                                                          True]))),
            "layers": draw(st.one_of(st.lists(layer_entry(depth + 1), max_size=3),
                                     JSONLIKE))}
        if draw(one_in(10)):
            block[draw(st.sampled_from(["layer", "type", "x"]))] = 1
        return block
    entry: dict[str, Any] = {"type": name}
    params = table[name]
    for key in draw(st.lists(st.sampled_from(sorted(params)), unique=True)) if params else []:
        choices = params[key]
        entry[key] = draw(st.sampled_from(choices) if choices and draw(st.booleans())
                          else PARAM_VALUES)
    if draw(one_in(6)):
        entry[draw(st.one_of(st.sampled_from(["typ", "outt", "dims", "repeat"]),
                             st.text(max_size=5)))] = draw(PARAM_VALUES)
    if draw(one_in(10)):
        entry["type"] = draw(SCALARS)
    return entry


ACTIVATIONS = ["tanh", "relu", "sigmoid", "identity", "gelu", "leaky_relu", "hardtanh",
               "dropout", "swish", "hardswishish"]
NORMS = ["batchnorm", "layernorm", "rmsnorm"]


def valid_entry(depth: int = 0) -> st.SearchStrategy[Any]:
    """An entry that is right on its own (whether it fits its neighbours is another matter)."""
    options = [
        st.sampled_from(ACTIVATIONS + NORMS),
        st.builds(lambda out, bias: {"type": "linear", "out": out, "bias": bias},
                  st.integers(1, 48), st.booleans()),
        st.builds(lambda n: {"type": "flatten_consecutive", "n": n}, st.integers(1, 3)),
        st.builds(lambda p: {"type": "dropout", "p": p}, st.floats(0, 1)),
    ]
    if depth < 2:
        options.append(st.builds(lambda r, body: {"repeat": r, "layers": body},
                                 st.integers(1, 3),
                                 st.lists(valid_entry(depth + 1), min_size=1, max_size=3)))
    return st.one_of(*options)


def small_embedding() -> st.SearchStrategy[Any]:
    return st.one_of(st.just("embedding"),
                     st.builds(lambda d: {"type": "embedding", "dim": d}, st.integers(1, 12)))


@st.composite
def layers(draw: st.DrawFn) -> Any:
    """model.layers: a plausible skeleton with fuzzed middle entries, or anything at all."""
    shape = draw(st.sampled_from(["clean", "clean", "skeleton", "skeleton", "loose", "junk"]))
    entry = valid_entry() if shape == "clean" else st.one_of(valid_entry(), layer_entry())
    middle = draw(st.lists(entry, max_size=5))
    if shape == "junk":
        return draw(JSONLIKE)
    if shape == "loose":
        return middle
    head = [draw(small_embedding())]
    if draw(st.booleans()):
        head.append({"type": "flatten_consecutive", "n": draw(st.integers(1, 4))})
    tail = ["flatten", "linear"] if draw(st.booleans()) else ["flatten", *middle[:1], "linear"]
    return head + middle[1:] + tail


@st.composite
def spec_data(draw: st.DrawFn) -> Any:
    """A spec as a TOML/JSON file would hold it: near-valid, with mistakes at every level."""
    if draw(one_in(10)):
        return draw(JSONLIKE)
    model: dict[str, Any] = {"layers": draw(layers())}
    if not draw(one_in(4)):
        model["context"] = draw(st.one_of(st.integers(1, 9), st.sampled_from(
            [0, -1, 4096, 5000, "3", 2.5, True, None, [3]])))
    if draw(one_in(10)):
        model[draw(st.sampled_from(["layer", "contxt", "extra"]))] = draw(SCALARS)
    data: dict[str, Any] = {"model": model if not draw(one_in(20)) else draw(SCALARS)}
    if draw(st.booleans()):
        fields = Recipe.fields()
        train = {}
        for key in draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=3)):
            train[key] = draw(st.one_of(st.sampled_from(_choices(fields[key].annotation) or [1]),
                                        PARAM_VALUES))
        if draw(one_in(5)):
            train[draw(typo("steps"))] = 5
        data["train"] = train if not draw(one_in(10)) else draw(SCALARS)
    if draw(one_in(5)):
        data["description"] = draw(SCALARS)
    if draw(one_in(10)):
        data[draw(typo("model"))] = {}
    return data


VOCABS = st.one_of(st.integers(2, 40), st.sampled_from([27, 27, 2, 1, 0, -3, 27.0, "27", None]))


def assert_builds_and_runs_or_zoo_error(data: Any, vocab: Any) -> bool:
    """The property: a ZooError, or a model that maps int64 [B, T] to logits [B, V] (a window
    model) or [B, T, V] (a sequence model)."""
    try:
        spec = data if isinstance(data, Spec) else Spec.from_dict(data, source="<fuzz>")
        expand(spec, registry())
        model = build_model(spec, vocab, registry=registry())
    except ZooError as e:
        assert str(e) and "\n" not in str(e)
        event(f"refused: {type(e).__name__}")
        return False
    assert isinstance(vocab, int) and vocab >= 2
    assert model.num_parameters() <= MAX_PARAMS
    x = torch.randint(0, vocab, (3, model.context))  # (B, T)
    with torch.no_grad():
        logits = model.eval()(x)  # (B, V) or (B, T, V)
    want = (3, vocab) if model.kind == "window" else (3, model.context, vocab)
    assert logits.shape == want and logits.dtype == torch.float32
    event("built and ran")
    return True


# -- the spec: parser, validator, builder -------------------------------------------------

@given(JSONLIKE, VOCABS)
def test_any_json_value_is_a_spec_or_a_zoo_error(data, vocab):
    assert_builds_and_runs_or_zoo_error(data, vocab)


@given(spec_data(), VOCABS)
def test_near_valid_specs_build_and_run_or_raise_zoo_error(data, vocab):
    assert_builds_and_runs_or_zoo_error(data, vocab)


@given(st.lists(layer_entry(), min_size=1, max_size=6), st.integers(1, 6), st.integers(2, 30))
def test_python_entry_lists_build_and_run_or_raise_zoo_error(entries, context, vocab):
    try:
        model = build_model(entries, vocab, context=context, registry=registry())
    except ZooError:
        return
    want = (2, vocab) if model.kind == "window" else (2, context, vocab)
    assert model.numpy_logits(np.zeros((2, context), np.int64)).shape == want


def to_toml(data: dict[str, Any]) -> str:
    """Top-level ``key = value`` lines; None (which TOML lacks) becomes the string 'none'."""
    return "".join(f"{json.dumps(str(k))} = {_toml_value(v)}\n" for k, v in data.items())


def _toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}"
                           for k, v in value.items()) + "}"


@st.composite
def spec_text(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, file bytes): near-valid TOML or JSON, maybe damaged, or arbitrary text/bytes."""
    kind = draw(st.sampled_from(["toml", "json", "text", "bytes"]))
    suffix = draw(st.sampled_from([".toml", ".json"]))
    if kind == "bytes":
        return suffix, draw(st.binary(max_size=300))
    if kind == "text":
        return suffix, draw(st.text(max_size=200)).encode("utf-8", "surrogatepass")
    data = draw(spec_data())
    if kind == "json" or not isinstance(data, dict):
        suffix, text = ".json", json.dumps(data)
    else:
        suffix, text = ".toml", to_toml(data)
    if draw(one_in(4)) and text:  # damage one character
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(['"', "[", "{", "=", "\n", ",", "", "\x00"])) \
            + text[i + 1:]
    return suffix, text.encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@given(spec_text(), VOCABS)
def test_spec_files_of_any_content_read_or_raise_zoo_error(files, file, vocab):
    suffix, content = file
    path = files / f"spec{suffix}"
    path.write_bytes(content)
    try:
        spec = read_spec_file(path)
    except ZooError as e:
        assert str(e).startswith(str(path)), e  # the place is named first
        return
    assert spec.source == str(path)
    assert_builds_and_runs_or_zoo_error(spec, vocab)


# -- the sampler ----------------------------------------------------------------------------

VOCAB = tuple(".abcdefghijklmnopqrstuvwxyz")
rng = np.random.default_rng(0)
TABLE = rng.normal(size=(len(VOCAB), len(VOCAB))).astype(np.float32) * 3  # (V, V) bigram logits


def bigram_logits(context: np.ndarray) -> np.ndarray:
    return TABLE[context[:, -1]]  # (B, V)


JUNK = st.sampled_from([None, "3", 2.5, True, [1], math.nan, -1])
PREFIXES = st.one_of(st.text(alphabet="abcxyz", max_size=6),
                     st.text(alphabet="abcz.Aé \n0", max_size=6), st.text(max_size=4), JUNK)
SAMPLING = {
    "n": st.one_of(st.integers(-2, 40), st.sampled_from([10**7 + 1, 10**12]), JUNK),
    "seed": st.one_of(st.integers(-2, 2**70), JUNK),
    "temperature": st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                             st.sampled_from([1e-300, 1e-3, 1.0, 1e300, 0, -1, 5]), JUNK),
    "top_k": st.one_of(st.none(), st.integers(-1, 40), JUNK),
    "prefix": PREFIXES,
    "max_length": st.one_of(st.integers(-1, 30), st.sampled_from([100_000]), JUNK),
}


def check_words(words: list[str], vocab: tuple[str, ...], options: dict[str, Any]) -> None:
    assert isinstance(words, list) and len(words) == options["n"]
    for word in words:
        assert word.startswith(options["prefix"]) and len(word) <= options["max_length"]
        assert set(word) <= set(vocab[1:])


@given(context=st.one_of(st.integers(1, 5), JUNK),
       vocab=st.one_of(st.just(VOCAB), st.sampled_from([("a", "b"), (".",), (".", "a", "a"),
                                                        (".", "ab"), ()])),
       **SAMPLING)
def test_sampler_gives_words_or_a_zoo_error(context, vocab, **options):
    try:
        words = sample(bigram_logits, vocab=vocab, context=context, **options)
    except ZooError as e:
        assert str(e) and "\n" not in str(e)
        return
    check_words(words, vocab, options)


@given(**SAMPLING)
@settings(max_examples=60 if settings().max_examples < 1000 else 1000)
def test_sampler_over_onnxruntime_gives_words_or_a_zoo_error(exported, **options):
    from zoo.export.runtime import OnnxModel

    model = onnx_model(exported)
    try:
        words = model.sample(**options)
    except ZooError as e:
        assert str(e) and "\n" not in str(e)
        return
    check_words(words, model.vocab, options)
    assert isinstance(model, OnnxModel)


@functools.cache
def _load_onnx(path: Path):
    from zoo.export.runtime import OnnxModel

    return OnnxModel.load(path)


def onnx_model(exported):
    return _load_onnx(exported("mlp-bn")[1])


@given(st.lists(st.one_of(st.integers(-2, 30), st.sampled_from([-(2**63), 2**63 - 1])),
                max_size=12), st.integers(0, 4))
def test_onnx_logits_take_any_ids_or_raise_zoo_error(exported, ids, rows):
    model = onnx_model(exported)
    flat = np.array(ids or [0], np.int64)
    x = np.resize(flat, (rows, model.context))  # (B, T)
    try:
        logits = model.logits(x)
    except ZooError:
        assert x.size and (x.min() < 0 or x.max() >= len(model.vocab) or x.dtype.kind != "i")
        return
    assert logits.shape == (len(x), len(model.vocab)) and np.isfinite(logits).all()
