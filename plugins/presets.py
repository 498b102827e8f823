"""The model zoo: named specs shipped as TOML files in ``presets/``, registered by a plugin."""

from __future__ import annotations

import importlib.resources
import tomllib

from zoo import hookimpl


@hookimpl
def layerzoo_register_presets(register):
    folder = importlib.resources.files(__package__) / "presets"
    for item in sorted(folder.iterdir(), key=lambda f: f.name):
        if item.name.endswith(".toml"):
            spec = tomllib.loads(item.read_text(encoding="utf-8"))
            register(item.name.removesuffix(".toml"), spec, spec.get("description", ""))
