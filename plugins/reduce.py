"""Reductions over time, ``[B, T, C] -> [B, C]``: ``last`` (the final position) and ``mean``.

A causal sequence model reads its prediction off the last position, whose attention already saw
the whole context; ``mean`` pools every position instead.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo import LayerType, NoParams, Place, Shape, ShapeError, hookimpl


class Last(nn.Module):
    """The final time step of a sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]  # (B, T, C) -> (B, C)


class Mean(nn.Module):
    """The average over time of a sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)  # (B, T, C) -> (B, C)


def _shape(in_shape: Shape, params: NoParams, place: Place) -> Shape:
    if len(in_shape) != 2:
        raise ShapeError(f"reduces over time, so it expects a sequence [B, T, C], got "
                         f"features of shape {in_shape}")
    return in_shape[1:]


LAST = LayerType(name="last", doc="The last position of a sequence: [B, T, C] -> [B, C].",
                 params=NoParams, shape=_shape, build=lambda s, p, pl: Last(), reduction=True)
MEAN = LayerType(name="mean", doc="The mean over positions: [B, T, C] -> [B, C].",
                 params=NoParams, shape=_shape, build=lambda s, p, pl: Mean(), reduction=True)


@hookimpl
def layerzoo_register_layers(register):
    register(LAST)
    register(MEAN)
