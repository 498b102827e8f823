"""How a plugin declares a layer type: ``LayerType``, its parameters, and where it sits.

A layer type is data, not a subclass: a name, a parameters dataclass (typed fields with
defaults and a one-line doc each, made with ``param``), a shape function and a build function.
Validation, ``zoo layers`` and the docs all read the same declaration.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Shape = tuple[int, ...]
"""A tensor shape without the batch axis, e.g. ``(8, 24)`` for ``[B, 8, 24]``."""

NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# the one key a layer entry cannot give its layer: it names the layer. Block keys ("repeat",
# "layers", "residual") mean a block only in a table without "type", so a parameter may use them
RESERVED = frozenset({"type"})


def param(default: Any = dataclasses.MISSING, doc: str = "", *, min: float | None = None,
          max: float | None = None) -> Any:
    """Declare one layer parameter: a dataclass field with a one-line doc and optional bounds.

    ``min``/``max`` are inclusive bounds for numbers; leave ``default`` out for a required one.
    """
    meta = {"doc": doc, "min": min, "max": max}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class NoParams:
    """Parameters of a layer type that takes none."""


@dataclass(frozen=True)
class Place:
    """Where an entry sits in a model: what a shape or build function may depend on."""

    index: int  # position in the expanded list of layers (repeats unrolled)
    label: str  # how messages name it: "entry 3 (linear)"
    vocab_size: int  # number of symbols, '.' included
    context: int  # context length T of the model input [B, T]
    next_gain: float  # init gain of the next later entry that declares one; 1.0 if none
    last_of_type: bool  # no later entry has this entry's type

    @classmethod
    def example(cls, **changes: Any) -> Place:
        """A Place for a plugin's unit tests: the first entry of a 27-symbol, context-8 model,
        the last of its type, before no gain; ``changes`` set any field
        (``Place.example(context=16, next_gain=5 / 3)``)."""
        values = {"index": 0, "label": "entry 0 (test)", "vocab_size": 27, "context": 8,
                  "next_gain": 1.0, "last_of_type": True}
        return cls(**{**values, **changes})


@dataclass(frozen=True)
class LayerType:
    """A layer type as a plugin registers it.

    ``shape(in_shape, params, place)`` returns the output shape (batch axis left out) or raises
    ``zoo.ShapeError`` with a reason; ``build(in_shape, params, place)`` returns an ``nn.Module``
    with its parameters initialised. ``gain`` is the init gain a preceding linear map should use
    (nonlinearities and linear maps declare one; shape-only layers leave it None).
    ``takes_tokens`` marks a layer whose input is the int64 context rather than features.
    ``causal`` declares that on a sequence ``[B, T, C]`` the output at time t depends only on
    inputs at times <= t (the conformance kit checks it); a sequence model (output
    ``[B, T, V]``) may hold only causal layers. ``incremental`` says how a causal layer runs one
    position at a time, for the step graph a sequence model exports: ``"position"`` for a layer
    that acts on each position alone (its forward on one position, ``[B, C]``, or the ids
    ``[B]`` of a layer that takes tokens, is its step), ``"state"`` for
    one whose module implements ``initial_state(batch) -> dict[str, Tensor]`` and
    ``step(x_t, state, position) -> (y_t, state)`` (``x_t`` is ``[B, C]``, or the ids ``[B]`` of a
    layer that takes tokens; ``position`` the int64 index t as a 0-d tensor; every state tensor
    starts at zeros and keeps its shape from step to step). A tensor with one entry per
    position (attention's keys) is a cache: named in the module's ``state_caches``, it is
    ``[T, B, ...]`` in ``initial_state``, ``step`` gets its entries before t and returns only
    entry t, ``[B, ...]``. ``reduction`` declares a layer that
    turns a sequence ``[B, T, C]`` into features ``[B, C']``; the builder lists such layers
    when a model's output still has a time axis.
    ``examples`` are parameter sets (``({"heads": 2}, {"heads": 4, "dropout": 0.1})``) that
    ``zoo test-plugin`` checks the layer with, on several shapes each; empty, it checks the
    defaults (so a layer with a required parameter should give one).
    ``saturated(output, params)`` returns a boolean mask of the output units that are
    saturated (tanh: ``|y| > 0.97``), and ``dead_units`` declares that a unit can die (relu:
    zero for every input); ``zoo train --diagnose`` reports both (zoo.diagnostics).
    ``onnx_translation`` is needed only when the module uses ops the ONNX exporter cannot
    translate: a mapping (or a function returning one) from torch ops to onnxscript functions,
    passed to ``torch.onnx.export(custom_translation_table=...)``.
    """

    name: str
    shape: Callable[[Shape, Any, Place], Shape]
    build: Callable[[Shape, Any, Place], Any]
    params: type = NoParams
    doc: str = ""
    gain: float | None = None
    takes_tokens: bool = False
    causal: bool = False
    incremental: Literal["position", "state"] | None = None
    reduction: bool = False
    onnx_translation: Mapping[Any, Any] | Callable[[], Mapping[Any, Any]] | None = None
    examples: tuple[Mapping[str, Any], ...] = ()  # parameter sets `zoo test-plugin` checks
    saturated: Callable[[Any, Any], Any] | None = None  # (output, params) -> bool mask
    dead_units: bool = False  # a unit can die: zero for every input (relu)
    plugin: str = ""  # filled in by the registry: the plugin that registered it
    version: str = ""  # filled in by the registry: that plugin's version

    def parameters(self) -> list[ParamInfo]:
        """The declared parameters, in declaration order."""
        hints = typing.get_type_hints(self.params)
        return [ParamInfo.from_field(f, hints[f.name]) for f in dataclasses.fields(self.params)]

    def translation_table(self) -> dict[Any, Any]:
        """The ONNX translation entries this layer type supplies (empty for standard ops)."""
        table = self.onnx_translation
        if callable(table):
            table = table()
        return dict(table or {})


@dataclass(frozen=True)
class ParamInfo:
    """One declared parameter, as validation and ``zoo layers`` see it."""

    name: str
    annotation: Any
    default: Any  # dataclasses.MISSING when required
    doc: str
    min: float | None
    max: float | None

    @classmethod
    def from_field(cls, f: dataclasses.Field, annotation: Any) -> ParamInfo:
        meta = f.metadata
        return cls(f.name, annotation, f.default, meta.get("doc", ""), meta.get("min"),
                   meta.get("max"))

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def describe_type(self) -> str:
        return describe(self.annotation)

    def expected(self) -> str:
        """What a valid value is, in words: 'an integer >= 1', "one of 'a', 'b'"."""
        words = describe(self.annotation)
        if self.min is not None:
            words += f" >= {_bound(self.min)}"
        if self.max is not None:
            words += (f" <= {_bound(self.max)}" if self.min is None
                      else f" and <= {_bound(self.max)}")
        return words

    def check(self, value: Any) -> tuple[bool, Any, str]:
        """Return (ok, converted value, reason) for a value given in a spec."""
        ok, converted = conform(value, self.annotation)
        in_bounds = not (isinstance(converted, (int, float)) and not isinstance(converted, bool)
                         and ((self.min is not None and converted < self.min)
                              or (self.max is not None and converted > self.max)))
        if ok and in_bounds:
            return True, converted, ""
        return False, value, f"expected {self.expected()}"


def _bound(x: float) -> str:
    # large integer bounds (a seed's 2**64 - 1) exactly, not as 1.84467e+19
    return f"{x:,}" if isinstance(x, int) and abs(x) >= 10**6 else f"{x:g}"


def _options(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def conform(value: Any, annotation: Any) -> tuple[bool, Any]:
    """Check a spec value against a parameter annotation; ints widen to floats."""
    for option in _options(annotation):
        if typing.get_origin(option) is Literal:
            # bool == int in Python: compare types too, so True never matches a Literal[1]
            if any(value == c and type(value) is type(c) for c in typing.get_args(option)):
                return True, value
        elif option is type(None):
            if value is None:
                return True, None
        elif option is bool:
            if isinstance(value, bool):
                return True, value
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True, value
        elif option is float:
            # nan and inf are never meaningful layer or recipe settings
            if (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value)):
                return True, float(value)
        elif option is str:
            if isinstance(value, str):
                return True, value
    return False, value


def describe(annotation: Any) -> str:
    """Human words for an annotation: 'an integer', "one of 'a', 'b'", 'a number or none'."""
    words = []
    for option in _options(annotation):
        if typing.get_origin(option) is Literal:
            words.append("one of " + ", ".join(repr(c) for c in typing.get_args(option)))
        else:
            words.append({int: "an integer", float: "a finite number", bool: "true or false",
                          str: "a string", type(None): "none"}.get(option, str(option)))
    return " or ".join(words)


SUPPORTED = (int, float, bool, str, type(None))
INCREMENTAL = (None, "position", "state")


def declaration_problems(layer: Any) -> list[str]:
    """Why a registered object is not a usable LayerType (empty when it is)."""
    if not isinstance(layer, LayerType):
        return [f"expected a zoo.LayerType, got {type(layer).__name__}"]
    problems = []
    if not isinstance(layer.name, str) or not NAME.match(layer.name):
        problems.append(f"name {layer.name!r} is not snake_case (a-z, 0-9, _)")
    for attr in ("shape", "build"):
        if not callable(getattr(layer, attr)):
            problems.append(f"{attr} must be callable")
    if layer.incremental not in INCREMENTAL:
        problems.append(f"incremental must be one of {', '.join(map(repr, INCREMENTAL))}, got "
                        f"{layer.incremental!r}")
    elif layer.incremental is not None and not layer.causal:
        problems.append(f"incremental={layer.incremental!r} needs causal=True: only a causal "
                        "layer can run one position at a time")
    if not (dataclasses.is_dataclass(layer.params) and isinstance(layer.params, type)):
        return problems + ["params must be a dataclass type"]
    try:
        infos = layer.parameters()
    except Exception as e:  # unresolvable annotations
        return problems + [f"cannot read the parameter annotations: {e}"]
    if layer.saturated is not None and not callable(layer.saturated):
        problems.append("saturated must be callable: (output, params) -> a boolean mask")
    if not (isinstance(layer.examples, tuple)
            and all(isinstance(e, Mapping) for e in layer.examples)):
        problems.append("examples must be a tuple of parameter tables (dicts)")
    for info in infos:
        if info.name in RESERVED:
            problems.append(f"parameter {info.name!r} uses the key that names the layer in a "
                            "spec entry; call it something else")
        for option in _options(info.annotation):
            if option not in SUPPORTED and typing.get_origin(option) is not Literal:
                problems.append(f"parameter {info.name!r} has unsupported type {option!r}")
        if not info.doc:
            problems.append(f"parameter {info.name!r} has no doc")
    return problems
