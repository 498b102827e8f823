"""The checks behind ``zoo.testing.check_layer``, one function each, on a built model.

Each raises ``ConformanceError`` naming the check, the entry and the plugin; ``zoo.testing``
decides which to run on which surrounding model.
"""

from __future__ import annotations

import math
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from zoo.build import Model, build_model
from zoo.layer import LayerType
from zoo.registry import Registry
from zoo.steps import so_far, written

__all__ = ["ConformanceError", "ConformanceWarning", "ONNX_ATOL", "ONNX_RTOL", "check_shapes",
           "check_threads",
           "check_forward", "check_gradients", "check_weights", "layer_inputs",
           "check_batch_independence", "check_causality", "check_steps", "check_onnx", "fail",
           "generator"]

ONNX_ATOL, ONNX_RTOL = 1e-5, 1e-4
SAME_ATOL, SAME_RTOL = 1e-6, 1e-5  # "unchanged" for batch independence and causality


class ConformanceError(AssertionError):
    """A layer type failed a conformance check; the message names the check and the layer."""


class ConformanceWarning(UserWarning):
    """A check could not run (e.g. ONNX export is not installed)."""


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fail(layer: LayerType, check: str, message: str) -> NoReturn:
    plugin = f" (plugin {layer.plugin!r})" if layer.plugin else ""
    raise ConformanceError(f"layer {layer.name!r}{plugin} fails the {check} check: {message}")


def check_shapes(layer: LayerType, model: Model, x: torch.Tensor) -> None:
    """Run the layers one by one, so a wrong declared shape is caught where it happens."""
    h: Any = x  # (B, T) token ids
    with torch.no_grad():
        model.train()
        for entry, module, declared in zip(model.entries, model.layers, model.shapes,
                                           strict=True):
            try:
                h = module(h)
            except Exception as e:
                fail(layer, "forward", f"{entry.label} raised {type(e).__name__}: {e}")
            got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
            if got != (x.shape[0], *declared):
                want = ", ".join(["B", *map(str, declared)])
                fail(layer, "shapes", f"{entry.label} declared the output shape ({want}) but "
                      f"its module returned {got}")


def check_forward(layer: LayerType, model: Model, x: torch.Tensor) -> None:
    expect = (x.shape[0], model.vocab_size)
    with torch.no_grad():
        for mode in ("train", "eval"):
            model.train(mode == "train")
            out = model(x)  # (B, V)
            if out.dtype != torch.float32 or tuple(out.shape) != expect:
                fail(layer, "forward", f"{mode} mode gave {out.dtype} {tuple(out.shape)}; "
                      f"expected torch.float32 {expect}")
            if not torch.isfinite(out).all():
                fail(layer, "forward", f"{mode} mode gave non-finite logits")
        again = model(x)
        if not torch.equal(out, again):
            fail(layer, "forward", "eval mode is not deterministic: two calls on the same "
                  "input differ (is something random left on in eval mode?)")


def check_gradients(layer: LayerType, model: Model, where: list[int], x: torch.Tensor,
                     y: torch.Tensor) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for i in where:
        label = model.entries[i].label
        for name, p in model.layers[i].named_parameters():
            if not p.requires_grad:
                fail(layer, "gradients", f"{label}: parameter {name!r} does not require grad, "
                      "so it never trains")
            if p.grad is None:
                fail(layer, "gradients", f"{label}: parameter {name!r} got no gradient: the "
                      "forward pass does not use it (or detaches it), so it never trains")
            if not torch.isfinite(p.grad).all():
                fail(layer, "gradients", f"{label}: parameter {name!r} got a non-finite "
                      "gradient")
            if not p.grad.abs().sum() > 0:
                if x.shape[1] == 1 and layer.incremental == "state":
                    continue  # one position: a recurrence has nothing to carry, so what
                    # weighs the past (a decay, a hidden-to-hidden map) gets no gradient
                fail(layer, "gradients", f"{label}: parameter {name!r} got an all-zero "
                      "gradient, so it never trains")
    model.zero_grad(set_to_none=True)


