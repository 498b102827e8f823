"""``layerzoo_extra::hardswishish``: a torch custom op with a fake kernel and its own backward.

Standard ONNX export cannot see inside a custom op; the layer declaration supplies the
translation (see ``layerzoo_extra.onnx``).
"""

from __future__ import annotations

import torch


@torch.library.custom_op("layerzoo_extra::hardswishish", mutates_args=())
def hardswishish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


@hardswishish.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output) -> None:
    (x,) = inputs
    ctx.save_for_backward(x)


def _backward(ctx, grad: torch.Tensor) -> torch.Tensor:
    (x,) = ctx.saved_tensors
    # d/dx x*clamp(x+3, 0, 6)/6: 0 below -3, (2x + 3)/6 between, 1 above 3
    slope = torch.where(x < -3.0, torch.zeros_like(x),
                        torch.where(x > 3.0, torch.ones_like(x), (2.0 * x + 3.0) / 6.0))
    return grad * slope


hardswishish.register_autograd(_backward, setup_context=_setup_context)
