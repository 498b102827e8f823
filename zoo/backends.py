"""The two backends words are sampled through, behind one interface: a run directory's torch
model, or an .onnx file in onnxruntime (which imports no torch).

    backend = open_backend(Path("runs/mlp-bn/model.onnx"))
    sample_text(backend.model, vocab=backend.vocab, context=backend.context, n=20)

A folder is a run directory (zoo.rundir reads and checks it); anything else is an ONNX file
(zoo.export.runtime reads and checks it). Either way the seed gives the same words
(zoo.sampling), so ``zoo sample`` on a run and on its export agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zoo.registry import Registry

__all__ = ["Backend", "open_backend"]


@dataclass(frozen=True)
class Backend:
    """What ``zoo.sampling.sample`` and ``sample_text`` take from a model."""

    model: Any  # a logits function (window model) or a stepper (sequence model)
    vocab: tuple[str, ...]  # the symbols, '.' first
    context: int


def open_backend(source: Path, registry: Registry | None = None) -> Backend:
    """``source`` opened for sampling: a run directory in torch, else an .onnx file in
    onnxruntime (ArtifactError, one line, for anything unusable)."""
    if source.is_dir():
        from zoo.rundir import open_run

        run = open_run(source, registry=registry)
        return Backend(run.model.sampling_model(), tuple(run.vocab.chars), run.spec.context)
    from zoo.export.runtime import OnnxModel

    model = OnnxModel.load(source, threads=1)  # the sampler's own setting: one session only
    return Backend(model.sampling_model(), tuple(model.vocab), model.context)
