"""The conformance kit for layer plugins: one call checks that a layer type is fit to ship.

    from zoo.testing import check_layer

    def test_swish():
        check_layer("swish")                                   # a registered name
        check_layer(MY_LAYER, params={"out": 8})               # or a LayerType, with parameters
        check_layer("my_attention", params={"heads": 4}, in_shape=(16, 32))  # T = 16, C = 32

``check_layer`` builds the layer inside a small model (token ids -> an embedding -> the layer on
[B, T, C] and on [B, C] where it takes them -> flatten -> a linear to the logits; a layer that
takes tokens goes first). The surrounding layers are the kit's own (``conformance_*``), so the
kit works with any registry. ``in_shape`` chooses what the layer receives: ``(T, C)`` a
sequence of T positions of C features, ``(C,)`` features only; by default ``(context, 6)``
and its flattened form. The checks raise ``ConformanceError`` (an AssertionError, so pytest
shows it) naming the check, the entry and the plugin:

- shapes: every module's output has the shape the layer's shape function declared;
- forward: finite float32 logits [B, V] in train and eval mode, eval mode deterministic;
- gradients: every parameter of the layer requires grad and gets a finite, nonzero gradient
  (on a context of one position, a stateful layer's parameters may get zero: there is no past);
- weights: a state_dict round trip through safetensors gives identical eval outputs;
- batch independence: in eval mode row i's output does not change when other rows change (an
  LSTM that takes the batch axis for time fails it);
- causality, for a layer that declares ``causal=True``, on a sequence: the output at time t
  does not change when inputs after t change;
- steps, for a layer that declares ``incremental``, on a sequence: stepping through the
  positions from its initial state (zeros) gives its full forward's output at every position;
  a step that carries nothing from one position to the next is named as such;
- onnx: the eval-mode graph exports (``zoo.export.onnx``) and, loaded as a deployment loads it
  (``zoo.export.runtime.OnnxModel``), gives torch's logits (atol 1e-5, rtol 1e-4).

The checks themselves live in ``zoo.conformance``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.build import Model, build_model
from zoo.conformance import (
    ONNX_ATOL,
    ONNX_RTOL,
    ConformanceError,
    ConformanceWarning,
    check_batch_independence,
    check_causality,
    check_forward,
    check_gradients,
    check_onnx,
    check_shapes,
    check_steps,
    check_threads,
    check_weights,
    fail,
    generator,
    layer_inputs,
)
from zoo.errors import ShapeError, SpecError
from zoo.layer import LayerType, Shape, param
from zoo.registry import Registry, get_registry

__all__ = ["check_layer", "ConformanceError", "ConformanceReport", "ConformanceWarning",
           "candidate_specs", "HARNESS", "ONNX_ATOL", "ONNX_RTOL"]

EMBED_DIM = 6
BATCH = 8  # a layer normalising over the batch needs two or more values per feature


@dataclass
class ConformanceReport:
    """What ``check_layer`` checked, on which spec, and what it had to skip (with why)."""

    layer: str
    plugin: str
    spec: list[Any]  # the surrounding model's layers, as a spec (harness layers: conformance_*)
    forms: list[str]  # input forms the layer was checked on: "[B, T, C]", "[B, C]", "tokens"
    context: int = 4  # the model's context length T
    passed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # check -> reason


# -- the kit's own surrounding layers: no dependence on which layers a registry has ----------

@dataclass(frozen=True)
class _DimParams:
    dim: int = param(EMBED_DIM, "vector size per token", min=1)


def _flat_shape(in_shape: Shape, params: Any, place: Any) -> Shape:
    return (math.prod(in_shape),)


def _head_shape(in_shape: Shape, params: Any, place: Any) -> Shape:
    if len(in_shape) != 1:
        raise ShapeError(f"expects features [B, C], got shape {in_shape}")
    return (place.vocab_size,)


HARNESS = {
    "embed": LayerType(name="conformance_embedding", doc="the kit's token embedding",
                       params=_DimParams, takes_tokens=True,
                       shape=lambda s, p, pl: (*s, p.dim),
                       build=lambda s, p, pl: nn.Embedding(pl.vocab_size, p.dim)),
    "flatten": LayerType(name="conformance_flatten", doc="the kit's flatten",
                         shape=_flat_shape, build=lambda s, p, pl: nn.Flatten(1),
                         reduction=True),
    "head": LayerType(name="conformance_head", doc="the kit's linear map to the logits",
                      shape=_head_shape, build=lambda s, p, pl: nn.Linear(s[0], pl.vocab_size)),
}
"""The layers the kit surrounds a layer with, by role; added to a copy of the registry."""


def candidate_specs(layer: LayerType, entry: Any, in_shape: Shape | None = None,
                    context: int = 4) -> list[tuple[list[Any], list[str], int]]:
    """Surrounding specs to try, most thorough first: (layers, forms covered, context)."""
    flat, head = HARNESS["flatten"].name, HARNESS["head"].name
    if layer.takes_tokens:
        return [([entry, flat, head], ["tokens"], context), ([entry, head], ["tokens"], context),
                ([entry], ["tokens"], context)]
    if in_shape is not None and len(in_shape) == 1:  # features only: one position, flattened
        embed = {"type": HARNESS["embed"].name, "dim": in_shape[0]}
        return [([embed, flat, entry, head], ["[B, C]"], 1)]
    if in_shape is not None:
        context = in_shape[0]
    embed = {"type": HARNESS["embed"].name, "dim": in_shape[1] if in_shape else EMBED_DIM}
    sequence = [([embed, entry, flat, entry, head], ["[B, T, C]", "[B, C]"], context),
                ([embed, entry, flat, head], ["[B, T, C]"], context),
                ([embed, entry, head], ["[B, T, C]"], context)]
    if in_shape is None:  # no shape asked for: the flattened sequence is a [B, C] input too
        sequence.insert(1, ([embed, flat, entry, head], ["[B, C]"], context))
    return sequence


def check_layer(layer: LayerType | str, *, params: dict[str, Any] | None = None,
                in_shape: tuple[int, ...] | None = None, spec: list[Any] | None = None,
                registry: Registry | None = None, vocab_size: int = 11, context: int = 4,
                onnx: bool = True, seed: int = 0, strict: bool = False) -> ConformanceReport:
    """Check a layer type (a name or a LayerType) in a small model; raise ConformanceError.

    ``params`` are the spec parameters of the layer under test (e.g. ``{"heads": 4}``);
    ``in_shape`` the shape it receives, batch left out: ``(T, C)`` for a sequence (the model's
    context becomes T), ``(C,)`` for features; ``spec`` replaces the automatic surrounding
    model (a list of entries that uses the layer, run with ``context``). A LayerType that is
    not registered is checked in a copy of the registry that has it. ``strict`` makes a check
    that could not run (``report.skipped``) fail too.
    """
    if in_shape is not None and not (
            isinstance(in_shape, tuple) and len(in_shape) in (1, 2)
            and all(isinstance(n, int) and n >= 1 for n in in_shape)):
        raise ValueError(f"in_shape must be (T, C) or (C,) with positive integers, got "
                         f"{in_shape!r}")
    registry = registry or get_registry()
    if isinstance(layer, str):
        layer = registry.layer(layer)
    else:
        # the plugin's own declaration (bare or qualified in the registry): use the registered
        # one, which names the plugin
        layer = next((r for r in registry.layers.values() if r.name == layer.name
                      and dataclasses.replace(r, plugin=layer.plugin, version=layer.version)
                      == layer), layer)
    registry = _kit_registry(registry, layer)
    layer = registry.layers[layer.name]
    entry = {"type": layer.name, **(params or {})}
    candidates = ([(spec, ["given spec"], context)] if spec is not None
                  else candidate_specs(layer, entry, in_shape, context))
    model, chosen, forms, context = _build_first(layer, candidates, registry, vocab_size, seed)
    report = ConformanceReport(layer.name, layer.plugin, chosen, forms, context)
    where = _indices(model, layer)
    if not where:
        fail(layer, "build", f"the spec {chosen!r} does not use the layer")
    x = torch.randint(0, vocab_size, (BATCH, context), generator=generator(seed))  # (B, T)
    y = torch.randint(0, vocab_size, (BATCH,), generator=generator(seed + 1))  # (B,)

    check_shapes(layer, model, x)
    report.passed.append("shapes")
    check_forward(layer, model, x)
    report.passed.append("forward")
    check_gradients(layer, model, where, x, y)
    report.passed.append("gradients")
    check_weights(layer, model, chosen, vocab_size, context, registry, x)
    report.passed.append("weights")
    inputs = layer_inputs(model, where, x)
    check_batch_independence(layer, model, inputs, vocab_size, seed)
    report.passed.append("batch independence")
    if layer.causal:
        if check_causality(layer, model, inputs, vocab_size, seed):
            report.passed.append("causality")
        else:
            report.skipped["causality"] = "the layer was not checked on a sequence"
    if layer.incremental is not None:
        if check_steps(layer, model, inputs):
            report.passed.append("steps")
        else:
            report.skipped["steps"] = "the layer was not checked on a sequence"
    differs = check_threads(model, where, vocab_size, context, seed)
    if differs is None:
        report.passed.append("threads")
    else:  # correct, but slower where cores are free: zoo train keeps it on one thread
        reason = (f"{differs}: `zoo train` keeps a model with this layer on one thread; wrap "
                  "its module with zoo.kernels.thread_stable (docs/plugins.md#thread-stable-"
                  "kernels)")
        report.skipped["threads"] = reason
        warnings.warn(f"check_layer({layer.name!r}): {reason}", ConformanceWarning,
                      stacklevel=2)
    if onnx:
        try:
            from zoo.export.onnx import export_onnx
            from zoo.export.runtime import OnnxModel
        except ImportError as e:
            reason = f"zoo.export.onnx is not available ({e})"
            report.skipped["onnx"] = reason
            warnings.warn(f"check_layer({layer.name!r}): onnx check skipped: {reason}",
                          ConformanceWarning, stacklevel=2)
        else:
            check_onnx(layer, model, export_onnx, OnnxModel, vocab_size, context)
            report.passed.append("onnx")
    if strict and report.skipped:
        fail(layer, "strict", "checks were skipped: " + "; ".join(
            f"{check} ({reason})" for check, reason in report.skipped.items()))
    return report


def _kit_registry(registry: Registry, layer: LayerType) -> Registry:
    """A copy of the registry with the kit's surrounding layers and the layer under test."""
    copy = Registry(strict=registry.strict)
    copy.layers = {**registry.layers, **{t.name: t for t in HARNESS.values()},
                   layer.name: layer}
    copy.presets = dict(registry.presets)
    copy.plugins = dict(registry.plugins)
    return copy


def _build_first(layer: LayerType, candidates: list[tuple[list[Any], list[str], int]],
                 registry: Registry, vocab_size: int,
                 seed: int) -> tuple[Model, list[Any], list[str], int]:
    errors = []
    for layers, forms, context in candidates:
        torch.manual_seed(seed)
        try:
            return build_model(layers, vocab_size, context=context,
                               registry=registry), layers, forms, context
        except SpecError as e:
            errors.append(f"{layers!r}: {e}")
    fail(layer, "build", "no surrounding model could be built (pass params=, in_shape= or "
          "spec=): " + " | ".join(errors))


def _indices(model: Model, layer: LayerType) -> list[int]:
    return [e.index for e in model.entries if e.layer.name == layer.name]
