"""The layerzoo ONNX file contract: what a layerzoo .onnx file is, in one torch-free module.

    meta = read_metadata(session.get_modelmeta().custom_metadata_map, path)
    check_signature(session.get_inputs(), session.get_outputs(), path, meta)

A layerzoo file is one self-contained ONNX model (no external data) of one of two formats.
Format 1, a window model's graph:

- one input  ``context`` int64 [batch, T] (token ids, '.' = 0 pads the left) and
- one output ``logits`` float32 [batch, V] (next-character logits, not probabilities).

Format 2, a sequence model's step graph, one position of every sequence per call:

- inputs ``token`` int64 [batch] (the ids at this position; position 0 takes '.'),
  ``position`` int64 [] (the position, 0 to T - 1), then the state: ``past.L.NAME`` float32
  for each state tensor NAME of layer L (optimum's past/present naming). A tensor the layer
  replaces (a recurrent layer's ``hidden``) is [batch, ...], zeros at position 0; a cache (an
  attention layer's ``key`` and ``value``) is given as its entries so far, [position, batch,
  ...], time first, empty at position 0;
- outputs ``logits`` float32 [batch, V] (for the next id) and ``present.L.NAME``: for a
  replaced tensor the state to feed at the next position (the shape of its ``past``); for a
  cache this position's entry, [batch, ...], which the caller appends (a caller that keeps
  a [T, batch, ...] array writes it at index ``position`` and feeds the first entries).

Both carry these string metadata_props (every value JSON or a plain string):

==================== ==========================================================================
``layerzoo.format``  ``"1"`` or ``"2"``: the version of this contract and which graph the file
                     holds; readers refuse other values
``vocab``            JSON list of the V symbols, '.' first (``zoo.data.Vocab.problem`` rules)
``context``          T, a decimal integer >= 1 (format 2: the most positions a sequence has)
``layerzoo.state``   format 2 only: JSON list of ``[NAME, [dims...], CACHE]``, each state
                     input ``past.NAME`` in input order, its shape without the batch axis (a
                     cache's first dim is T, its most entries) and whether it is a cache
``spec``             JSON object: the spec the model was built from (``Spec.to_dict``)
``versions``         JSON object: package versions of the exporting machine (``versions()``)
``metrics``          optional JSON object: the run's final losses
``layerzoo.quantized`` optional: how the weights were quantised (``"int8-dynamic"``); absent
                     in an fp32 file
==================== ==========================================================================

Everything that writes (export/onnx.py, export/quantize.py) and reads (export/runtime.py,
export/check.py, later targets such as the web page) uses these names and functions, so the
contract changes in one place. Imports the standard library and zoo.data / zoo.errors only.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo.data import Vocab
from zoo.errors import ArtifactError, one_line

__all__ = ["FORMAT_KEY", "FORMAT", "FORMAT_STEP", "FORMATS", "TOKEN", "POSITION", "STATE_KEY",
           "past_name", "present_name", "INPUT", "OUTPUT", "DEFAULT_NAME", "VOCAB_KEY",
           "CONTEXT_KEY", "SPEC_KEY", "VERSIONS_KEY", "METRICS_KEY", "QUANTIZED_KEY",
           "INT8_DYNAMIC", "LAYERZOO_KEYS", "Metadata", "make_metadata", "read_metadata",
           "check_signature", "versions"]

FORMAT_KEY, FORMAT, FORMAT_STEP = "layerzoo.format", "1", "2"
FORMATS = (FORMAT, FORMAT_STEP)
INPUT, OUTPUT = "context", "logits"
TOKEN, POSITION = "token", "position"  # format 2's inputs, before the state
STATE_KEY = "layerzoo.state"
MAX_STATE = 1024  # state tensors a step graph may carry
DEFAULT_NAME = "model.onnx"
VOCAB_KEY, CONTEXT_KEY, SPEC_KEY = "vocab", "context", "spec"
VERSIONS_KEY, METRICS_KEY = "versions", "metrics"
QUANTIZED_KEY, INT8_DYNAMIC = "layerzoo.quantized", "int8-dynamic"
LAYERZOO_KEYS = (FORMAT_KEY, VOCAB_KEY, CONTEXT_KEY, SPEC_KEY, VERSIONS_KEY, METRICS_KEY,
                 QUANTIZED_KEY, STATE_KEY)


def past_name(name: str) -> str:
    """A state tensor's input name in a step graph: ``past.3.key``."""
    return f"past.{name}"


