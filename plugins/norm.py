"""Normalisation layers: ``batchnorm`` (over batch, and time for [B, T, C]) and ``layernorm``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo import LayerType, Place, Shape, ShapeError, hookimpl, kernels, param


def _thread_invariant(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether to run the training kernels on one thread, so they do not depend on the count.

    torch's CPU kernels for batch_norm (forward and backward) and for layer_norm's weight
    gradients split their reductions across threads, so their results change in the last bits
    with the thread count. Run on one thread they give the same bits whatever count the rest
    of the step uses, which lets ``zoo train`` change the count mid-run without changing a
    bit (zoo.threads). Evaluation, and so the exported graph, runs as before; on a GPU, and
    for SyncBatchNorm, torch's own path runs.
    """
    return module.training and x.is_cpu and not isinstance(module, nn.SyncBatchNorm)


class _BatchNormOneThread(torch.autograd.Function):
    """torch's training batch_norm of (N, C), forward and backward, each on one thread."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, factor, eps):
        with kernels.one_thread():  # also updates the running statistics, as nn.BatchNorm1d does
            y, mean, invstd = torch.native_batch_norm(x, weight, bias, running_mean,
                                                      running_var, True, factor, eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, invstd = ctx.saved_tensors
        wanted = [True, weight is not None, weight is not None]
        with kernels.one_thread():
            dx, dweight, dbias = torch.ops.aten.native_batch_norm_backward(
                grad.contiguous(), x, weight, None, None, mean, invstd, True, ctx.eps, wanted)
        return dx, dweight, dbias, None, None, None, None


class SequenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the last axis that also takes [B, T, C], normalising over B and T.

    As in the hierarchical makemore model: statistics over every (batch, time) position,
    computed by viewing the input as [B*T, C], which is what BatchNorm1d on [B, C, T] does.
    Training on the CPU runs torch's kernels on one thread (see _thread_invariant).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _thread_invariant(self, x):  # the graph export folds into the Gemm before it
            if x.dim() == 3:
                b, t, c = x.shape
                return super().forward(x.reshape(b * t, c)).view(b, t, c)  # (B, T, C)
            return super().forward(x)  # (B, C)
        flat = x.reshape(-1, x.shape[-1])  # (B, C) or (B*T, C)
        if flat.shape[0] < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got "
                             f"input size {list(flat.shape)}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)  # as nn.BatchNorm1d counts
            if self.momentum is None:  # a cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        y = _BatchNormOneThread.apply(flat, self.weight, self.bias, self.running_mean,
                                      self.running_var, factor, self.eps)
        return y.view(x.shape)  # (B, C) or (B, T, C)


class _LayerNormOneThread(torch.autograd.Function):
    """torch's layer_norm over the last axis, its backward on one thread."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        shape = (x.shape[-1],)
        y, mean, rstd = torch.native_layer_norm(x, shape, weight, bias, eps)  # row by row
        ctx.save_for_backward(x, mean, rstd, weight, bias)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, mean, rstd, weight, bias = ctx.saved_tensors
        wanted = [True, weight is not None, bias is not None]
        with kernels.one_thread():
            dx, dweight, dbias = torch.ops.aten.native_layer_norm_backward(
                grad.contiguous(), x, (x.shape[-1],), mean, rstd, weight, bias, wanted)
        return dx, dweight, dbias, None


class LastAxisLayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last axis; training on the CPU as _thread_invariant says."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _thread_invariant(self, x):
            return super().forward(x)
        return _LayerNormOneThread.apply(x, self.weight, self.bias, self.eps)


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
