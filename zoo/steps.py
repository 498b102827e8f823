"""A sequence model run one position at a time, for the samplers and the checks.

``Model.step`` (zoo.build) uses ``so_far`` and ``written`` to hand each layer its caches'
entries so far and to store what it returns; ``TorchStepper`` and ``Recompute`` are a model as
``zoo.sampling`` steps it (numpy in, numpy out), by its step forms or by its full forward.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from zoo.stepstate import entries_so_far, write_entries

if TYPE_CHECKING:
    from zoo.build import Model

__all__ = ["so_far", "written", "evaluating", "TorchStepper", "Recompute"]


def so_far(state: dict[str, torch.Tensor], caches: frozenset[str],
           position: torch.Tensor) -> dict[str, torch.Tensor]:
    """A layer's state as its step takes it: each cache cut to its entries before
    ``position``."""
    return {name: t[:int(position)] if name in caches else t for name, t in state.items()}


def written(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor], caches: frozenset[str],
            position: torch.Tensor) -> dict[str, torch.Tensor]:
    """A layer's state after a step: ``new`` where it replaces a tensor; for a cache, ``old``
    with entry ``position`` set to the step's."""
    return {name: old[name].index_copy(0, position.view(1), value[None])
            if name in caches else value for name, value in new.items()}


_MODE = threading.Lock()  # the sampler calls from two threads: one mode switch at a time


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients for the enclosed calls; the model's mode is restored."""
    with _MODE:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            model.train(was_training)


class TorchStepper:
    """``Model.step`` for the sampler, as the step graph runs: the state a flat list of numpy
    arrays, each cache's new entry written in place (``zoo.sampling.write_entries``)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.layout = [list(s) for s in model.initial_state(1)]  # state names per layer
        self.caches = [name in model.caches(i) for i, names in enumerate(self.layout)
                       for name in names]  # per flat state tensor: whether it is a cache

    def start(self, rows: int) -> list[np.ndarray]:
        with evaluating(self.model):
            return [t.numpy() for s in self.model.initial_state(rows) for t in s.values()]

    def step(self, ids: np.ndarray, state: list[np.ndarray],
             position: int) -> tuple[np.ndarray, list[np.ndarray]]:
        flat = iter(entries_so_far(state, self.caches, position))
        nested = [{name: torch.from_numpy(next(flat)) for name in names}
                  for names in self.layout]
        with evaluating(self.model):
            logits, new = self.model.step_updates(
                torch.from_numpy(np.ascontiguousarray(ids, np.int64)), nested,
                torch.tensor(position))  # (A, V)
            updates = [t.numpy() for s in new for t in s.values()]
        return logits.numpy(), write_entries(state, updates, self.caches, position)


class Recompute:
    """A sequence model stepped by its full forward: the state is the ids so far ``[A, T]``,
    and each position runs every position before it again (the reference the step forms are
    checked against)."""

    caches = [False]  # one state tensor, the ids, batch first

    def __init__(self, model: Model) -> None:
        self.model = model

    def start(self, rows: int) -> list[np.ndarray]:
        return [np.zeros((rows, self.model.context), np.int64)]  # (A, T)

    def step(self, ids: np.ndarray, state: list[np.ndarray],
             position: int) -> tuple[np.ndarray, list[np.ndarray]]:
        seen = state[0].copy()  # (A, T)
        seen[:, position] = ids
        with evaluating(self.model):
            logits = self.model(torch.from_numpy(seen))[:, position]  # (A, V)
        return logits.numpy(), [seen]
