"""A plugin whose layer hook raises before registering anything."""

from zoo import hookimpl


@hookimpl
def layerzoo_register_layers(register):
    raise ValueError("the layer table is corrupt")