def check_weights(layer: LayerType, model: Model, layers: list[Any], vocab_size: int,
                   context: int, registry: Registry, x: torch.Tensor) -> None:
    from safetensors.torch import load, save

    with torch.no_grad():
        model.train()(x)  # move running statistics away from their initial values
        want = model.eval()(x)
    try:
        blob = save({k: v.contiguous() for k, v in model.state_dict().items()})
    except Exception as e:
        fail(layer, "weights", f"safetensors cannot save the state_dict: "
              f"{type(e).__name__}: {e}")
    torch.manual_seed(12345)  # a different init, so the loaded weights must do the work
    fresh = build_model(layers, vocab_size, context=context, registry=registry)
    try:
        fresh.load_state_dict(load(blob))
    except Exception as e:
        fail(layer, "weights", f"loading its own state_dict failed: {type(e).__name__}: {e}")
    with torch.no_grad():
        got = fresh.eval()(x)
    if not torch.equal(want, got):
        diff = (want - got).abs().max().item()
        fail(layer, "weights", f"after a state_dict round trip through safetensors the eval "
              f"outputs differ (max |diff| {diff:.3g}): some state is not in the state_dict")


def layer_inputs(model: Model, where: list[int], x: torch.Tensor) -> dict[int, torch.Tensor]:
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


def check_batch_independence(layer: LayerType, model: Model, inputs: dict[int, torch.Tensor],
                              vocab_size: int, seed: int) -> None:
    """Change row 0 and the other rows in turn: the rows left alone must not notice."""
    gen = generator(seed + 2)
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
                    fail(layer, "batch independence", f"{label}: in eval mode changing {rows} "
                          "of the batch changed the output of the other rows (does it mix the "
                          "batch axis, e.g. take it for time?)")


def _sequences(model: Model, inputs: dict[int, torch.Tensor]
               ) -> Iterator[tuple[nn.Module, str, torch.Tensor]]:
    """(module, label, input) for each use of the layer that received a sequence."""
    for i, h in inputs.items():
        if h.dim() == (2 if h.dtype == torch.int64 else 3):  # features [B, C] have no time
            yield model.layers[i], model.entries[i].label, h


def check_causality(layer: LayerType, model: Model, inputs: dict[int, torch.Tensor],
                     vocab_size: int, seed: int) -> bool:
    """On every sequence input: changing positions after t leaves outputs up to t alone.
    False when the layer received no sequence (nothing to check)."""
    gen = generator(seed + 3)
    checked = False
    model.eval()
    with torch.no_grad():
        for module, label, h in _sequences(model, inputs):
            out = module(h)  # (B, T, ...)
            t_len = h.shape[1]
            if out.dim() < 2 or out.shape[1] != t_len:
                fail(layer, "causality", f"{label} declares itself causal but turns a sequence "
                      f"of length {t_len} into {tuple(out.shape)}, which has no matching time "
                      "axis")
            other = _like(h, vocab_size, gen)
            for t in range(t_len - 1):
                h2 = h.clone()
                h2[:, t + 1:] = other[:, t + 1:]
                if not _same(module(h2)[:, :t + 1], out[:, :t + 1]):
                    fail(layer, "causality", f"{label} declares itself causal, but changing "
                          f"the inputs after position {t} changed its output at or before "
                          f"position {t}")
            checked = True
    return checked


def check_steps(layer: LayerType, model: Model, inputs: dict[int, torch.Tensor]) -> bool:
    """For a layer that declares an incremental form, on every sequence input: stepping
    through the positions from ``initial_state`` (all zeros) gives the full forward's output
    at every position. False when the layer received no sequence (nothing to check)."""
    checked = False
    model.eval()
    with torch.no_grad():
        for module, label, h in _sequences(model, inputs):
            full = module(h)  # (B, T, C')
            stepped, fresh = _steps(layer, module, label, h)
            for t in range(h.shape[1]):
                if _same(stepped[t], full[:, t]):
                    continue
                hint = ""
                if t > 0 and _same(stepped[t], fresh[t]):
                    hint = ("; its step gives what it gives from the initial state, so it "
                            "carries nothing from one position to the next")
                fail(layer, "steps", f"{label}: stepping through a sequence from its initial "
                     f"state differs from its forward at position {t} (max difference "
                     f"{(stepped[t] - full[:, t]).abs().max().item():.3g}){hint}")
            checked = True
    return checked


