"""Assembly: a validated spec becomes a ``Model`` with shapes inferred and weights initialised.

Shapes flow from the model input, token ids ``[B, T]``, through each entry's shape function;
nothing in a spec states an input size. The last shape says what kind of model it is: logits
``[B, V]`` make a *window* model (the next character after a window of T ids), logits
``[B, T, V]`` a *sequence* model (position t predicts token t + 1 from tokens <= t), which may
hold only causal layers. Two entries that disagree are both named. A residual
block (``x + f(x)``) is no module of its own: the model keeps one flat list of layer modules
(weights named ``layers.N.*`` whatever the nesting) and adds each block's input back where the
block ends.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from zoo.data import AUTO, auto_context, default_words_file, read_words
from zoo.errors import ShapeError, SpecError, ZooError, one_line
from zoo.layer import Place, Shape
from zoo.registry import Registry, get_registry
from zoo.spec import Entry, Spec, expand, load_spec
from zoo.steps import Recompute, TorchStepper, evaluating, so_far, written

__all__ = ["Model", "SummaryRow", "build_model", "block_edges", "max_params", "MAX_PARAMS",
           "model_kind", "WINDOW", "SEQUENCE"]

WINDOW, SEQUENCE = "window", "sequence"  # what Model.kind says

MAX_PARAMS = 50_000_000  # the default limit; LAYERZOO_MAX_PARAMS, read at each build, overrides
MAX_PARAMS_ENV = "LAYERZOO_MAX_PARAMS"


def max_params() -> int:
    """The parameter limit now: LAYERZOO_MAX_PARAMS if set, else MAX_PARAMS."""
    raw = os.environ.get(MAX_PARAMS_ENV)
    if raw is None:
        return MAX_PARAMS
    try:
        value = int(raw.strip().replace("_", ""), 10) if len(raw) <= 30 else -1
    except ValueError:
        value = -1
    if value < 1:
        raise ZooError(f"{MAX_PARAMS_ENV}={raw[:40]!r}: expected a positive integer (the most "
                       "parameters a model may have)")
    return value


@dataclass(frozen=True)
class SummaryRow:
    """One line of ``zoo summary``."""

    label: str
    layer: str
    shape: Shape
    params: int
    depth: int = 0  # how many residual blocks it sits in


State = list[dict[str, torch.Tensor]]
"""A sequence model's incremental state: per layer, the tensors its step carries."""


