"""Parity between a run's torch model and its exported ONNX file.

    zoo check runs/mlp-bn runs/mlp-bn/model.onnx

Two promises are checked: onnxruntime's logits equal torch's (within ``atol + rtol * |torch|``)
on every context of the run's validation split, rebuilt from the words file and seed in
meta.json; and the same seed samples the same words through both backends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.data import Windows, load_dataset
from zoo.errors import ArtifactError
from zoo.export.runtime import OnnxModel
from zoo.rundir import open_run
from zoo.sampling import sample

__all__ = ["CheckResult", "check", "compare_logits", "ATOL", "RTOL"]

ATOL, RTOL = 1e-5, 1e-4
CHUNK = 16384  # contexts per forward pass: bounded memory on any split size


@dataclass
class CheckResult:
    """What ``check`` found; ``ok`` is the verdict."""

    contexts: int  # validation contexts compared
    max_abs_diff: float  # largest |onnxruntime - torch| over every logit of every context
    logits_match: bool  # every logit within atol + rtol * |torch|
    samples: int  # words sampled through each backend
    samples_match: bool
    mismatches: list[tuple[str, str]] = field(default_factory=list)  # (torch, onnxruntime)
    atol: float = ATOL
    rtol: float = RTOL

    @property
    def ok(self) -> bool:
        return self.logits_match and self.samples_match


def compare_logits(expected: np.ndarray, actual: np.ndarray, *, atol: float = ATOL,
                   rtol: float = RTOL) -> tuple[float, bool]:
    """(max |actual - expected|, whether every entry is within atol + rtol * |expected|)."""
    if expected.shape != actual.shape:
        raise ArtifactError(f"logits of shape {actual.shape} do not match torch's "
                            f"{expected.shape}")
    if not expected.size:
        return 0.0, True
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))  # (B, V)
    ok = bool((diff <= atol + rtol * np.abs(expected.astype(np.float64))).all())
    return float(diff.max()), ok


def check(run_dir: str | Path, onnx_path: str | Path, *, samples: int = 20, seed: int = 0,
          atol: float = ATOL, rtol: float = RTOL) -> CheckResult:
    """Compare the run's torch model with the ONNX file: validation logits and seeded samples."""
    run = open_run(run_dir)
    onnx_model = OnnxModel.load(onnx_path)
    if tuple(onnx_model.vocab) != tuple(run.vocab.chars) or onnx_model.context != run.spec.context:
        raise ArtifactError(f"{onnx_path} was not exported from {run.path}: its vocabulary or "
                            "context differs")
    val = _validation_split(run.path, run.meta, run.spec.context)
    worst, ok = 0.0, True
    for chunk, _ in val.chunks(CHUNK):  # (C, T)
        diff, fine = compare_logits(run.model.numpy_logits(chunk), onnx_model.logits(chunk),
                                    atol=atol, rtol=rtol)
        worst, ok = max(worst, diff), ok and fine
    options = {"vocab": run.vocab.chars, "context": run.spec.context, "n": samples,
               "seed": seed}
    torch_words = sample(run.model.numpy_logits, **options)
    onnx_words = sample(onnx_model.logits, **options)
    mismatches = [(a, b) for a, b in zip(torch_words, onnx_words, strict=True) if a != b]
    return CheckResult(len(val), worst, ok, samples, not mismatches, mismatches, atol, rtol)


def _validation_split(path: Path, meta: dict, context: int) -> Windows:
    """The validation split of the run's words file, rebuilt as training built it."""
    data = meta.get("data")
    if not isinstance(data, dict) or "path" not in data or "seed" not in meta:
        raise ArtifactError(f"{path}/meta.json does not say which words file and seed the run "
                            "used; was it made by zoo train?")
    dataset = load_dataset(data["path"], context, meta["seed"])
    if data.get("sha256") not in (None, dataset.sha256):
        raise ArtifactError(f"{dataset.path} changed since {path} was trained (sha256 differs); "
                            "its validation split would not be the run's")
    return dataset.splits["val"]
