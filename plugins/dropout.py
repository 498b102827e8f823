"""The ``dropout`` layer: zero features at random while training; identity in eval mode."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from zoo import LayerType, hookimpl, param


@dataclass(frozen=True)
class DropoutParams:
    p: float = param(0.1, "probability of zeroing each feature while training", min=0.0,
                     max=1.0)


DROPOUT = LayerType(
    name="dropout",
    doc="Zero each feature with probability p in training mode (scaling the rest by 1/(1-p)).",
    params=DropoutParams,
    shape=lambda s, p, pl: s,
    build=lambda s, p, pl: nn.Dropout(p.p),
    causal=True, incremental="position",  # position by position
)


@hookimpl
def layerzoo_register_layers(register):
    register(DROPOUT)
