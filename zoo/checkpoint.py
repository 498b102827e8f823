"""Checkpoints: weights, optimizer state, RNG states, step and the pending losses in one file.

One safetensors file, written atomically, so a crash can never pair the weights of one step
with the optimizer of another. No pickle anywhere: non-tensor optimizer state is JSON metadata.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from zoo import atomic, rundir
from zoo.build import Model
from zoo.errors import ArtifactError

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_step", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "layerzoo-checkpoint/1"


def save_checkpoint(path: Path, model: Model, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, step: int,
                    pending: Sequence[float] = ()) -> None:
    """Write ``path``/checkpoint.safetensors; ``pending`` are the losses not yet in metrics."""
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    plain: dict[str, dict[str, Any]] = {}
    for pid, state in opt["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().contiguous()
            else:
                plain.setdefault(str(pid), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.batches"] = generator.get_state()
    tensors["losses.pending"] = torch.tensor(list(pending), dtype=torch.float64)
    meta = {"format": CHECKPOINT_FORMAT, "step": str(step),
            "optimizer": json.dumps({"param_groups": opt["param_groups"], "state": plain}),
            **rundir.bound(path)}  # resumed only with the spec and vocab it was saved with
    atomic.write_bytes(path / rundir.CHECKPOINT, st_save(tensors, metadata=meta))


def checkpoint_step(path: Path) -> int:
    """The step of ``path``'s checkpoint, read without building anything."""
    file = path / rundir.CHECKPOINT
    _, meta = rundir.read_tensors(file)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{file} is not a layerzoo checkpoint")
    try:
        return int(meta["step"])
    except (KeyError, ValueError):
        raise ArtifactError(f"{file} is corrupted: no step in its metadata") from None


def load_checkpoint(path: Path, model: Model, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator) -> tuple[int, list[float]]:
    """Restore a checkpoint written by save_checkpoint; returns (step, pending losses)."""
    file = path / rundir.CHECKPOINT
    tensors, meta = rundir.read_tensors(file)
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{file} is not a layerzoo checkpoint")
    try:
        step = int(meta["step"])
        saved = json.loads(meta["optimizer"])
        model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        rundir.load_model_state(model, model_state, file)
        rundir.check_binding(path, meta, file)  # after the shapes: those name the mismatch best
        state: dict[int, dict[str, Any]] = {}
        for pid, values in saved["state"].items():
            state.setdefault(int(pid), {}).update(values)
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        generator.set_state(tensors["rng.batches"])
        pending = tensors.get("losses.pending", torch.zeros(0)).tolist()
    except ArtifactError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{file} is corrupted or from another model: {e}") from None
    return step, pending
