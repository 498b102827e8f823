"""Whether the built model can train on the recipe's batch size, checked before the run
directory exists.

The recipe's own bounds (``zoo.recipe``) see numbers; some limits only show with the model: a
layer that normalises over the batch (BatchNorm) cannot train on a batch of one. The check runs
the model once on a throwaway copy, so nothing of the real model (weights, running statistics,
RNG) changes.
"""

from __future__ import annotations

import copy

import torch

from zoo.build import Model
from zoo.errors import SpecError, one_line

__all__ = ["check_batch_size"]


def check_batch_size(model: Model, batch_size: int, source: str | None = None) -> None:
    """SpecError (one line) if ``model`` cannot take a training step on ``batch_size`` rows."""
    if batch_size > 1:  # every layer takes a batch of two or more
        return
    trial = copy.deepcopy(model).train()
    state = torch.get_rng_state()  # dropout draws: the real run's numbers stay the same
    try:
        with torch.no_grad():
            trial(torch.zeros((batch_size, model.context), dtype=torch.int64))  # (B, T)
    except Exception as e:  # a layer's own refusal, e.g. "Expected more than 1 value ..."
        raise SpecError(f"train.batch_size = {batch_size}: this model cannot train on it "
                        f"({one_line(e, first=True)}); layers that normalise "
                        "over the batch need a batch of 2 or more", source) from None
    finally:
        torch.set_rng_state(state)
