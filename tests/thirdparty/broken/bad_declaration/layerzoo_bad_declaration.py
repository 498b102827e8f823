"""A plugin whose layer declaration is invalid: not a snake_case name, an undocumented parameter."""

from dataclasses import dataclass

from torch import nn

from zoo import LayerType, hookimpl, param


@dataclass(frozen=True)
class Params:
    width: int = param(4)  # no doc


BAD = LayerType(name="BadLayer", params=Params, shape=lambda s, p, pl: s,
                build=lambda s, p, pl: nn.Identity())


@hookimpl
def layerzoo_register_layers(register):
    register(BAD)
