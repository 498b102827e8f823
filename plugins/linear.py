"""The ``linear`` layer: an affine map over the last axis, with initialisation as data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from torch import nn

from zoo import LayerType, Place, Shape, ShapeError, SpecError, hookimpl, param

OUTPUT_SCALE = 0.1  # the last linear starts small: logits near uniform, loss near ln(vocab)


@dataclass(frozen=True)
class LinearParams:
    out: int | None = param(None, "output features; the last linear defaults to the vocabulary "
                                  "size", min=1)
    bias: bool = param(True, "learn an additive bias (initialised to zero)")
    init: Literal["kaiming", "xavier", "normal", "zeros"] = param(
        "kaiming", "weights ~ N(0, s): s = gain/sqrt(fan_in), gain*sqrt(2/(fan_in+fan_out)), "
                   "gain, or all zeros")
    gain: float | Literal["auto"] = param(
        "auto", "init gain; 'auto' takes the gain of the next nonlinearity (5/3 for tanh)",
        min=0.0)
    scale: float | None = param(None, "multiply the initial weights; default 0.1 on the last "
                                      "linear, 1 elsewhere", min=0.0)


def _out(params: LinearParams, place: Place) -> int:
    if params.out is not None:
        return params.out
    if place.last_of_type:
        return place.vocab_size
    raise SpecError("key 'out' is missing: expected an integer >= 1 (only the last linear "
                    "defaults to the vocabulary size)")


def _shape(in_shape: Shape, params: LinearParams, place: Place) -> Shape:
    if not in_shape:
        raise ShapeError("expects features with at least one axis")
    return (*in_shape[:-1], _out(params, place))


def _build(in_shape: Shape, params: LinearParams, place: Place) -> nn.Linear:
    fan_in, fan_out = in_shape[-1], _out(params, place)
    layer = nn.Linear(fan_in, fan_out, bias=params.bias)
    gain = place.next_gain if params.gain == "auto" else params.gain
    scale = params.scale if params.scale is not None else (
        OUTPUT_SCALE if place.last_of_type else 1.0)
    std = gain * scale * {"kaiming": 1.0 / math.sqrt(fan_in),
                          "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
                          "normal": 1.0, "zeros": 0.0}[params.init]
    if std > 0:
        nn.init.normal_(layer.weight, 0.0, std)
    else:
        nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


LINEAR = LayerType(
    name="linear",
    doc="Affine map over the last axis, y = x W^T + b (works on [B, C] and [B, T, C]).",
    params=LinearParams,
    shape=_shape,
    build=_build,
    gain=1.0,  # a linear map: the gain scan of an earlier linear stops here
    causal=True, incremental="position",  # position by position
)


@hookimpl
def layerzoo_register_layers(register):
    register(LINEAR)
