"""layerzoo-seqplug: sequence-only layers and built-in name clashes (entry point ``seqplug``).

``causal_mean`` and ``last_token`` take ``[B, T, C]`` only; ``gelu`` and the preset ``mlp``
reuse built-in names, so they are reachable only as ``seqplug:gelu`` / ``seqplug:mlp``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from zoo import LayerType, NoParams, ShapeError, hookimpl, param

__all__ = ["CAUSAL_MEAN", "LAST_TOKEN", "GELU", "CausalMean", "LastToken", "TanhGelu"]


def _sequence(in_shape, params, place):
    if len(in_shape) != 2:
        raise ShapeError(f"expects a sequence [B, T, C], got [B, {', '.join(map(str, in_shape))}]")
    return in_shape


def _last(in_shape, params, place):
    return _sequence(in_shape, params, place)[1:]


class CausalMean(nn.Module):
    """Position t sees the mean of positions 0..t (causal), times a learned per-channel scale."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = torch.arange(1, x.shape[1] + 1, dtype=x.dtype, device=x.device)  # (T,)
        return x.cumsum(dim=1) / steps[:, None] * self.scale  # (B, T, C)


class LastToken(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1, :]  # (B, T, C) -> (B, C)


@dataclass(frozen=True)
class GeluParams:
    slope: float = param(1.0, "multiplies x inside the tanh approximation", min=0.0, max=10.0)


class TanhGelu(nn.Module):
    def __init__(self, slope: float) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = math.sqrt(2.0 / math.pi) * self.slope * (x + 0.044715 * x.pow(3))
        return 0.5 * x * (1.0 + torch.tanh(inner))


CAUSAL_MEAN = LayerType(
    name="causal_mean", doc="Running mean over time, learned scale: [B, T, C] only.",
    shape=_sequence, build=lambda s, p, pl: CausalMean(s[-1]))

LAST_TOKEN = LayerType(
    name="last_token", doc="The last time step: [B, T, C] -> [B, C].", params=NoParams,
    shape=_last, build=lambda s, p, pl: LastToken())

GELU = LayerType(
    name="gelu", doc="tanh-approximated GELU with a slope (clashes with the built-in gelu)",
    params=GeluParams, shape=lambda s, p, pl: s, gain=math.sqrt(2.0),
    build=lambda s, p, pl: TanhGelu(p.slope))

SEQ_MEAN = {
    "description": "embedding, causal mean, last token (layerzoo-seqplug)",
    "model": {"context": 4, "layers": [{"type": "embedding", "dim": 12}, "causal_mean",
                                        {"type": "linear", "out": 32}, "gelu", "last_token",
                                        "linear"]},
    "train": {"steps": 2000, "batch_size": 64},
}

MLP = {
    "description": "an MLP with this plugin's gelu (a built-in preset name)",
    "model": {"context": 3, "layers": [{"type": "embedding", "dim": 8}, "flatten",
                                        {"type": "linear", "out": 64}, "gelu", "linear"]},
}


@hookimpl
def layerzoo_register_layers(register):
    for layer in (CAUSAL_MEAN, LAST_TOKEN, GELU):
        register(layer)


@hookimpl
def layerzoo_register_presets(register):
    register("seq-mean", SEQ_MEAN, SEQ_MEAN["description"])
    register("mlp", MLP, MLP["description"])