def present_name(name: str) -> str:
    """Its output name, fed back as ``past_name`` at the next position: ``present.3.key``."""
    return f"present.{name}"
_JSON_KEYS = (SPEC_KEY, VERSIONS_KEY, METRICS_KEY)
_PACKAGES = ("layerzoo", "torch", "onnx", "onnxruntime", "numpy")


def versions() -> dict[str, str]:
    """The package versions a run or a file records: one dict for every writer.

    Read from the installed distributions' metadata, so nothing heavy is imported.
    """
    out = {}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "0+unknown" if name == "layerzoo" else "not installed"
    out["python"] = platform.python_version()
    return out


@dataclass(frozen=True)
class Metadata:
    """A layerzoo file's metadata, read and validated."""

    vocab: tuple[str, ...]
    context: int
    spec: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    quantized: str | None = None  # None for fp32, else how (INT8_DYNAMIC)
    props: dict[str, str] = field(default_factory=dict)  # every metadata_prop, layerzoo's or not
    format: str = FORMAT  # "1": a window graph; "2": a sequence model's step graph
    state: tuple[tuple[str, tuple[int, ...], bool], ...] = ()  # format 2: per state tensor
    # (NAME, dims without the batch axis, whether it is a cache [T, batch, ...])

    @property
    def step(self) -> bool:
        """Whether the file holds a step graph (format 2)."""
        return self.format == FORMAT_STEP


def make_metadata(vocab: Sequence[str], context: int, spec: Mapping[str, Any],
                  metrics: Mapping[str, Any] | None = None,
                  quantized: str | None = None,
                  state: Sequence[tuple[str, Sequence[int], bool]] | None = None
                  ) -> dict[str, str]:
    """The metadata_props a writer stores: what it takes to sample from the file alone.
    ``state`` (NAME, dims, cache) per state tensor makes it a format-2 step graph's."""
    props = {
        FORMAT_KEY: FORMAT if state is None else FORMAT_STEP,
        VOCAB_KEY: json.dumps(list(vocab), ensure_ascii=False),
        CONTEXT_KEY: str(int(context)),
        SPEC_KEY: json.dumps(dict(spec), ensure_ascii=False),
        VERSIONS_KEY: json.dumps(versions()),
    }
    if metrics:
        props[METRICS_KEY] = json.dumps(dict(metrics))
    if quantized:
        props[QUANTIZED_KEY] = quantized
    if state is not None:
        props[STATE_KEY] = json.dumps([[name, list(dims), bool(cache)]
                                       for name, dims, cache in state])
    return props


def read_metadata(props: Mapping[str, str], path: Path | str) -> Metadata:
    """Validate a file's metadata_props; ArtifactError (one line naming ``path``) if unusable."""
    props = dict(props)
    if FORMAT_KEY not in props or VOCAB_KEY not in props or CONTEXT_KEY not in props:
        raise ArtifactError(f"{path} has no layerzoo metadata; export it with `zoo export`")
    if props[FORMAT_KEY] not in FORMATS:
        raise ArtifactError(f"{path} has layerzoo format {props[FORMAT_KEY][:20]!r}; this "
                            f"layerzoo reads formats {' and '.join(map(repr, FORMATS))} "
                            "(upgrade layerzoo)")
    try:
        vocab = json.loads(props[VOCAB_KEY])
        context = int(props[CONTEXT_KEY])
        parsed = {key: json.loads(props[key]) for key in _JSON_KEYS if key in props}
    except (ValueError, RecursionError) as e:
        raise ArtifactError(f"{path} has corrupted layerzoo metadata ({one_line(e, 120)}); "
                            "export it again with `zoo export`") from None
    problem = Vocab.problem(vocab)
    if problem or context < 1:
        what = f"vocab: {problem}" if problem else f"context {context} < 1"
        raise ArtifactError(f"{path} has corrupted layerzoo metadata ({what}); export it again "
                            "with `zoo export`")
    for key in _JSON_KEYS:
        if key in parsed and not isinstance(parsed[key], dict):
            raise ArtifactError(f"{path} has corrupted layerzoo metadata ({key!r} is not a JSON "
                                "object); export it again with `zoo export`")
    quantized = props.get(QUANTIZED_KEY)
    if quantized is not None and quantized != INT8_DYNAMIC:
        raise ArtifactError(f"{path} says it is quantised as {quantized[:20]!r}; this layerzoo "
                            f"knows only {INT8_DYNAMIC!r}")
    state = _state(props, path) if props[FORMAT_KEY] == FORMAT_STEP else ()
    return Metadata(tuple(vocab), context, parsed.get(SPEC_KEY, {}),
                    parsed.get(VERSIONS_KEY, {}), parsed.get(METRICS_KEY), quantized, props,
                    props[FORMAT_KEY], state)


