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
- gradients: every parameter of the layer requires grad and gets a finite, nonzero gradient;
- weights: a state_dict round trip through safetensors gives identical eval outputs;
- batch independence: in eval mode row i's output does not change when other rows change (an
  LSTM that takes the batch axis for time fails it);
- causality, for a layer that declares ``causal=True``, on a sequence: the output at time t
  does not change when inputs after t change;
- onnx: the eval-mode graph exports (``zoo.export.onnx``) and, loaded as a deployment loads it
  (``zoo.export.runtime.OnnxModel``), gives torch's logits (atol 1e-5, rtol 1e-4).
"""

from __future__ import annotations

import dataclasses
import math
import string
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from zoo.build import Model, build_model
from zoo.errors import ShapeError, SpecError
from zoo.layer import LayerType, Shape, param
from zoo.registry import Registry, get_registry

__all__ = ["check_layer", "ConformanceError", "ConformanceReport", "ConformanceWarning",
           "candidate_specs", "HARNESS", "ONNX_ATOL", "ONNX_RTOL"]

ONNX_ATOL, ONNX_RTOL = 1e-5, 1e-4
SAME_ATOL, SAME_RTOL = 1e-6, 1e-5  # "unchanged" for batch independence and causality
EMBED_DIM = 6
BATCH = 8  # batchnorm needs more than one value per feature in training mode


class ConformanceError(AssertionError):
    """A layer type failed a conformance check; the message names the check and the layer."""


class ConformanceWarning(UserWarning):
    """A check could not run (e.g. ONNX export is not installed)."""


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
                onnx: bool = True, seed: int = 0) -> ConformanceReport:
    """Check a layer type (a name or a LayerType) in a small model; raise ConformanceError.

    ``params`` are the spec parameters of the layer under test (e.g. ``{"heads": 4}``);
    ``in_shape`` the shape it receives, batch left out: ``(T, C)`` for a sequence (the model's
    context becomes T), ``(C,)`` for features; ``spec`` replaces the automatic surrounding
    model (a list of entries that uses the layer, run with ``context``). A LayerType that is
    not registered is checked in a copy of the registry that has it.
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
        registered = registry.layers.get(layer.name)
        same = registered is not None and dataclasses.replace(
            registered, plugin=layer.plugin, version=layer.version) == layer
        if same:  # the plugin's own declaration: use the registered one, which names the plugin
            layer = registered
    registry = _kit_registry(registry, layer)
    layer = registry.layers[layer.name]
    entry = {"type": layer.name, **(params or {})}
    candidates = ([(spec, ["given spec"], context)] if spec is not None
                  else candidate_specs(layer, entry, in_shape, context))
    model, chosen, forms, context = _build_first(layer, candidates, registry, vocab_size, seed)
    report = ConformanceReport(layer.name, layer.plugin, chosen, forms, context)
    where = _indices(model, layer)
    if not where:
        _fail(layer, "build", f"the spec {chosen!r} does not use the layer")
    x = torch.randint(0, vocab_size, (BATCH, context), generator=_gen(seed))  # (B, T)
    y = torch.randint(0, vocab_size, (BATCH,), generator=_gen(seed + 1))  # (B,)

    _check_shapes(layer, model, x)
    report.passed.append("shapes")
    _check_forward(layer, model, x)
    report.passed.append("forward")
    _check_gradients(layer, model, where, x, y)
    report.passed.append("gradients")
    _check_weights(layer, model, chosen, vocab_size, context, registry, x)
    report.passed.append("weights")
    inputs = _layer_inputs(model, where, x)
    _check_batch_independence(layer, model, inputs, vocab_size, seed)
    report.passed.append("batch independence")
    if layer.causal:
        if _check_causality(layer, model, inputs, vocab_size, seed):
            report.passed.append("causality")
        else:
            report.skipped["causality"] = "the layer was not checked on a sequence"
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
            _check_onnx(layer, model, export_onnx, OnnxModel, vocab_size, context)
            report.passed.append("onnx")
    return report


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fail(layer: LayerType, check: str, message: str) -> NoReturn:
    plugin = f" (plugin {layer.plugin!r})" if layer.plugin else ""
    raise ConformanceError(f"layer {layer.name!r}{plugin} fails the {check} check: {message}")


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
    _fail(layer, "build", "no surrounding model could be built (pass params=, in_shape= or "
          "spec=): " + " | ".join(errors))