def _steps(layer: LayerType, module: nn.Module, label: str,
           h: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The outputs of stepping ``module`` through ``h`` position by position, and of each
    position stepped alone from the initial state."""
    if layer.incremental == "position":
        out = [module(h[:, t]) for t in range(h.shape[1])]  # one position: (B, C) or ids (B,)
        return out, out
    start = module.initial_state(len(h))
    caches = frozenset(getattr(module, "state_caches", None) or ())
    batch_axis = {k: 1 if k in caches else 0 for k in start}
    if not isinstance(start, dict) or not all(
            isinstance(v, torch.Tensor) and v.dim() > batch_axis[k]
            and v.shape[batch_axis[k]] == len(h) and not v.any() for k, v in start.items()):
        fail(layer, "steps", f"{label}: initial_state({len(h)}) must return a dict of zero "
             f"tensors, the batch axis first ([{len(h)}, ...]) or, for a cache in "
             f"state_caches, second ([T, {len(h)}, ...]): the step graph starts every state "
             "at 0")
    want = {k: tuple(v.shape[1:] if k in caches else v.shape) for k, v in start.items()}
    state, out, fresh = start, [], []
    for t in range(h.shape[1]):
        position = torch.tensor(t)
        y, new = module.step(h[:, t], so_far(state, caches, position), position)
        got = {k: tuple(v.shape) for k, v in new.items()}
        if got != want:
            fail(layer, "steps", f"{label}: step at position {t} returned state {got}; it must "
                 f"return {want}: the names of initial_state, the shape of each, and one "
                 "entry of each cache in state_caches")
        out.append(y)
        alone = so_far(module.initial_state(len(h)), caches, position)
        fresh.append(module.step(h[:, t], alone, position)[0])
        state = written(state, new, caches, position)
    return out, fresh


def check_onnx(layer: LayerType, model: Model, export_onnx: Any, onnx_model: Any,
                vocab_size: int, context: int) -> None:
    """Export, then load the file the way a deployment does (onnxruntime, no torch)."""
    vocab = (".", *(string.ascii_letters + string.digits)[:vocab_size - 1])
    x = torch.randint(0, vocab_size, (5, context), generator=generator(7))  # (B, T) other batch
    want = model.numpy_logits(x.numpy())  # (B, V)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            export_onnx(model, path, vocab=vocab)
        except Exception as e:
            fail(layer, "onnx", f"export failed: {type(e).__name__}: {e}")
        try:
            got = onnx_model.load(path).logits(x.numpy())  # (B, V)
        except Exception as e:
            fail(layer, "onnx", f"the exported file does not run: {type(e).__name__}: {e}")
    if got.shape != want.shape or not np.allclose(got, want, atol=ONNX_ATOL, rtol=ONNX_RTOL):
        diff = np.abs(got - want).max() if got.shape == want.shape else math.inf
        fail(layer, "onnx", f"onnxruntime logits differ from torch (max |diff| {diff:.3g}, "
              f"allowed atol {ONNX_ATOL:g} + rtol {ONNX_RTOL:g})")


THREADS_BATCH = 2048  # torch splits a reduction across threads only above a grain size


def check_threads(model: Model, where: list[int], vocab_size: int, context: int,
                  seed: int) -> str | None:
    """None when a training pass gives the same loss, and the same gradients for the layer's
    parameters and the embedding before it, on one and on two threads; else what differed.
    ``zoo train`` keeps a model that differs on one thread (zoo.threads). The kit's own head
    is left out: its weight gradient (11 x 2,048 x 24 floats) is a product MKL may split
    across threads, which says nothing about the layer."""
    from zoo import threads

    gen = generator(seed + 2)
    x = torch.randint(0, vocab_size, (THREADS_BATCH, context), generator=gen)  # (B, T)
    y = torch.randint(0, vocab_size, (THREADS_BATCH,), generator=gen)  # (B,)
    model.train()
    before = torch.get_num_threads()
    try:
        prefixes = tuple(f"layers.{i}." for i in (0, *where))
        return threads.same_bits_on_every_count(
            threads.probe_step(model, x, y, nn.functional.cross_entropy), [1, 2],
            torch.set_num_threads, only=lambda name: name.startswith(prefixes))
    finally:
        torch.set_num_threads(before)
