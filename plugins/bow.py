"""The ``causal_bow`` layer: makemore.py's causal bag of words, each position the uniform
average of the inputs at it and before it, ``y_t = (x_0 + ... + x_t) / (t + 1)``.

``[B, T, C] -> [B, T, C]``, no parameters. The full forward is a running sum; the step form
carries the sum so far.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo import LayerType, NoParams, Place, Shape, ShapeError, hookimpl


class CausalBoW(nn.Module):
    """The mean of every position up to and including t."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)  # (T,)
        return x.cumsum(dim=1) / counts[:, None]  # (B, T, C)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {"sum": torch.zeros(batch, self.dim)}  # (B, C)

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor],
             position: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = state["sum"] + x  # (B, C)
        return total / (position + 1).to(x.dtype), {"sum": total}


def _shape(in_shape: Shape, params: NoParams, place: Place) -> Shape:
    if len(in_shape) != 2:
        raise ShapeError(f"expects a sequence [B, T, C], got features of shape {in_shape}")
    return in_shape


CAUSAL_BOW = LayerType(
    name="causal_bow",
    doc="Causal bag of words: each position the average of it and every earlier one: "
        "[B, T, C] -> [B, T, C].",
    params=NoParams,
    shape=_shape,
    build=lambda s, p, pl: CausalBoW(s[1]),
    causal=True,
    incremental="state",  # the running sum
)


@hookimpl
def layerzoo_register_layers(register):
    register(CAUSAL_BOW)
