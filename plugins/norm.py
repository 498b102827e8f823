"""Normalisation layers: ``batchnorm`` (over batch, and time for [B, T, C]) and ``layernorm``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo import LayerType, Place, Shape, ShapeError, hookimpl, kernels, param


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the last axis that also takes [B, T, C], normalising over B and T.

    As in the hierarchical makemore model: statistics over every (batch, time) position,
    computed by viewing the input as [B*T, C], which is what BatchNorm1d on [B, C, T] does.
    torch's batch norm splits its sums across threads: trained on the CPU, it runs on one
    (zoo.kernels.thread_stable), so its bits do not depend on the thread count. Evaluation
    uses the running statistics, which the graph export folds into the Gemm before it.
    """

    @kernels.thread_stable
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            b, t, c = x.shape
            return super().forward(x.reshape(b * t, c)).view(b, t, c)  # (B, T, C)
        return super().forward(x)  # (B, C)


class LastAxisLayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last axis. Its weight gradients are sums over every row, which
    torch splits across threads: trained on the CPU, its backward runs on one thread
    (zoo.kernels.thread_stable); the forward normalises each row on one thread already."""

    forward = kernels.thread_stable(nn.LayerNorm.forward, backward_only=True)


@dataclass(frozen=True)
class BatchNormParams:
    eps: float = param(1e-5, "added to the variance for numerical stability", min=0.0)
    momentum: float = param(0.1, "weight of each batch in the running statistics", min=0.0,
                            max=1.0)
    affine: bool = param(True, "learn a scale and a shift per feature")


@dataclass(frozen=True)
class LayerNormParams:
    eps: float = param(1e-5, "added to the variance for numerical stability", min=0.0)
    affine: bool = param(True, "learn a scale and a shift per feature")


def features_shape(in_shape: Shape, params: object, place: Place) -> Shape:
    """The shape function of a layer that normalises features [B, C] or [B, T, C] in place."""
    if len(in_shape) not in (1, 2):
        dims = ", ".join(map(str, in_shape))
        raise ShapeError(f"expects features [B, C] or [B, T, C], got [B, {dims}]")
    return in_shape


BATCHNORM = LayerType(
    name="batchnorm",
    doc="Batch normalisation over the batch (and time) axes; running statistics in eval mode.",
    params=BatchNormParams,
    shape=features_shape,
    build=lambda s, p, pl: SequenceBatchNorm(s[-1], eps=p.eps, momentum=p.momentum,
                                             affine=p.affine),
)

LAYERNORM = LayerType(
    name="layernorm",
    doc="Layer normalisation over the last axis.",
    params=LayerNormParams,
    shape=features_shape,
    build=lambda s, p, pl: LastAxisLayerNorm(s[-1], eps=p.eps, elementwise_affine=p.affine),
    causal=True, incremental="position",  # position by position
)


@hookimpl
def layerzoo_register_layers(register):
    register(BATCHNORM)
    register(LAYERNORM)
