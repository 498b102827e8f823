"""The ``rmsnorm`` layer: root-mean-square normalisation over the last axis (no mean removed).

Written out rather than ``nn.RMSNorm`` so it exports to plain ONNX ops on every supported
opset; ``x * rsqrt(mean(x^2) + eps) * weight``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo import LayerType, hookimpl, param
from zoo.plugins.norm import features_shape


class RMSNorm(nn.Module):
    """x / sqrt(mean(x^2) + eps) over the last axis, times a learned per-feature scale."""

    def __init__(self, dim: int, eps: float, affine: bool) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., C)
        return y * self.weight if self.weight is not None else y  # (..., C)


@dataclass(frozen=True)
class RMSNormParams:
    eps: float = param(1e-5, "added to the mean square for numerical stability", min=0.0)
    affine: bool = param(True, "learn a scale per feature (initialised to 1)")


RMSNORM = LayerType(
    name="rmsnorm",
    doc="Root-mean-square normalisation over the last axis with a learned scale "
        "([B, C] or [B, T, C]).",
    params=RMSNormParams,
    shape=features_shape,  # the same inputs as batchnorm and layernorm
    build=lambda s, p, pl: RMSNorm(s[-1], p.eps, p.affine),
    causal=True, incremental="position",  # position by position
)


@hookimpl
def layerzoo_register_layers(register):
    register(RMSNORM)
