"""The ``position_embedding`` layer: a learned vector per position added to a sequence."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo import LayerType, Place, Shape, ShapeError, hookimpl, param


class PositionEmbedding(nn.Module):
    """Adds a learned table ``[T, C]`` to every sequence ``[B, T, C]``."""

    def __init__(self, length: int, dim: int, std: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(length, dim) * std)  # (T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight  # (B, T, C)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {}  # the position is all a step needs

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor],
             position: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return x + self.weight[position], state  # (B, C)


@dataclass(frozen=True)
class PositionParams:
    std: float = param(0.02, "standard deviation of the initial table (as in GPT-2)", min=0.0)


def _shape(in_shape: Shape, params: PositionParams, place: Place) -> Shape:
    if len(in_shape) != 2:
        raise ShapeError(f"expects a sequence [B, T, C], got features of shape {in_shape}")
    return in_shape


POSITION_EMBEDDING = LayerType(
    name="position_embedding",
    doc="Add a learned vector per position, a [T, C] table: [B, T, C] -> [B, T, C].",
    params=PositionParams,
    shape=_shape,
    build=lambda s, p, pl: PositionEmbedding(s[0], s[1], p.std),
    causal=True,
    incremental="state",  # stateless, but its step needs the position
)


@hookimpl
def layerzoo_register_layers(register):
    register(POSITION_EMBEDDING)