def _indices(model: Model, layer: LayerType) -> list[int]:
    return [e.index for e in model.entries if e.layer.name == layer.name]


def _check_shapes(layer: LayerType, model: Model, x: torch.Tensor) -> None:
    """Run the layers one by one, so a wrong declared shape is caught where it happens."""
    h: Any = x  # (B, T) token ids
    with torch.no_grad():
        model.train()
        for entry, module, declared in zip(model.entries, model.layers, model.shapes,
                                           strict=True):
            try:
                h = module(h)
            except Exception as e:
                _fail(layer, "forward", f"{entry.label} raised {type(e).__name__}: {e}")
            got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            if got != (x.shape[0], *declared):
                want = ", ".join(["B", *map(str, declared)])
                _fail(layer, "shapes", f"{entry.label} declared the output shape ({want}) but "
                      f"its module returned {got}")


def _check_forward(layer: LayerType, model: Model, x: torch.Tensor) -> None:
    expect = (x.shape[0], model.vocab_size)
    with torch.no_grad():
        for mode in ("train", "eval"):
            model.train(mode == "train")
            out = model(x)  # (B, V)
            if out.dtype != torch.float32 or tuple(out.shape) != expect:
                _fail(layer, "forward", f"{mode} mode gave {out.dtype} {tuple(out.shape)}; "
                      f"expected torch.float32 {expect}")
            if not torch.isfinite(out).all():
                _fail(layer, "forward", f"{mode} mode gave non-finite logits")
        again = model(x)
        if not torch.equal(out, again):
            _fail(layer, "forward", "eval mode is not deterministic: two calls on the same "
                  "input differ (is something random left on in eval mode?)")


def _check_gradients(layer: LayerType, model: Model, where: list[int], x: torch.Tensor,
                     y: torch.Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for i in where:
        label = model.entries[i].label
        for name, p in model.layers[i].named_parameters():
            if not p.requires_grad:
                _fail(layer, "gradients", f"{label}: parameter {name!r} does not require grad, "
                      "so it never trains")
            if p.grad is None:
                _fail(layer, "gradients", f"{label}: parameter {name!r} got no gradient: the "
                      "forward pass does not use it (or detaches it), so it never trains")
            if not torch.isfinite(p.grad).all():
                _fail(layer, "gradients", f"{label}: parameter {name!r} got a non-finite "
                      "gradient")
            if not p.grad.abs().sum() > 0:
                _fail(layer, "gradients", f"{label}: parameter {name!r} got an all-zero "
                      "gradient, so it never trains")
    model.zero_grad(set_to_none=True)


def _check_weights(layer: LayerType, model: Model, layers: list[Any], vocab_size: int,
                   context: int, registry: Registry, x: torch.Tensor) -> None:
    from safetensors.torch import load, save

    with torch.no_grad():
        model.train()(x)  # move running statistics away from their initial values
        want = model.eval()(x)
    try:
        blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
    except Exception as e:
        _fail(layer, "weights", f"safetensors cannot save the state_dict: "
              f"{type(e).__name__}: {e}")
    torch.manual_seed(12345)  # a different init, so the loaded weights must do the work
    fresh = build_model(layers, vocab_size, context=context, registry=registry)
    try:
        fresh.load_state_dict(load(blob))
    except Exception as e:
        _fail(layer, "weights", f"loading its own state_dict failed: {type(e).__name__}: {e}")
    with torch.no_grad():
        got = fresh.eval()(x)
    if not torch.equal(want, got):
        diff = (want - got).abs().max().item()
        _fail(layer, "weights", f"after a state_dict round trip through safetensors the eval "
              f"outputs differ (max |diff| {diff:.3g}): some state is not in the state_dict")


def _layer_inputs(model: Model, where: list[int], x: torch.Tensor) -> dict[int, torch.Tensor]:
    """What the layer's modules receive in an eval-mode forward pass, by entry index."""
    seen: dict[int, torch.Tensor] = {}
    hooks = [model.layers[i].register_forward_pre_hook(
        lambda m, args, i=i: seen.setdefault(i, args[0].detach().clone())) for i in where]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _like(h: torch.Tensor, vocab_size: int, gen: torch.Generator) -> torch.Tensor:
    """Another input of the same kind: token ids stay ids, features are redrawn."""
    if h.dtype == torch.int64:
        return torch.randint(0, vocab_size, h.shape, generator=gen)
    return torch.randn(h.shape, generator=gen, dtype=h.dtype) * h.std().clamp_min(1e-3)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, atol=SAME_ATOL, rtol=SAME_RTOL))


