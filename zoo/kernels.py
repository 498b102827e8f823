"""Fast and thread-stable CPU kernels for layer plugins: torch's ops, trained faster, or in bits
that do not depend on torch's thread count.

Some of torch's CPU kernels split a sum across threads, so the last bits of their result change
with the thread count. ``zoo train`` moves the count with the machine's load and promises the
same weights whatever it chose (zoo.threads); a model whose gradients differ between one
thread and two trains on one. A layer built from these passes that check, and the
conformance kit's threads check:

    from zoo import kernels

    y = kernels.tanh(x, training=self.training)                      # torch.tanh, faster
    y = kernels.embedding(ids, self.weight, training=self.training)  # F.embedding, faster
    y = kernels.linear(x, self.weight, self.bias, training=self.training)  # F.linear
    conv = kernels.thread_stable(nn.Conv1d(8, 8, 3))                 # any module or forward

Each takes its training form only while training on the CPU (``training_on_cpu``); evaluation,
a GPU, and so the exported graph, get torch's own ops.
"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["training_on_cpu", "one_thread", "tanh", "embedding", "linear", "thread_stable"]

Target = TypeVar("Target", bound=Callable[..., Any])


def training_on_cpu(x: torch.Tensor, training: bool = True) -> bool:
    """Whether a kernel here takes its training form: a training pass (``training``, a module's
    ``self.training``) over a tensor on the CPU."""
    return training and x.is_cpu


class one_thread(contextlib.AbstractContextManager):  # a class: cheaper than a generator
    """Run the enclosed torch ops on one intra-op thread, then restore the count."""

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        if self.threads != 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self.threads != 1:
            torch.set_num_threads(self.threads)


# -- tanh -----------------------------------------------------------------------------------

class _TanhBySigmoid(torch.autograd.Function):
    """tanh(x) = 2 sigmoid(2x) - 1, with tanh's own backward (1 - y^2).

    On the CPU torch's tanh kernel is 3-4x slower than its sigmoid (1.4-1.9 ms against
    0.45 ms for 2,048 x 200 floats on one AVX2 core); this form is within 2.4e-7 of it.
    """

    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: torch.Tensor, *, training: bool = True) -> torch.Tensor:
    """``torch.tanh``; while training on the CPU in float32, computed as 2 sigmoid(2x) - 1
    (within 2.4e-7 of it, 3-4x faster). Pass ``training=self.training`` so that evaluation and
    the exported graph (one Tanh node) are torch's tanh."""
    if training_on_cpu(x, training) and x.dtype == torch.float32:
        return _TanhBySigmoid.apply(x)
    return torch.tanh(x)


# -- embedding ------------------------------------------------------------------------------

class _LookupAddedBack(torch.autograd.Function):
    """F.embedding whose weight gradient is ``index_add_`` of the output gradient.

    On the CPU torch's embedding backward costs 2.5-4x more than index_add_ for the presets'
    shapes (0.35 ms against 0.14 ms for 1,024 x 3 ids into a 27 x 10 table), and index_add_
    adds the rows one id after another, so its result does not depend on the thread count.
    """

    @staticmethod
    def forward(ctx, ids, weight):
        ctx.save_for_backward(ids)
        ctx.table = weight.shape
        return F.embedding(ids, weight)  # (..., C)

    @staticmethod
    def backward(ctx, grad):
        (ids,) = ctx.saved_tensors
        rows = grad.reshape(-1, ctx.table[1])  # (N, C)
        return None, grad.new_zeros(ctx.table).index_add_(0, ids.reshape(-1), rows)


def embedding(ids: torch.Tensor, weight: torch.Tensor, *, training: bool = True) -> torch.Tensor:
    """``F.embedding(ids, weight)``; while training on the CPU, the weight gradient is summed
    id after id (faster than torch's, and thread-stable). Pass ``training=self.training``."""
    if training_on_cpu(weight, training) and torch.is_grad_enabled() and weight.requires_grad:
        return _LookupAddedBack.apply(ids, weight)
    return F.embedding(ids, weight)


