"""layerzoo: a plugin-based zoo of PyTorch layers for character-level language models.

Light on import: the plugin-author API (``LayerType``, ``param``, ``hookimpl``, errors) needs
no torch; ``build_model`` and friends load torch when first touched, and the onnxruntime side
(``zoo.export.runtime``, ``zoo.sampling``) never does.
"""

from __future__ import annotations

import importlib
from typing import Any

from zoo.errors import (
    ArtifactError,
    DataError,
    PluginError,
    ShapeError,
    SpecError,
    TrainingError,
    ZooError,
)
from zoo.hookspecs import hookimpl
from zoo.layer import LayerType, NoParams, Place, Shape, param

PLUGIN_API = 1
"""The plugin API's version: raised only when a plugin written for it could stop working
(docs/plugins.md, "The plugin API and its compatibility policy"). Additions (a new LayerType
field with a default, a new hook) keep it."""

__all__ = [
    "PLUGIN_API",
    "ArtifactError",
    "DataError",
    "LayerType",
    "Model",
    "NoParams",
    "Place",
    "PluginError",
    "Shape",
    "ShapeError",
    "Spec",
    "SpecError",
    "TrainingError",
    "ZooError",
    "build_model",
    "get_registry",
    "hookimpl",
    "load_spec",
    "param",
]

_LAZY = {
    "Model": "zoo.build",
    "build_model": "zoo.build",
    "Spec": "zoo.spec",
    "load_spec": "zoo.spec",
    "get_registry": "zoo.registry",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
