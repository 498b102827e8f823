"""The pluggy hooks a layerzoo plugin may implement (project name ``layerzoo``).

Collector style: the host passes ``register`` and owns the tables, so one duplicate policy
holds for built-in and third-party plugins alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("layerzoo")
hookimpl = pluggy.HookimplMarker("layerzoo")


@hookspec
def layerzoo_register_layers(register: Callable[[Any], None]) -> None:
    """Register layer types: call ``register(layer_type)`` once per ``zoo.LayerType``."""


@hookspec
def layerzoo_register_presets(register: Callable[..., None]) -> None:
    """Register named model specs: ``register(name, spec_dict, description="")``."""