def _check_batch_independence(layer: LayerType, model: Model, inputs: dict[int, torch.Tensor],
                              vocab_size: int, seed: int) -> None:
    """Change row 0 and the other rows in turn: the rows left alone must not notice."""
    gen = _gen(seed + 2)
    model.eval()
    with torch.no_grad():
        for i, h in inputs.items():
            module, label = model.layers[i], model.entries[i].label
            out = module(h)  # (B, ...)
            other = _like(h, vocab_size, gen)
            for kept, changed in ((slice(1, None), slice(0, 1)), (slice(0, 1), slice(1, None))):
                h2 = h.clone()
                h2[changed] = other[changed]
                if not _same(module(h2)[kept], out[kept]):
                    rows = "row 0" if changed.start == 0 and changed.stop == 1 else "rows 1.."
                    _fail(layer, "batch independence", f"{label}: in eval mode changing {rows} "
                          "of the batch changed the output of the other rows (does it mix the "
                          "batch axis, e.g. take it for time?)")


def _check_causality(layer: LayerType, model: Model, inputs: dict[int, torch.Tensor],
                     vocab_size: int, seed: int) -> bool:
    """On every sequence input: changing positions after t leaves outputs up to t alone.
    False when the layer received no sequence (nothing to check)."""
    gen = _gen(seed + 3)
    checked = False
    model.eval()
    with torch.no_grad():
        for i, h in inputs.items():
            if h.dim() != (2 if h.dtype == torch.int64 else 3):
                continue  # features [B, C]: no time axis
            module, label = model.layers[i], model.entries[i].label
            out = module(h)  # (B, T, ...)
            t_len = h.shape[1]
            if out.dim() < 2 or out.shape[1] != t_len:
                _fail(layer, "causality", f"{label} declares itself causal but turns a sequence "
                      f"of length {t_len} into {tuple(out.shape)}, which has no matching time "
                      "axis")
            other = _like(h, vocab_size, gen)
            for t in range(t_len - 1):
                h2 = h.clone()
                h2[:, t + 1:] = other[:, t + 1:]
                if not _same(module(h2)[:, :t + 1], out[:, :t + 1]):
                    _fail(layer, "causality", f"{label} declares itself causal, but changing "
                          f"the inputs after position {t} changed its output at or before "
                          f"position {t}")
            checked = True
    return checked


def _check_onnx(layer: LayerType, model: Model, export_onnx: Any, onnx_model: Any,
                vocab_size: int, context: int) -> None:
    """Export, then load the file the way a deployment does (onnxruntime, no torch)."""
    vocab = (".", *(string.ascii_letters + string.digits)[:vocab_size - 1])
    x = torch.randint(0, vocab_size, (5, context), generator=_gen(7))  # (B, T) other batch
    want = model.numpy_logits(x.numpy())  # (B, V)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            export_onnx(model, path, vocab=vocab)
        except Exception as e:
            _fail(layer, "onnx", f"export failed: {type(e).__name__}: {e}")
        try:
            got = onnx_model.load(path).logits(x.numpy())  # (B, V)
        except Exception as e:
            _fail(layer, "onnx", f"the exported file does not run: {type(e).__name__}: {e}")
    if got.shape != want.shape or not np.allclose(got, want, atol=ONNX_ATOL, rtol=ONNX_RTOL):
        diff = np.abs(got - want).max() if got.shape == want.shape else math.inf
        _fail(layer, "onnx", f"onnxruntime logits differ from torch (max |diff| {diff:.3g}, "
              f"allowed atol {ONNX_ATOL:g} + rtol {ONNX_RTOL:g})")
