"""A plugin that registers fine, but its layer's build function raises."""

from zoo import LayerType, hookimpl


def _build(in_shape, params, place):
    raise RuntimeError("out of cheese")


EXPLODE = LayerType(name="explode", doc="always fails to build", shape=lambda s, p, pl: s,
                    build=_build)


@hookimpl
def layerzoo_register_layers(register):
    register(EXPLODE)