# -- linear ---------------------------------------------------------------------------------

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


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *,
           training: bool = True) -> torch.Tensor:
    """``F.linear``; while training on the CPU, with thread-stable gradients (MKL splits a
    weight gradient's sum over a large batch across threads for small layers)."""
    if training_on_cpu(x, training) and torch.is_grad_enabled() and weight.requires_grad:
        return _Linear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


# -- any module -----------------------------------------------------------------------------

_RESTORE: list[int] = []  # the thread counts to go back to, one per backward step in flight
# backward steps that only view or move elements, so have nothing to split across threads
_MOVES = frozenset({"ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0",
                    "TransposeBackward0", "TBackward0", "PermuteBackward0", "UnsqueezeBackward0",
                    "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2"})


def _before(grad_outputs: Any) -> None:
    """A backward step's pre-hook: one thread."""
    _RESTORE.append(torch.get_num_threads())
    torch.set_num_threads(1)


def _after(grad_inputs: Any, grad_outputs: Any) -> None:
    """A backward step's hook: the count it found."""
    if _RESTORE:
        torch.set_num_threads(_RESTORE.pop())


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a forward's arguments or result: tensors, in tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (tuple, list)):
        return [t for item in value for t in _tensors(item)]
    return []


def _one_thread_backward(outputs: list[torch.Tensor], inputs: list[torch.Tensor]) -> None:
    """Hook every backward step recorded between ``inputs`` and ``outputs`` to run on one
    thread: the step's thread count is set before it and restored after it."""
    stops = [t.grad_fn for t in inputs]
    todo = [t.grad_fn for t in outputs]
    seen = set()
    while todo:
        node = todo.pop()
        if node is None or node in stops or node in seen:
            continue
        seen.add(node)
        following = node.next_functions  # none: a leaf's gradient accumulator, which only adds
        if following and type(node).__name__ not in _MOVES:
            node.register_prehook(_before)
            node.register_hook(_after)
        todo.extend(next_node for next_node, _ in following)


def _stable(forward: Target, backward_only: bool) -> Target:
    """``forward(module, *args, **kwargs)`` whose training pass on the CPU runs on one thread."""

    @functools.wraps(forward)
    def stable(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        inputs = _tensors([args, kwargs])
        if not inputs or not training_on_cpu(inputs[0], module.training):
            return forward(module, *args, **kwargs)
        if _RESTORE:  # a backward step raised, so its hook never restored the count
            torch.set_num_threads(_RESTORE[0])
            _RESTORE.clear()
        if backward_only:
            out = forward(module, *args, **kwargs)
        else:
            with one_thread():
                out = forward(module, *args, **kwargs)
        if torch.is_grad_enabled():
            _one_thread_backward(_tensors(out), inputs)
        return out

    stable.thread_stable = True  # type: ignore[attr-defined]
    return stable  # type: ignore[return-value]


def thread_stable(target: Target, *, backward_only: bool = False) -> Target:
    """Make a module, or a module's ``forward``, give the same bits on any thread count.

    While the module trains on the CPU, its forward (running statistics included) runs on one
    thread, and so does each backward step it recorded, so a kernel that splits a reduction
    across threads (batch norm, layer norm's weight gradient, a convolution's or a small linear
    map's weight gradient) sums in one order whatever the count. torch's own forward and
    backward of every op run, unchanged; in evaluation, on a GPU, and so in the exported graph,
    ``forward`` runs as it is. ``backward_only=True`` keeps the forward on every thread, for
    one that is thread-stable as it is (layer norm normalises each row on one thread).

    ``thread_stable(module)`` returns the module itself with this forward (its class,
    parameter names, state dict and copies are unchanged); ``thread_stable(Cls.forward)``, or
    ``@thread_stable`` on a ``def forward(self, ...)``, gives a forward for a class. The
    forward's tensor arguments (also in tuples, lists and dicts) are its inputs.
    A backward step that raises leaves torch on one thread until the next thread-stable
    forward starts. Cost: the module's own kernels lose the other threads, and the wrapper and
    its hooks take some 10-20 us a call.
    """
    if isinstance(target, nn.Module):
        if not getattr(target.forward, "thread_stable", False):
            target.forward = types.MethodType(_stable(type(target).forward, backward_only),
                                              target)
        return target
    if getattr(target, "thread_stable", False):
        return target
    return _stable(target, backward_only)