class Model(nn.Module):
    """A spec assembled into a module: int64 context ``[B, T]`` -> float32 logits ``[B, V]``
    (a window model) or ``[B, T, V]`` (a sequence model, ``kind == "sequence"``).

    ``model.spec`` and ``model.vocab_size`` are all it takes to build the same architecture
    again: ``build_model(model.spec, model.vocab_size)``. A sequence model whose layers all
    declare an incremental form also runs one position at a time: ``initial_state`` and
    ``step``, the graph it exports.
    """

    def __init__(self, layers: list[nn.Module], spec: Spec, vocab_size: int,
                 entries: list[Entry], shapes: list[Shape]) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.spec = spec
        self.vocab_size = vocab_size
        self.context = spec.context
        self.entries = entries
        self.shapes = shapes
        self.edges = block_edges(entries)
        self.kind = SEQUENCE if len(shapes[-1]) == 2 else WINDOW

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        x, saved = context, []  # (B, T) int64; the inputs of the open residual blocks
        for layer, (opened, closed) in zip(self.layers, self.edges, strict=True):
            saved.extend([x] * len(opened))
            x = layer(x)
            for _ in range(closed):
                x = saved.pop() + x  # x + f(x), same shape (checked when built)
        return x  # (B, V) logits, or (B, T, V) for a sequence model

    def step_problem(self) -> str | None:
        """Why this model cannot run one position at a time (None when it can)."""
        if self.kind != SEQUENCE:
            return ("it is a window model (logits [B, V] from a window of ids), which has no "
                    "step form; a sequence model (logits [B, T, V]) has")
        for entry in self.entries:
            if entry.layer.incremental is None:
                plugin = f" of plugin {entry.layer.plugin!r}" if entry.layer.plugin else ""
                return (f"{entry.label}{plugin} declares no incremental form (LayerType "
                        "incremental='position' or 'state'), so it cannot run one position at "
                        "a time")
        return None

    def initial_state(self, batch: int) -> State:
        """The state before the first position, for ``batch`` sequences (see ``step``)."""
        return [layer.initial_state(batch) if e.layer.incremental == "state" else {}
                for e, layer in zip(self.entries, self.layers, strict=True)]

    def step(self, ids: torch.Tensor, state: State,
             position: torch.Tensor) -> tuple[torch.Tensor, State]:
        """One position of every sequence: ids int64 ``[B]`` at index ``position`` (a 0-d int64
        tensor) and the state so far -> logits ``[B, V]`` for the next id, and the new state.
        Stepping through a sequence gives the full forward's logits at every position."""
        given = [so_far(s, self.caches(i), position) for i, s in enumerate(state)]
        logits, updates = self.step_updates(ids, given, position)
        return logits, [written(old, new, self.caches(i), position)
                        for i, (old, new) in enumerate(zip(state, updates, strict=True))]

    def step_updates(self, ids: torch.Tensor, state: State,
                     position: torch.Tensor) -> tuple[torch.Tensor, State]:
        """``step`` as the step graph computes it: a layer's cache (``caches``) is given as its
        entries before ``position`` and comes back as this position's entry alone, for the
        caller to write; every other state tensor is given whole and replaced."""
        x, saved, new = ids, [], []  # (B,) int64; inputs of the open residual blocks
        for entry, layer, s, (opened, closed) in zip(self.entries, self.layers, state,
                                                      self.edges, strict=True):
            saved.extend([x] * len(opened))
            if entry.layer.incremental == "state":
                x, s = layer.step(x, s, position)  # (B, C)
            else:  # acts on each position alone: its forward on one position is its step
                x = layer(x)  # (B, C)
            new.append(s)
            for _ in range(closed):
                x = saved.pop() + x
        return x, new  # (B, V)

    def caches(self, index: int) -> frozenset[str]:
        """Layer ``index``'s caches: state tensors with one entry per position, time first
        (``[T, B, ...]``), to which each step adds its own; every other one it replaces."""
        return frozenset(getattr(self.layers[index], "state_caches", None) or ())

    def summary(self) -> list[SummaryRow]:
        """Each layer with its output shape (batch left out) and parameter count; a residual
        block comes first as a row of its own (its parameters the sum of its layers'), then its
        layers one level deeper."""
        rows: list[SummaryRow] = []
        open_rows: list[int] = []  # indices in rows of the blocks open at this entry
        for e, shape, m, (opened, closed) in zip(self.entries, self.shapes, self.layers,
                                                 self.edges, strict=True):
            for label in opened:
                open_rows.append(len(rows))
                rows.append(SummaryRow(label, "residual", shape, 0, len(open_rows) - 1))
            n = sum(p.numel() for p in m.parameters())
            rows.append(SummaryRow(e.label, e.layer.name, shape, n, len(e.blocks)))
            for i in open_rows:
                rows[i] = replace(rows[i], params=rows[i].params + n)
            for _ in range(closed):
                i = open_rows.pop()
                rows[i] = replace(rows[i], shape=shape)
        return rows

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def numpy_logits(self, context: np.ndarray) -> np.ndarray:
        """Eval-mode logits for int64 contexts [B, T] as float32 [B, V] (for the sampler), or
        [B, T, V] for a sequence model."""
        with evaluating(self):
            return self(torch.from_numpy(np.ascontiguousarray(context, np.int64))).numpy()

    def stepper(self, *, recompute: bool = False) -> TorchStepper | Recompute:
        """A sequence model as the sampler steps it (numpy in and out, eval mode): its layers'
        step forms, or, with ``recompute`` or where a layer declares none, the full forward
        over the ids so far at every position (slower: the prefix is computed again)."""
        if recompute or self.step_problem() is not None:
            return Recompute(self)
        return TorchStepper(self)

    def sampling_model(self) -> Any:
        """What ``zoo.sampling.sample`` takes for this model: ``numpy_logits`` for a window
        model, ``stepper()`` for a sequence model."""
        return self.stepper() if self.kind == SEQUENCE else self.numpy_logits

    def translation_table(self) -> dict[Any, Any]:
        """ONNX translations the model's layer types supply (for the exporter)."""
        table: dict[Any, Any] = {}
        for entry in self.entries:
            table.update(entry.layer.translation_table())
        return table


def _places(entries: list[Entry], vocab_size: int, context: int) -> list[Place]:
    places: list[Place] = []
    gain, later = 1.0, set()  # the next declared gain, the types seen after this entry
    for i in range(len(entries) - 1, -1, -1):  # one pass from the end
        entry = entries[i]
        places.append(Place(i, entry.label, vocab_size, context, gain,
                            entry.layer.name not in later))
        later.add(entry.layer.name)
        if entry.layer.gain is not None:
            gain = entry.layer.gain
    return places[::-1]


