"""Parity between a run's torch model and its exported ONNX file.

    zoo check runs/mlp-bn runs/mlp-bn/model.onnx

For an fp32 file two promises are checked: onnxruntime's logits equal torch's (within
``atol + rtol * |torch|``) on every context of the run's validation split, rebuilt from the
words file and seed in meta.json; and the same seed samples the same words through both
backends. A quantised file (metadata ``layerzoo.quantized``) cannot promise either, so it is
judged by what a user notices: its validation loss may exceed torch's by at most
``max_loss_drift`` nats (default 0.01); the logit difference and both losses are reported.

A sequence model's step graph (format 2) is checked position by position: torch's full forward
over every validation word, ``[B, T, V]``, against the step graph run one token at a time over
the same words, at every position up to each word's end; its words are sampled by stepping
torch's model and the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zoo.data import IGNORE, Sequences, Windows, load_dataset
from zoo.errors import ArtifactError, SpecError
from zoo.export.runtime import OnnxModel
from zoo.recipe import MAX_SEED
from zoo.rundir import check_idle, check_seed, open_run
from zoo.sampling import sample

if TYPE_CHECKING:
    from zoo.registry import Registry

__all__ = ["CheckResult", "check", "compare_logits", "ATOL", "RTOL", "MAX_LOSS_DRIFT"]

ATOL, RTOL = 1e-5, 1e-4
MAX_LOSS_DRIFT = 0.01  # nats of validation loss a quantised file may lose
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
    torch_loss: float = math.nan  # mean cross-entropy (nats) on the validation split
    onnx_loss: float = math.nan
    quantized: str | None = None  # the file's quantisation, None for fp32
    max_loss_drift: float = MAX_LOSS_DRIFT
    stepped: bool = False  # a step graph, compared position by position
    seed: int = 0  # the samples' seed

    @property
    def compared(self) -> str:
        """What ``contexts`` counts, in words."""
        return ("validation positions (the step graph run token by token over every word)"
                if self.stepped else "validation contexts")

    @property
    def loss_drift(self) -> float:
        """How much higher onnxruntime's validation loss is than torch's (nats)."""
        return self.onnx_loss - self.torch_loss

    @property
    def loss_ok(self) -> bool:
        return self.loss_drift <= self.max_loss_drift

    @property
    def ok(self) -> bool:
        if self.quantized:
            return self.loss_ok
        return self.logits_match and self.samples_match

    def lines(self) -> list[str]:
        """The report ``zoo check`` prints: the logits, the validation losses, the samples."""
        compared = (f"logits: max |onnxruntime - torch| = {self.max_abs_diff:.3g} over "
                    f"{self.contexts:,} {self.compared}")
        samples = f"samples: {self.samples} words with seed {self.seed}: "
        if self.quantized:
            return [f"{compared} ({self.quantized} file: judged by loss)",
                    f"validation loss: torch {self.torch_loss:.4f}, onnxruntime "
                    f"{self.onnx_loss:.4f}, drift {self.loss_drift:+.4f} nats (max "
                    f"{self.max_loss_drift:g}): {'ok' if self.loss_ok else 'TOO HIGH'}",
                    f"{samples}{self.samples - len(self.mismatches)} identical (not required)"]
        verdict = "ok" if self.logits_match else "DIFFER"
        return [f"{compared} (atol {self.atol:g}, rtol {self.rtol:g}): {verdict}",
                f"validation loss: torch {self.torch_loss:.4f}, onnxruntime "
                f"{self.onnx_loss:.4f}",
                samples + ("identical" if self.samples_match else
                           f"{len(self.mismatches)} DIFFER, e.g. {self.mismatches[0]}")]


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
          atol: float = ATOL, rtol: float = RTOL, max_loss_drift: float = MAX_LOSS_DRIFT,
          registry: Registry | None = None) -> CheckResult:
    """Compare the run's torch model with the ONNX file: validation logits, losses and seeded
    samples (the verdict for a quantised file is the loss drift alone)."""
    if (not isinstance(max_loss_drift, (int, float)) or isinstance(max_loss_drift, bool)
            or not math.isfinite(max_loss_drift) or max_loss_drift < 0):
        raise SpecError(f"max_loss_drift must be a finite number >= 0 (nats), got "
                        f"{max_loss_drift!r}", "check")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SpecError(f"seed must be an integer in [0, 2**64), got {seed!r}"[:120], "check")
    check_idle(Path(run_dir), "check it")
    run = open_run(run_dir, registry=registry)
    onnx_model = OnnxModel.load(onnx_path)
    if tuple(onnx_model.vocab) != tuple(run.vocab.chars) or onnx_model.context != run.spec.context:
        raise ArtifactError(f"{onnx_path} was not exported from {run.path}: its vocabulary or "
                            "context differs")
    sequence = run.model.kind == "sequence"
    if sequence != onnx_model.meta.step:
        raise ArtifactError(f"{onnx_path} holds a {'step' if onnx_model.meta.step else 'window'}"
                            f" graph but {run.path} is a {run.model.kind} model; it was not "
                            "exported from this run")
    val = _validation_split(run.path, run.meta, run.spec.train.get("seed"), run.spec.context,
                            sequence)
    worst, ok, torch_nll, onnx_nll = 0.0, True, 0.0, 0.0
    for chunk, target in val.chunks(CHUNK // run.spec.context if sequence else CHUNK):
        expected = run.model.numpy_logits(chunk)  # (C, V), or (C, T, V) for whole words
        actual = _stepped(onnx_model, chunk) if sequence else onnx_model.logits(chunk)
        if sequence:  # the positions up to each word's end: (N, V) each, targets (N,)
            kept = target != IGNORE  # (C, T)
            expected, actual, target = expected[kept], actual[kept], target[kept]
        diff, fine = compare_logits(expected, actual, atol=atol, rtol=rtol)
        worst, ok = max(worst, diff), ok and fine
        torch_nll += _nll(expected, target)
        onnx_nll += _nll(actual, target)
    options = {"vocab": run.vocab.chars, "context": run.spec.context, "n": samples,
               "seed": seed}
    torch_words = sample(run.model.sampling_model(), **options)
    onnx_words = sample(onnx_model.sampling_model(), **options)
    mismatches = [(a, b) for a, b in zip(torch_words, onnx_words, strict=True) if a != b]
    count = max(val.targets, 1)
    return CheckResult(val.targets, worst, ok, samples, not mismatches, mismatches, atol, rtol,
                       torch_nll / count, onnx_nll / count, onnx_model.quantized,
                       float(max_loss_drift), sequence, seed)


def _stepped(model: OnnxModel, ids: np.ndarray) -> np.ndarray:
    """A step graph's logits at every position of the sequences ``ids`` [C, T]: [C, T, V]."""
    state = model.start(len(ids))
    out = []
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state, t)  # (C, V)
        out.append(logits)
    return np.stack(out, axis=1)  # (C, T, V)


def _nll(logits: np.ndarray, target: np.ndarray) -> float:
    """Summed cross-entropy (nats) of the targets under float logits [C, V], in float64."""
    z = logits.astype(np.float64)  # (C, V)
    z -= z.max(axis=1, keepdims=True)
    log_total = np.log(np.exp(z).sum(axis=1))  # (C,)
    return float((log_total - z[np.arange(len(z)), target]).sum())


def _validation_split(path: Path, meta: dict, spec_seed: object, context: int,
                      sequence: bool) -> Windows | Sequences:
    """The validation split of the run's words file, rebuilt as training built it (meta.json's
    fields are checked on reading, zoo.runschema, and its seed must be spec.json's)."""
    data = meta.get("data")
    if not isinstance(data, dict) or "path" not in data or "seed" not in meta:
        raise ArtifactError(f"{path}/meta.json does not say which words file and seed the run "
                            "used; was it made by zoo train?")
    check_seed(path, meta, spec_seed)
    dataset = load_dataset(data["path"], context, meta["seed"], sequence=sequence)
    if data.get("sha256") not in (None, dataset.sha256):
        raise ArtifactError(f"{dataset.path} changed since {path} was trained (sha256 differs); "
                            "its validation split would not be the run's")
    return dataset.splits["val"]
