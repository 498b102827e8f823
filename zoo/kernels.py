"""Thread-stable CPU kernels for layer plugins: results that do not depend on torch's thread count.

torch's CPU kernels for some reductions split the sum across threads, so the last bits of the
result change with the thread count; ``zoo train`` moves the count with the machine's load and
promises the same weights whatever it chose (zoo.threads). A layer whose gradient is such a
reduction runs it through these, and the conformance kit's threads check passes:

    from zoo import kernels
    y = kernels.linear(x, self.weight, self.bias)  # on the CPU in training; else F.linear

Evaluation and the exported graph are torch's own ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

__all__ = ["one_thread", "linear"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed torch ops on one intra-op thread, then restore the count."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Linear(torch.autograd.Function):
    """F.linear whose weight and bias gradients, sums over every row, run on one thread."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        dx = grad @ weight  # (..., in): a sum over the few outputs, not over rows
        with one_thread():
            dweight = rows.T @ x.reshape(-1, x.shape[-1])  # (out, in)
            dbias = rows.sum(0) if ctx.has_bias else None  # (out,)
        return dx, dweight, dbias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear``; while gradients are recorded on the CPU, with thread-stable gradients
    (MKL splits a weight gradient's sum over a large batch across threads for small layers)."""
    if x.is_cpu and torch.is_grad_enabled() and weight.requires_grad:
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)
