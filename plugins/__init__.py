"""Built-in layer plugins (installed as ``zoo.plugins``).

Each module is an ordinary layerzoo plugin — a hookimpl and the layer types it registers —
loaded through the same path as a third-party package's entry point.
"""

DEFAULT_PLUGINS = (
    "zoo.plugins.embedding",
    "zoo.plugins.linear",
    "zoo.plugins.norm",
    "zoo.plugins.activations",
    "zoo.plugins.reshape",
    "zoo.plugins.dropout",
    "zoo.plugins.attention",
    "zoo.plugins.position",
    "zoo.plugins.rmsnorm",
    "zoo.plugins.reduce",
    "zoo.plugins.recurrent",
    "zoo.plugins.bow",
    "zoo.plugins.presets",
)
