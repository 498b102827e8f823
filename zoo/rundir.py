"""The run directory: everything needed to rebuild, resume, sample and export a model.

    spec.json               the spec as run (model + the full recipe)
    vocab.json              the symbols, '.' first
    weights.safetensors     the model's state (parameters and buffers); no pickle anywhere
    checkpoint.safetensors  weights + optimizer state + RNG states + step, in one file, so a
                            crash can never pair the weights of one step with the optimizer of
                            another
    meta.json               versions, seed, recipe, data, status and final metrics
    metrics.jsonl           one line per evaluation
    loss.png                train and validation curves

Every file is written atomically (zoo.atomic).
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from zoo import atomic
from zoo.build import Model, build_model
from zoo.data import Vocab
from zoo.errors import ArtifactError, ZooError
from zoo.registry import Registry, layerzoo_version
from zoo.spec import Spec

__all__ = ["Run", "open_run", "is_run_dir", "read_tensors", "save_weights", "load_model_state",
           "write_json", "read_json", "SPEC", "VOCAB", "WEIGHTS", "CHECKPOINT", "META",
           "METRICS", "PLOT"]

SPEC, VOCAB, WEIGHTS = "spec.json", "vocab.json", "weights.safetensors"
CHECKPOINT, META, METRICS, PLOT = "checkpoint.safetensors", "meta.json", "metrics.jsonl", "loss.png"
REQUIRED = (SPEC, VOCAB, WEIGHTS, META)


def versions() -> dict[str, str]:
    """The versions a run or an export records."""
    import numpy as np

    return {"layerzoo": layerzoo_version(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and (path / SPEC).is_file()


def write_json(path: Path, data: Any) -> None:
    atomic.write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """Parse a JSON artifact; ArtifactError naming the file on any problem."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path} is corrupted: {e}") from None


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a safetensors file (tensors, metadata) without running any code from it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except OSError as e:
        raise ArtifactError(f"{path}: cannot read: {e.strerror}") from None
    # a safetensors file is an 8-byte header length, then a JSON header starting with '{'; a
    # pickle starts with PROTO 0x80 (protocol 2+) or, protocols 0-1, ends with STOP '.';
    # torch.save writes a zip archive ('PK') of pickles
    if data[8:9] != b"{" and (data[:1] == b"\x80" or data[:2] == b"PK"
                              or (data[-1:] == b"." and data[:1] in b"(}]cN)")):
        raise ArtifactError(f"{path} is a pickle or torch.save file, not safetensors; layerzoo "
                            "never unpickles (it can run code)")
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
    except Exception as e:  # safetensors raises its own error types for every corruption
        raise ArtifactError(f"{path} is not a valid safetensors file ({e})") from None
    return tensors, dict(header.get("__metadata__") or {})


def save_weights(path: Path, model: Model, metadata: dict[str, str] | None = None) -> None:
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic.write_bytes(path, st_save(state, metadata=metadata))


def load_model_state(model: Model, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights into ``model``; ArtifactError if they belong to another architecture."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}" if extra
                  else f"{wrong[0]} is {tuple(state[wrong[0]].shape)}, the spec needs "
                       f"{tuple(own[wrong[0]].shape)}")
        raise ArtifactError(f"{path} holds weights of another model ({detail}); it does not "
                            "fit this run's spec")
    model.load_state_dict(state)


@dataclass
class Run:
    """A run directory opened: the spec, vocabulary, metadata and the model (eval mode)."""

    path: Path
    spec: Spec
    vocab: Vocab
    meta: dict[str, Any]
    model: Model


def read_spec(path: Path) -> Spec:
    data = read_json(path / SPEC)
    try:
        return Spec.from_dict(data, source=str(path / SPEC))
    except ZooError as e:
        raise ArtifactError(f"{path / SPEC} is not a valid spec: {e}") from None


def read_vocab(path: Path) -> Vocab:
    try:
        return Vocab.from_json((path / VOCAB).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{path / VOCAB} is missing") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path / VOCAB} is corrupted: {e}") from None


def open_run(path: str | Path, weights: str = WEIGHTS, *,
             registry: Registry | None = None) -> Run:
    """Open a run directory made by ``zoo train``; the model is returned in eval mode."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such run directory")
    if not path.is_dir():
        raise ArtifactError(f"{path} is a file, not a run directory (made by zoo train)")
    missing = [f for f in REQUIRED if not (path / f).is_file()]
    if missing:
        raise ArtifactError(f"run directory {path} is missing {', '.join(missing)}; "
                            "was it made by zoo train?")
    spec, vocab, meta = read_spec(path), read_vocab(path), read_json(path / META)
    try:
        model = build_model(spec, vocab.size, registry=registry)
    except ZooError as e:
        raise ArtifactError(f"{path / SPEC}: cannot build the model: {e}") from None
    state, _ = read_tensors(path / weights)
    load_model_state(model, state, path / weights)
    model.eval()
    return Run(path, spec, vocab, meta if isinstance(meta, dict) else {}, model)
