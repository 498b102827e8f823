"""The training recipe: a spec's ``[train]`` table, validated like a layer's parameters.

Kept free of torch so that specs can be checked (and fuzzed) without building anything.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Literal

from zoo.layer import ParamInfo, param


@dataclass(frozen=True)
class Recipe:
    """How to train: every field may be set in the spec's [train] table or on the CLI."""

    optimizer: Literal["adamw", "sgd"] = param("adamw", "the optimizer")
    lr: float = param(0.01, "peak learning rate", min=0.0)
    schedule: Literal["onecycle", "cosine", "step", "constant"] = param(
        "onecycle", "learning-rate schedule over the steps")
    steps: int = param(10_000, "optimizer steps (one batch each)", min=1)
    batch_size: int = param(256, "windows per batch", min=1)
    weight_decay: float = param(0.0, "decoupled weight decay (AdamW) or L2 (SGD)", min=0.0)
    momentum: float = param(0.0, "SGD momentum (0 = plain SGD, as in the lecture)", min=0.0,
                            max=1.0)
    warmup: float = param(0.3, "fraction of the steps spent rising to the peak (onecycle, "
                               "cosine)", min=0.0, max=1.0)
    decay_at: float = param(0.75, "step schedule: fraction of the steps after which the rate "
                                  "drops", min=0.0, max=1.0)
    decay: float = param(0.1, "step schedule: factor the rate drops by", min=0.0)
    eval_every: int = param(1000, "steps between validation-loss evaluations", min=1)
    seed: int = param(42, "seed of the split (42: the makemore lectures' split), the "
                          "initialisation and the batches", min=0)

    @classmethod
    def fields(cls) -> dict[str, ParamInfo]:
        """The declared fields by name (for validation, --set and docs)."""
        hints = typing.get_type_hints(cls)
        return {f.name: ParamInfo.from_field(f, hints[f.name]) for f in dataclasses.fields(cls)}

    def lr_at(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based); a pure function."""
        t = min(step / max(self.steps - 1, 1), 1.0)  # progress 0..1
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "step":
            return self.lr * (self.decay if t >= self.decay_at else 1.0)
        w = self.warmup
        if self.schedule == "cosine":  # linear warm-up, cosine decay to 1% of the peak
            if t < w:
                return self.lr * t / w
            u = (t - w) / max(1.0 - w, 1e-12)
            return self.lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * u)))
        # onecycle (as torch's OneCycleLR, cosine annealing): lr/25 -> lr -> lr/25e4
        start, end = self.lr / 25.0, self.lr / 25e4
        if t < w:
            return start + (self.lr - start) * 0.5 * (1.0 - math.cos(math.pi * t / w))
        u = (t - w) / max(1.0 - w, 1e-12)
        return end + (self.lr - end) * 0.5 * (1.0 + math.cos(math.pi * u))

