"""Elementwise nonlinearities: ``tanh`` and its variants.

Each declares the init gain a preceding linear should use (``torch.nn.init.calculate_gain``
where torch defines one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from zoo import LayerType, NoParams, SpecError, hookimpl, kernels, param


@dataclass(frozen=True)
class LeakyParams:
    negative_slope: float = param(0.01, "slope for negative inputs", min=0.0)


@dataclass(frozen=True)
class GeluParams:
    approximate: Literal["none", "tanh"] = param("none", "exact GELU or its tanh approximation")


@dataclass(frozen=True)
class HardtanhParams:
    min_val: float = param(-1.0, "lower clamp")
    max_val: float = param(1.0, "upper clamp")


def _same(in_shape, params, place):
    return in_shape


def _clamp_shape(in_shape, params, place):
    if params.min_val >= params.max_val:
        raise SpecError(f"key 'min_val': expected less than max_val ({params.max_val:g}), "
                        f"got {params.min_val:g}")
    return in_shape


class Tanh(nn.Tanh):
    """nn.Tanh, trained on the CPU in zoo.kernels' faster form; evaluation, and so the
    exported graph (one Tanh node), is torch's tanh."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.tanh(x, training=self.training)


def _simple(name: str, module: type[nn.Module], gain: float, doc: str,
            **declared: Any) -> LayerType:
    return LayerType(name=name, doc=doc, shape=_same, build=lambda s, p, pl: module(),
                     gain=gain, params=NoParams, causal=True, incremental="position", **declared)


# saturated units, as the lecture counts them: |tanh| > 0.97, where its gradient (1 - y^2) is
# below 6% of its peak; a sigmoid's equivalent (sigmoid(x) = (tanh(x/2) + 1) / 2) is 0.015
def _tanh_saturated(y: torch.Tensor, params: Any) -> torch.Tensor:
    return y.abs() > 0.97


def _sigmoid_saturated(y: torch.Tensor, params: Any) -> torch.Tensor:
    return (y < 0.015) | (y > 0.985)


def _clamped(y: torch.Tensor, params: Any) -> torch.Tensor:
    return (y <= params.min_val) | (y >= params.max_val)  # at a limit: no gradient


# every activation acts on each position alone: causal, and its step is its forward
ACTIVATIONS = (
    _simple("tanh", Tanh, 5.0 / 3.0, "tanh(x); init gain 5/3", saturated=_tanh_saturated),
    _simple("relu", nn.ReLU, math.sqrt(2.0), "max(x, 0); init gain sqrt(2)", dead_units=True),
    _simple("sigmoid", nn.Sigmoid, 1.0, "1 / (1 + exp(-x)); init gain 1",
            saturated=_sigmoid_saturated),
    _simple("identity", nn.Identity, 1.0, "x unchanged; init gain 1"),
    LayerType(name="leaky_relu", doc="max(x, 0) + slope * min(x, 0); init gain "
                                     "sqrt(2 / (1 + slope^2)) for the default slope",
              params=LeakyParams, shape=_same, gain=nn.init.calculate_gain("leaky_relu", 0.01),
              build=lambda s, p, pl: nn.LeakyReLU(p.negative_slope),
              causal=True, incremental="position"),
    LayerType(name="gelu", doc="x * Phi(x); init gain sqrt(2), as for relu", params=GeluParams,
              shape=_same, gain=math.sqrt(2.0),
              build=lambda s, p, pl: nn.GELU(approximate=p.approximate),
              causal=True, incremental="position"),
    LayerType(name="hardtanh", doc="clamp(x, min_val, max_val); init gain 5/3, as for tanh",
              params=HardtanhParams, shape=_clamp_shape, gain=5.0 / 3.0,
              build=lambda s, p, pl: nn.Hardtanh(p.min_val, p.max_val),
              causal=True, incremental="position", saturated=_clamped),
)


@hookimpl
def layerzoo_register_layers(register):
    for layer in ACTIVATIONS:
        register(layer)
