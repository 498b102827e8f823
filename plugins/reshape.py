"""Reshaping layers: ``flatten`` and the hierarchical model's ``flatten_consecutive``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from zoo import LayerType, NoParams, Shape, ShapeError, hookimpl, param


class FlattenConsecutive(nn.Module):
    """Merge n consecutive positions: [B, T, C] -> [B, T/n, C*n]; a time axis of 1 is dropped."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        x = x.reshape(b, t // self.n, c * self.n)  # (B, T/n, C*n)
        return x.squeeze(1) if t == self.n else x  # (B, C*n) when one position is left

    def extra_repr(self) -> str:
        return f"n={self.n}"


@dataclass(frozen=True)
class ConsecutiveParams:
    n: int = param(2, "how many consecutive positions to merge", min=1)


def _consecutive_shape(in_shape: Shape, params: ConsecutiveParams, place) -> Shape:
    if len(in_shape) != 2:
        raise ShapeError(f"expects a sequence [B, T, C], got features of shape {in_shape}")
    t, c = in_shape
    if t % params.n:
        raise ShapeError(f"cannot merge {params.n} consecutive positions of a sequence of "
                         f"length {t}: {t} is not a multiple of {params.n}")
    return (c * params.n,) if t == params.n else (t // params.n, c * params.n)


FLATTEN = LayerType(
    name="flatten",
    doc="Concatenate all positions: [B, T, C] -> [B, T*C].",
    params=NoParams,
    shape=lambda s, p, pl: (math.prod(s),),
    build=lambda s, p, pl: nn.Flatten(1),
    reduction=True,
)

FLATTEN_CONSECUTIVE = LayerType(
    name="flatten_consecutive",
    doc="Merge n consecutive positions: [B, T, C] -> [B, T/n, C*n] (the time axis goes at 1).",
    params=ConsecutiveParams,
    shape=_consecutive_shape,
    build=lambda s, p, pl: FlattenConsecutive(p.n),
)


@hookimpl
def layerzoo_register_layers(register):
    register(FLATTEN)
    register(FLATTEN_CONSECUTIVE)
