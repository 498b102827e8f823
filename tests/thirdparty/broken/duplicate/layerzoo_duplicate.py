"""A plugin that registers 'tanh', a name the built-in activations plugin already has."""

from torch import nn

from zoo import LayerType, hookimpl

TANH = LayerType(name="tanh", doc="another tanh", shape=lambda s, p, pl: s,
                 build=lambda s, p, pl: nn.Tanh(), gain=1.0)


@hookimpl
def layerzoo_register_layers(register):
    register(TANH)
