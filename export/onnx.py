"""ONNX export: a trained model becomes one self-contained .onnx file.

    zoo export runs/mlp-bn -o model.onnx

The file holds the eval-mode graph (BatchNorm on running statistics, folded into the Gemm
where the optimizer can), input ``context`` int64 [batch, T] and output ``logits`` float32
[batch, V] with a dynamic batch axis, every weight inline (no external data), and in its
metadata_props everything a sampler needs: vocab, context, spec, versions, metrics. It passes
``onnx.checker`` (full check) and is written atomically.

A sequence model exports its step graph instead (contract format 2): one position of every
sequence per call, ``token`` [batch] and ``position`` [] and the state in, ``logits``
[batch, V] and the state's update out (export/contract.py): a tensor a layer replaces, or the
one slot of a cache it writes at ``position``. Every state tensor has a static shape but the
batch (an attention layer's cache holds all T positions), so the graph specialises nothing on
the example, copies no cache, and a sampler never computes a position twice.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import torch

from zoo import atomic, runpaths
from zoo.build import SEQUENCE, Model
from zoo.capture import layer_warnings
from zoo.errors import ArtifactError, one_line
from zoo.export.clean import clean_proto
from zoo.export.contract import (
    DEFAULT_NAME,
    FORMAT,
    FORMAT_KEY,
    INPUT,
    LAYERZOO_KEYS,
    OUTPUT,
    POSITION,
    TOKEN,
    make_metadata,
    past_name,
    present_name,
)
from zoo.rundir import Run, check_idle, open_run

if TYPE_CHECKING:
    from zoo.registry import Registry

__all__ = ["export_onnx", "export_run", "layerzoo_metadata", "check_opset", "FORMAT",
           "FORMAT_KEY", "DEFAULT_NAME", "INT8_NAME", "INPUT", "OUTPUT", "MIN_OPSET"]

INT8_NAME = runpaths.EXPORTS[1]
MIN_OPSET = 18  # torch's exporter writes opset 18 and later
MAX_PROTO_BYTES = 2**31 - 1  # protobuf's limit for one message: beyond it, data goes external


def export_run(run_dir: str | Path, path: str | Path | None = None, *, opset: int = 20,
               int8: bool = False, registry: Registry | None = None) -> Path:
    """Export the model of a run directory (default output: RUN/model.onnx, or
    RUN/model.int8.onnx with ``int8``: dynamically quantised, see export/quantize.py).

    Refuses, before anything is written, an unsupported ``opset``, a run that another process
    is training now, and an output inside a run directory other than its exports
    (``zoo.runpaths``); the run's own exports are replaced.
    """
    check_opset(opset)
    check_idle(Path(run_dir), "export it")
    run = open_run(run_dir, registry=registry)
    out = Path(path) if path is not None else run.path / (INT8_NAME if int8 else DEFAULT_NAME)
    runpaths.check_target(out, "the ONNX file")
    if not int8:
        return export_onnx(run, out, opset=opset)
    from zoo.export.quantize import quantize_onnx

    with tempfile.TemporaryDirectory(prefix="layerzoo-export-") as tmp:
        fp32 = export_onnx(run, Path(tmp) / DEFAULT_NAME, opset=opset)
        return quantize_onnx(fp32, out)


def check_opset(opset: object) -> int:
    """``opset`` if torch's exporter and the installed onnx can both write it, else
    ArtifactError (the exporter would silently write another version)."""
    top = onnx.defs.onnx_opset_version()
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= top:
        raise ArtifactError(f"opset {opset!r} is not supported: choose {MIN_OPSET}..{top} "
                            f"(onnx {onnx.__version__})")
    return opset


def export_onnx(run_or_model: Run | Model, path: str | Path, *, opset: int = 20,
                metadata: Mapping[str, str] | None = None,
                vocab: Sequence[str] | None = None) -> Path:
    """Write the eval-mode graph of a run (or a bare ``Model``) to ``path`` as one ONNX file.

    ``metadata`` adds string entries to metadata_props (layerzoo's own keys cannot be
    replaced). A bare model needs ``vocab`` (its symbols, '.' first). The model is left in the
    mode it was in. Any failure is an ArtifactError naming, when it can, the layer and plugin.
    """
    path = Path(path)
    if isinstance(run_or_model, Run):
        model, chars = run_or_model.model, run_or_model.vocab.chars
        metrics = run_or_model.meta.get("metrics")
    elif isinstance(run_or_model, Model):
        if vocab is None:
            raise ArtifactError("export_onnx(model, ...) needs vocab=[...] ('.' first) to store "
                                "in the file; or pass the opened run directory")
        model, chars, metrics = run_or_model, tuple(vocab), None
    else:
        raise ArtifactError(f"expected a run (zoo.rundir.open_run) or a zoo Model, got "
                            f"{type(run_or_model).__name__}")
    if len(chars) != model.vocab_size:
        raise ArtifactError(f"the vocabulary has {len(chars)} symbols but the model predicts "
                            f"{model.vocab_size}")
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory; give a file name such as "
                            f"{path / DEFAULT_NAME}")
    if not path.parent.is_dir():
        raise ArtifactError(f"cannot write {path}: folder {path.parent} does not exist")
    check_opset(opset)
    props = layerzoo_metadata(model, chars, metrics)
    clash = sorted(set(metadata or {}) & (set(props) | set(LAYERZOO_KEYS)))
    if clash:
        raise ArtifactError(f"metadata keys {clash} are layerzoo's own; choose other names")
    props.update({str(k): str(v) for k, v in (metadata or {}).items()})

    proto = _export_proto(model, opset)
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:
        raise ArtifactError(f"the exporter wrote opset {written} instead of the requested "
                            f"{opset}; choose another --opset")
    clean_proto(proto)
    onnx.helper.set_model_props(proto, props)
    data = proto.SerializeToString()
    if len(data) > MAX_PROTO_BYTES:
        raise ArtifactError(f"the model is {len(data):,} bytes, over protobuf's 2 GiB limit for "
                            "a single-file ONNX model")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as e:  # ValidationError, or an inference error from full_check
        raise ArtifactError(f"the exported graph fails onnx.checker: {_telling_line(e)}") from None
    try:
        atomic.write_bytes(path, data)
    except OSError as e:
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def layerzoo_metadata(model: Model, chars: Sequence[str],
                      metrics: Any = None) -> dict[str, str]:
    """The metadata_props layerzoo stores (export/contract.py): what it takes to sample from
    the file alone."""
    state = None
    if model.kind == SEQUENCE:
        graph = StepGraph(model)
        state = [(name, (t.shape[0], *t.shape[2:]) if cache else tuple(t.shape[1:]), cache)
                 for (name, t), cache in zip(graph.state(1), graph.caches, strict=True)]
    return make_metadata(chars, model.context, model.spec.to_dict(),
                         metrics if isinstance(metrics, dict) else None, state=state)


class StepGraph(torch.nn.Module):
    """A sequence model's ``step`` with its state as a flat list: the graph of format 2."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model
        self.layout = [(i, key) for i, s in enumerate(model.initial_state(1)) for key in s]
        self.caches = [key in model.caches(i) for i, key in self.layout]

    def state(self, batch: int, entries: int | None = None) -> list[tuple[str, torch.Tensor]]:
        """(``L.NAME``, zeros) per state tensor, in input order; with ``entries``, each cache
        cut to that many, as the graph takes it."""
        nested = self.model.initial_state(batch)
        return [(f"{i}.{key}", nested[i][key][:entries] if cache else nested[i][key])
                for (i, key), cache in zip(self.layout, self.caches, strict=True)]

    def forward(self, token: torch.Tensor, position: torch.Tensor,
                state: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        nested: list[dict[str, torch.Tensor]] = [{} for _ in self.model.layers]
        for (i, key), tensor in zip(self.layout, state, strict=True):
            nested[i][key] = tensor
        logits, new = self.model.step_updates(token, nested, position)  # (B, V)
        return (logits, *(new[i][key] for i, key in self.layout))


def _export_proto(model: Model, opset: int) -> onnx.ModelProto:
    """torch.onnx.export of the eval-mode graph; the model's mode is restored afterwards."""
    if model.kind == SEQUENCE:
        return _export_step(model, opset)
    table = model.translation_table()
    example = torch.zeros((2, model.context), dtype=torch.int64)  # (B, T)
    was_training = model.training
    model.eval()
    try:
        with layer_warnings(model), _quiet():  # a layer's warnings: once, naming it
            program = torch.onnx.export(
                model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT],
                output_names=[OUTPUT], dynamic_shapes={INPUT: {0: "batch"}}, optimize=True,
                verbose=False, external_data=False,
                custom_translation_table=table or None)
            return program.model_proto
    except Exception as e:  # the exporter raises OnnxExporterError and plenty of others
        where, why = _culprit(model, e, example)
        raise ArtifactError(f"ONNX export failed{where}: {why or _telling_line(e)}") from None
    finally:
        model.train(was_training)