def block_edges(entries: list[Entry]) -> list[tuple[tuple[str, ...], int]]:
    """Per entry: the residual blocks that open at it (outermost first) and how many close
    after it. Block labels are unique, so comparing the ``blocks`` of neighbours suffices."""
    def common(a: tuple[str, ...], b: tuple[str, ...]) -> int:
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        return n

    edges = []
    for i, entry in enumerate(entries):
        before = entries[i - 1].blocks if i else ()
        after = entries[i + 1].blocks if i + 1 < len(entries) else ()
        edges.append((entry.blocks[common(before, entry.blocks):],
                      len(entry.blocks) - common(entry.blocks, after)))
    return edges


def _listed(names: list[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _token_hint(registry: Registry | None) -> str:
    """The fix for a model whose first layer takes features, named from the registry."""
    names = [n for n, t in (registry.layers.items() if registry else ()) if t.takes_tokens]
    which = f" ({_listed(names)})" if names else ""
    return f"; start the layers with one that takes token ids{which}"


def _reduction_hint(registry: Registry | None) -> str:
    """The fix for a model that still has a time axis, named from the registered reductions."""
    names = [n for n, t in (registry.layers.items() if registry else ()) if t.reduction]
    if not names:
        return "; add a layer that reduces the time axis before the last layer"
    return f"; add a {_listed(names)} before the last layer to reduce the time axis"


def infer_shapes(entries: list[Entry], places: list[Place], context: int,
                 vocab_size: int, source: str,
                 registry: Registry | None = None) -> list[Shape]:
    """Each entry's output shape; SpecError naming the entries (or residual block) that
    disagree. ``registry`` names the reductions in the hint for a missing one."""
    shape: Shape = (context,)
    tokens, producer = True, "the model input (token ids)"
    shapes = []
    blocks: list[tuple[str, Shape]] = []  # open residual blocks: label, input shape
    for entry, place, (opened, closed) in zip(entries, places, block_edges(entries),
                                              strict=True):
        for label in opened:
            if tokens:
                raise SpecError(f"{label} would add token ids to features: a residual block "
                                "must come after the embedding", source)
            blocks.append((label, shape))
        if entry.layer.takes_tokens != tokens:
            want = "token ids" if entry.layer.takes_tokens else "features"
            have = "token ids" if tokens else f"features of shape {shape}"
            fix = _token_hint(registry) if tokens else ""
            raise SpecError(f"{entry.label} takes {want} but {producer} gives {have}{fix}",
                            source)
        try:
            out = entry.layer.shape(shape, entry.params, place)
        except ShapeError as e:
            raise SpecError(f"{entry.label}: {e}; its input {shape} comes from {producer}",
                            source) from None
        except ZooError as e:
            raise SpecError(f"{entry.label}: {e}", source) from None
        except Exception as e:  # a plugin's bug: name the plugin, keep the reason
            raise SpecError(f"{entry.label}: shape function of plugin {entry.layer.plugin!r} "
                            f"raised {one_line(e, first=True, named=True)}", source) from None
        if not (isinstance(out, tuple) and all(isinstance(n, int) and n > 0 for n in out)):
            raise SpecError(f"{entry.label}: plugin {entry.layer.plugin!r} returned the "
                            f"shape {out!r}; expected a tuple of positive integers", source)
        shapes.append(out)
        shape, tokens, producer = out, False, entry.label
        for _ in range(closed):
            label, given = blocks.pop()
            if shape != given:
                raise SpecError(f"{label}: its layers change the shape from {given} to {shape}, "
                                "but a residual block adds its input to its output (x + f(x)) "
                                "and must give back the shape it was given", source)
            producer = label
    if shape == (context, vocab_size):
        _check_causal(entries, source)
    elif shape != (vocab_size,):
        if len(shape) == 1:
            raise SpecError(f"the model must end with logits of shape ({vocab_size},) for a "
                            f"{vocab_size}-symbol vocabulary, but {producer} gives {shape}; end "
                            f"with a layer that gives ({vocab_size},), such as a linear map to "
                            "the vocabulary", source)
        raise SpecError(f"the model must end with logits of shape ({vocab_size},) for a "
                        f"{vocab_size}-symbol vocabulary (a window model) or ({context}, "
                        f"{vocab_size}) (a sequence model, a prediction per position), but "
                        f"{producer} gives {shape}" + _reduction_hint(registry), source)
    return shapes


def _check_causal(entries: list[Entry], source: str) -> None:
    """A sequence model trains every position at once: no layer may see later positions."""
    bad = [e for e in entries if not e.layer.causal]
    if bad:
        named = ", ".join(e.label + (f" of plugin {e.layer.plugin!r}" if e.layer.plugin else "")
                          for e in bad)
        raise SpecError(f"{named} {'is' if len(bad) == 1 else 'are'} not causal on [B, T, C] "
                        "(no causal=True in the layer type), but a sequence model (logits "
                        "[B, T, V]) trains every position at once, so a layer that sees later "
                        "positions would leak them; use causal layers, or reduce the time axis "
                        "for a window model", source)


def model_kind(spec: Any, vocab_size: int, *, registry: Registry | None = None) -> str:
    """``"window"`` or ``"sequence"``: what ``build_model`` would build, checked without
    building it (SpecError for a spec that would not build)."""
    registry = registry or get_registry()
    spec = _settled(spec, None, registry)
    entries = expand(spec, registry)
    shapes = infer_shapes(entries, _places(entries, vocab_size, spec.context), spec.context,
                          vocab_size, spec.source, registry)
    return SEQUENCE if len(shapes[-1]) == 2 else WINDOW


class _NoMetaInit(TorchFunctionMode):
    """Skips in-place calls (initialisers: ``normal_``, ``kaiming_uniform_``...) on meta
    tensors, which have no values to set. torch runs ``normal_`` on meta through its Python
    reference kernels, whose first use took 1.9 s of every training process's start."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if name.endswith("_") and not name.endswith("__") and first is not None and first.is_meta:
            return first
        return func(*args, **kwargs)


def _build_layers(entries: list[Entry], places: list[Place], context: int,
                  shapes: list[Shape], source: str) -> list[nn.Module]:
    modules = []
    for entry, place, in_shape in zip(entries, places, [(context,), *shapes[:-1]], strict=False):
        try:
            module = entry.layer.build(in_shape, entry.params, place)
        except ZooError as e:
            raise SpecError(f"{entry.label}: {e}", source) from None
        except Exception as e:
            raise SpecError(f"{entry.label}: building it in plugin {entry.layer.plugin!r} "
                            f"raised {one_line(e, first=True, named=True)}", source) from None
        if not isinstance(module, nn.Module):
            raise SpecError(f"{entry.label}: plugin {entry.layer.plugin!r} built "
                            f"{type(module).__name__}; expected a torch.nn.Module", source)
        modules.append(module)
    return modules


def _settled(spec: Any, context: int | None, registry: Registry) -> Spec:
    """The spec with an integer context: ``context`` if given; a spec's ``"auto"`` (set from
    the words file when training) is the bundled corpus's, as the default vocabulary is."""
    spec = load_spec(spec, context=context, registry=registry)
    if spec.context == AUTO:
        spec = replace(spec, context=auto_context(read_words(default_words_file())))
    return spec


def build_model(spec: Any, vocab_size: int, *, context: int | None = None,
                registry: Registry | None = None) -> Model:
    """Validate ``spec`` (entries, file, preset name or Spec), infer shapes, build and init.

    ``context`` overrides the spec's; a context of ``"auto"`` with no override is that of the
    bundled names.txt (its longest word + 1). Uses torch's global RNG for initialisation: seed
    it first for a reproducible model.
    """
    registry = registry or get_registry()
    spec = _settled(spec, context, registry)
    if not isinstance(vocab_size, int) or vocab_size < 2:
        raise SpecError(f"vocabulary size must be an integer >= 2, got {vocab_size!r}",
                        spec.source)
    entries = expand(spec, registry)
    places = _places(entries, vocab_size, spec.context)
    shapes = infer_shapes(entries, places, spec.context, vocab_size, spec.source, registry)
    with torch.device("meta"), _NoMetaInit():  # count parameters before allocating any
        size = sum(p.numel() for m in _build_layers(entries, places, spec.context, shapes,
                                                    spec.source) for p in m.parameters())
    limit = max_params()
    if size > limit:
        raise SpecError(f"the model would have {size:,} parameters; layerzoo refuses more than "
                        f"{limit:,} (set LAYERZOO_MAX_PARAMS to raise the limit)",
                        spec.source)
    layers = _build_layers(entries, places, spec.context, shapes, spec.source)
    return Model(layers, spec, vocab_size, entries, shapes)
