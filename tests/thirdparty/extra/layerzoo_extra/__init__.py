"""layerzoo-extra: a third-party layerzoo plugin (entry point ``layerzoo = extra``).

Adds ``swish``, ``rmsnorm`` and ``hardswishish`` (a custom op that brings its own ONNX
translation), and the preset ``extra-mlp`` built from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from layerzoo_extra.ops import hardswishish
from zoo import LayerType, NoParams, ShapeError, hookimpl, param

__all__ = ["SWISH", "RMSNORM", "HARDSWISHISH", "RMSNorm", "Swish", "HardSwishish"]


@dataclass(frozen=True)
class SwishParams:
    beta: float = param(1.0, "slope inside the sigmoid: x * sigmoid(beta * x)", min=0.0)


@dataclass(frozen=True)
class RMSNormParams:
    eps: float = param(1e-6, "added to the mean square for numerical stability", min=0.0)


class Swish(nn.Module):
    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) * weight, over the last axis ([B, C] or [B, T, C])."""

    def __init__(self, features: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rms = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        return x * rms * self.weight


class HardSwishish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hardswishish(x)


def _features(in_shape, params, place):
    if len(in_shape) not in (1, 2):
        raise ShapeError(f"expects features [B, C] or [B, T, C], got {in_shape}")
    return in_shape


def _onnx_table() -> dict[Any, Any]:
    # imported on demand: onnxscript is only needed when exporting
    from layerzoo_extra.onnx import hardswishish_onnx

    return {torch.ops.layerzoo_extra.hardswishish.default: hardswishish_onnx}


SWISH = LayerType(
    name="swish", doc="x * sigmoid(beta * x) (SiLU for beta = 1); init gain sqrt(2)",
    params=SwishParams, shape=lambda s, p, pl: s, gain=math.sqrt(2.0),
    build=lambda s, p, pl: Swish(p.beta))

RMSNORM = LayerType(
    name="rmsnorm", doc="Root-mean-square normalisation over the last axis, learned scale.",
    params=RMSNormParams, shape=_features, build=lambda s, p, pl: RMSNorm(s[-1], p.eps))

HARDSWISHISH = LayerType(
    name="hardswishish", doc="x * clamp(x + 3, 0, 6) / 6 as a custom op; init gain sqrt(2)",
    params=NoParams, shape=lambda s, p, pl: s, gain=math.sqrt(2.0),
    build=lambda s, p, pl: HardSwishish(), onnx_translation=_onnx_table)

EXTRA_MLP = {
    "description": "MLP with RMSNorm and swish (layerzoo-extra; context 3)",
    "model": {"context": 3, "layers": [
        {"type": "embedding", "dim": 10}, "flatten",
        {"type": "linear", "out": 128, "bias": False}, "rmsnorm", "swish",
        {"type": "linear", "out": 64}, "hardswishish",
        "linear"]},
    "train": {"optimizer": "adamw", "lr": 0.01, "steps": 5000, "batch_size": 256},
}


@hookimpl
def layerzoo_register_layers(register):
    for layer in (SWISH, RMSNORM, HARDSWISHISH):
        register(layer)


@hookimpl
def layerzoo_register_presets(register):
    register("extra-mlp", EXTRA_MLP, EXTRA_MLP["description"])