def _export_step(model: Model, opset: int) -> onnx.ModelProto:
    """The step graph of a sequence model (format 2), batch dynamic, every other axis static."""
    problem = model.step_problem()
    if problem is not None:
        raise ArtifactError(f"cannot export the step graph of this sequence model: {problem}")
    graph = StepGraph(model)
    names = [name for name, _ in graph.state(1)]
    # batch 3 and 2 cache entries: neither 0 nor 1 (which the exporter would specialise on)
    example = (torch.zeros(3, dtype=torch.int64), torch.tensor(min(2, model.context - 1)),
               [t for _, t in graph.state(3, entries=2)])
    batch = torch.export.Dim("batch", min=1)
    past = torch.export.Dim("past", min=0, max=max(model.context, 2))
    was_training = model.training
    model.eval()
    try:
        with layer_warnings(model), _quiet():
            program = torch.onnx.export(
                graph, example, dynamo=True, opset_version=opset,
                input_names=[TOKEN, POSITION, *map(past_name, names)],
                output_names=[OUTPUT, *map(present_name, names)],
                dynamic_shapes={"token": {0: batch}, "position": None,
                                "state": [{0: past, 1: batch} if cache else {0: batch}
                                          for cache in graph.caches]},
                optimize=True, verbose=False, external_data=False,
                custom_translation_table=model.translation_table() or None)
            return program.model_proto
    except Exception as e:
        raise ArtifactError(f"ONNX export of the step graph failed: {_telling_line(e)}") from None
    finally:
        model.train(was_training)


