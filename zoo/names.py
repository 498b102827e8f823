"""How layers and presets are named: ``PLUGIN:NAME``, and the layer names inside a spec.

A bare ``NAME`` is what users write when it is unambiguous; ``PLUGIN:NAME`` always works and is
what a run records, so the run rebuilds the same layers whatever is installed later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["qualified", "map_layer_types"]


def qualified(plugin: str, name: str) -> str:
    """``PLUGIN:NAME``, the name that stays unambiguous whatever else is installed."""
    return f"{plugin}:{name}"


def map_layer_types(layers: Any, rename: Callable[[str], str]) -> Any:
    """A copy of a spec's layer list with every layer type passed through ``rename``.

    Walks blocks of any kind (``{repeat = N, layers = [...]}``, ``{residual = [...]}``): a
    table without ``type`` is a block, and every list inside it holds entries. Anything that
    is not a well-formed entry is kept as it is, for validation to report.
    """
    if not isinstance(layers, list):
        return layers
    out: list[Any] = []
    for item in layers:
        if isinstance(item, str):
            out.append(rename(item))
        elif isinstance(item, dict) and "type" in item:
            kind = item["type"]
            out.append({**item, "type": rename(kind) if isinstance(kind, str) else kind})
        elif isinstance(item, dict):
            out.append({k: map_layer_types(v, rename) if isinstance(v, list) else v
                        for k, v in item.items()})
        else:
            out.append(item)
    return out