def _state(props: Mapping[str, str], path: Path | str
           ) -> tuple[tuple[str, tuple[int, ...], bool], ...]:
    """Format 2's list of state tensors, checked: distinct names, positive dims, a cache with
    a time axis."""
    def count(k: object) -> bool:
        return isinstance(k, int) and not isinstance(k, bool) and 0 < k <= 2**20

    try:
        items = json.loads(props[STATE_KEY])
        state = tuple((name, tuple(dims), cache) for name, dims, cache in items)
        ok = (len(state) <= MAX_STATE and len({n for n, _, _ in state}) == len(state)
              and all(isinstance(n, str) and 0 < len(n) <= 200 and len(d) <= 8
                      and all(map(count, d)) and isinstance(c, bool) and (d or not c)
                      for n, d, c in state))
    except (KeyError, ValueError, TypeError, RecursionError):
        ok = False
    if not ok:
        raise ArtifactError(f"{path} has corrupted layerzoo metadata (format 2 needs "
                            f"{STATE_KEY!r}: a list of [name, [dims], cache]); "
                            "export it again with `zoo export`")
    return state


def check_signature(inputs: Sequence[Any], outputs: Sequence[Any], path: Path | str,
                    meta: Metadata) -> None:
    """Refuse a graph whose inputs/outputs (objects with .name .type .shape, as onnxruntime's
    NodeArg) are not ``context`` int64 [batch, T] -> ``logits`` float32 [batch, V] (format 1),
    or the step graph's (format 2)."""
    size = len(meta.vocab)
    if meta.step:
        _check_step(inputs, outputs, path, meta)
        return
    want_in = f"{INPUT} int64 [batch, {meta.context}]"
    want_out = f"{OUTPUT} float32 [batch, {size}]"
    if (len(inputs) != 1 or inputs[0].name != INPUT or inputs[0].type != "tensor(int64)"
            or not _fits(inputs[0].shape, meta.context)):
        got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
        raise ArtifactError(f"{path} takes [{got}]; a layerzoo model takes {want_in}")
    if (len(outputs) != 1 or outputs[0].name != OUTPUT or outputs[0].type != "tensor(float)"
            or not _fits(outputs[0].shape, size)):
        got = ", ".join(f"{o.name} {o.type} {o.shape}" for o in outputs)
        raise ArtifactError(f"{path} gives [{got}]; a layerzoo model gives {want_out}")


def _check_step(inputs: Sequence[Any], outputs: Sequence[Any], path: Path | str,
                meta: Metadata) -> None:
    want_in = [(TOKEN, "tensor(int64)", 1), (POSITION, "tensor(int64)", 0),
               *[(past_name(n), "tensor(float)", 1 + len(d)) for n, d, _ in meta.state]]
    want_out = [(OUTPUT, "tensor(float)", 2),  # a cache's entry has no time axis
                *[(present_name(n), "tensor(float)", len(d) + (not c)) for n, d, c in meta.state]]
    for what, got, want in (("takes", inputs, want_in), ("gives", outputs, want_out)):
        have = [(a.name, a.type, len(a.shape)) for a in got]
        if have != want:
            missing = [n for n, _, _ in want if n not in {h[0] for h in have}]
            extra = [h[0] for h in have if h[0] not in {n for n, _, _ in want}]
            why = (f"missing {', '.join(missing[:3])}" if missing else
                   f"unexpected {', '.join(extra[:3])}" if extra else "other types or ranks")
            raise ArtifactError(f"{path} {what} [{', '.join(h[0] for h in have)[:200]}], not "
                                f"the step graph its metadata describes ({why}); export it "
                                "again with `zoo export`")


def _fits(shape: Sequence[Any], width: int) -> bool:
    """[batch, width], where a symbolic (str/None) width is accepted too."""
    return len(shape) == 2 and (not isinstance(shape[1], int) or shape[1] == width)