QUIET_LOGGERS = ("torch", "torch.onnx", "torch.export", "torch.fx", "torch._dynamo",
                 "torch.fx.experimental.symbolic_shapes", "onnxscript")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress lines, torchvision notes and deprecation warnings."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*training mode.*")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


OP_NAME = re.compile(r"OpOverload\(op='([\w.]+)', overload='(\w+)'\)")


def _culprit(model: Model, error: Exception, example: torch.Tensor) -> tuple[str, str]:
    """(' in entry 3 (x) of plugin 'p'', the reason if known) for the layer export broke on."""
    match = OP_NAME.search(str(error))
    with _quiet():
        try:
            program = torch.export.export(model, (example,), strict=False)
        except Exception:
            return _first_failing_layer(model)
    if match is None:
        return "", ""
    target = f"{match.group(1)}.{match.group(2)}"
    why = (f"operator {target} has no ONNX translation; the layer's plugin can supply one "
           "through LayerType.onnx_translation")
    for node in program.graph.nodes:
        if node.op == "call_function" and str(node.target) == target:
            for path, _ in (node.meta.get("nn_module_stack") or {}).values():
                index = re.match(r"(?:L\['self'\]\.)?layers\.(\d+)", path)
                if index:
                    return _describe(model, int(index.group(1))), why
    return "", why


def _first_failing_layer(model: Model) -> tuple[str, str]:
    """Trace the layers one by one (each on an example of its input shape) to find the culprit."""
    x: torch.Tensor = torch.zeros((2, model.context), dtype=torch.int64)  # (B, T)
    with _quiet():
        for i, layer in enumerate(model.layers):
            try:
                torch.export.export(layer, (x,), strict=False)
                with torch.no_grad():
                    x = layer(x)
            except Exception as e:
                return _describe(model, i), f"torch.export cannot trace it: {_telling_line(e)}"
    return "", ""


def _describe(model: Model, index: int) -> str:
    entry = model.entries[index]
    plugin = f" of plugin {entry.layer.plugin!r}" if entry.layer.plugin else ""
    return f" in {entry.label}{plugin}"


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _telling_line(error: BaseException) -> str:
    """The telling line of an exporter error: no ANSI colours, no graph dumps, no class repr."""
    lines = [ln.strip() for ln in ANSI.sub("", str(error)).splitlines() if ln.strip()]
    text = next((ln for ln in lines if "Error" in ln and len(ln) > 20), lines[0] if lines else "")
    text = re.sub(r"<class '[\w.]+'>: ", "", text).split(" This is step ")[0]
    return one_line(text or type(error).__name__)
