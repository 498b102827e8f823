"""The layer registry: pluggy discovers built-in and third-party plugins the same way.

Built-in plugins are the modules named in ``zoo.plugins.DEFAULT_PLUGINS``; third-party ones
are found through the entry-point group ``layerzoo``. Every plugin is loaded and asked for its
layers and presets in isolation: one that fails is reported by name with the reason, and the
others still load (``LAYERZOO_STRICT_PLUGINS=1`` makes any failure an error).
``LAYERZOO_LOAD_PLUGINS=a,b`` loads only those third-party plugins; set but empty, none.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from zoo import hookspecs
from zoo.errors import PluginError, did_you_mean
from zoo.layer import LayerType, declaration_problems

__all__ = ["Registry", "PluginInfo", "PluginWarning", "Preset", "get_registry", "load_plugins",
           "reset_registry"]

ENTRY_POINT_GROUP = "layerzoo"
STRICT_ENV = "LAYERZOO_STRICT_PLUGINS"
ALLOW_ENV = "LAYERZOO_LOAD_PLUGINS"


@dataclass
class PluginInfo:
    """One plugin as ``zoo plugins`` shows it."""

    name: str
    version: str
    builtin: bool
    layers: list[str] = field(default_factory=list)
    presets: list[str] = field(default_factory=list)
    error: str | None = None  # why it failed, if it did
    skipped: bool = False  # left out by LAYERZOO_LOAD_PLUGINS


@dataclass(frozen=True)
class Preset:
    """A named model spec registered by a plugin."""

    name: str
    spec: dict[str, Any]
    description: str
    plugin: str


def _add_error(info: PluginInfo, message: str) -> None:
    """Record why a plugin failed, keeping earlier reasons (one plugin can fail twice)."""
    info.error = f"{info.error}; {message}" if info.error else message


def layerzoo_version() -> str:
    try:
        return importlib.metadata.version("layerzoo")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class Registry:
    """Layer types and presets collected from every plugin that loaded."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.layers: dict[str, LayerType] = {}
        self.presets: dict[str, Preset] = {}
        self.plugins: dict[str, PluginInfo] = {}
        self.conflicts: dict[str, list[str]] = {}  # "layer 'x'" -> plugins that claimed it
        self._pm = pluggy.PluginManager("layerzoo")
        self._pm.add_hookspecs(hookspecs)

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, *, strict: bool | None = None, allow: Iterable[str] | None = None,
             builtins: Iterable[str] | None = None) -> Registry:
        """Load the built-in plugins and the installed third-party ones.

        ``strict`` and ``allow`` default to ``LAYERZOO_STRICT_PLUGINS`` and
        ``LAYERZOO_LOAD_PLUGINS``. Raises PluginError in strict mode if any plugin failed.
        """
        from zoo.plugins import DEFAULT_PLUGINS

        if strict is None:
            strict = _env_flag(STRICT_ENV)
        if allow is None and ALLOW_ENV in os.environ:
            allow = [a.strip() for a in os.environ[ALLOW_ENV].split(",") if a.strip()]
        allowed = None if allow is None else set(allow)
        reg = cls(strict=strict)
        version = layerzoo_version()
        for module in DEFAULT_PLUGINS if builtins is None else builtins:
            short = module.rsplit(".", 1)[-1]
            reg._add(short, version, True, lambda m=module: importlib.import_module(m))
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            ep_version = ep.dist.version if ep.dist is not None else "unknown"
            if allowed is not None and ep.name not in allowed:
                reg.plugins[ep.name] = PluginInfo(ep.name, ep_version, False, skipped=True)
                continue
            reg._add(ep.name, ep_version, False, ep.load)
        reg._collect()
        if strict and reg.problems():
            raise PluginError("; ".join(reg.problems()) + f" (strict mode: {STRICT_ENV})")
        return reg

    def _add(self, name: str, version: str, builtin: bool, loader: Callable[[], Any]) -> None:
        if name in self.plugins:  # an entry point named like a plugin already loaded
            taken = "a built-in plugin" if self.plugins[name].builtin else "another plugin"
            name, info = f"{name} ({version})", PluginInfo(name, version, builtin)
            self.plugins[name] = info
            _add_error(info, f"failed to load: the plugin name is taken by {taken}")
            return
        info = PluginInfo(name, version, builtin)
        self.plugins[name] = info
        try:
            self._pm.register(loader(), name=name)
        except Exception as e:  # a plugin's import may raise anything; isolate it
            _add_error(info, f"failed to load: {type(e).__name__}: {e}")

    def _collect(self) -> None:
        owners: dict[str, str] = {}
        preset_owners: dict[str, str] = {}
        for hook, kind in ((self._pm.hook.layerzoo_register_layers, "layers"),
                           (self._pm.hook.layerzoo_register_presets, "presets")):
            # get_hookimpls() is in registration (load) order; pluggy *calls* them in reverse,
            # so iterate it as is: tables and conflict messages follow load order
            for impl in hook.get_hookimpls():
                info = self.plugins[impl.plugin_name]
                collected: list[Any] = []
                try:
                    impl.function(register=lambda *a, _c=collected, **k: _c.append((a, k)))
                except Exception as e:
                    _add_error(info, f"raised in {hook.name}: {type(e).__name__}: {e}")
                    continue
                for args, kwargs in collected:
                    if kind == "layers":
                        self._register_layer(info, owners, *args, **kwargs)
                    else:
                        self._register_preset(info, preset_owners, *args, **kwargs)

    def _register_layer(self, info: PluginInfo, owners: dict[str, str], layer: Any = None,
                        *extra: Any, **kwargs: Any) -> None:
        problems = declaration_problems(layer) if not (extra or kwargs) else [
            "register() takes one LayerType"]
        if problems:
            what = getattr(layer, "name", layer)
            _add_error(info, f"invalid layer {what!r}: " + "; ".join(problems))
            return
        name = layer.name
        if name in owners:
            self.conflicts.setdefault(f"layer {name!r}", [owners[name]]).append(info.name)
            self.layers.pop(name, None)
            return
        owners[name] = info.name
        self.layers[name] = dataclasses.replace(layer, plugin=info.name, version=info.version)
        info.layers.append(name)

    def _register_preset(self, info: PluginInfo, owners: dict[str, str], name: Any = None,
                         spec: Any = None, description: str = "") -> None:
        if not isinstance(name, str) or not isinstance(spec, dict):
            _add_error(info, f"invalid preset {name!r}: expected register(name: str, spec: dict)")
            return
        if name in owners:
            self.conflicts.setdefault(f"preset {name!r}", [owners[name]]).append(info.name)
            self.presets.pop(name, None)
            return
        owners[name] = info.name
        self.presets[name] = Preset(name, spec, description, info.name)
        info.presets.append(name)

    # -- queries -------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """One line per failed plugin and per name claimed twice."""
        lines = [f"plugin {p.name!r} {p.error}" for p in self.plugins.values() if p.error]
        for what, who in self.conflicts.items():
            lines.append(f"{what} is registered by more than one plugin: "
                         + " and ".join(repr(w) for w in who))
        return lines

    def conflict(self, kind: str, name: str) -> str | None:
        """The error for a name two plugins claimed, or None if it is not contested."""
        who = self.conflicts.get(f"{kind} {name!r}")
        if not who:
            return None
        return (f"{kind} {name!r} is registered by both " + " and ".join(repr(w) for w in who)
                + f"; uninstall one, or pick one with {ALLOW_ENV}")

    def layer(self, name: str) -> LayerType:
        """The layer type called ``name``; PluginError with close matches if there is none."""
        if name in self.layers:
            return self.layers[name]
        raise PluginError(self.conflict("layer", name)
                          or f"unknown layer {name!r}{did_you_mean(name, self.layers)}")

    def preset(self, name: str) -> Preset:
        """The preset called ``name``; PluginError with close matches if there is none."""
        if name in self.presets:
            return self.presets[name]
        raise PluginError(self.conflict("preset", name)
                          or f"unknown preset {name!r}{did_you_mean(name, self.presets)}")


_REGISTRY: Registry | None = None


class PluginWarning(UserWarning):
    """A plugin failed to load or register; the others were loaded."""


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use (idempotent).

    Plugin failures become PluginWarning (or PluginError with LAYERZOO_STRICT_PLUGINS=1).
    """
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry.load()
        for problem in registry.problems():
            warnings.warn(problem, PluginWarning, stacklevel=2)
        _REGISTRY = registry
    return _REGISTRY


def load_plugins(*, strict: bool | None = None) -> Registry:
    """(Re)load every plugin into the process-wide registry and return it, without warnings.

    The CLI uses this and reports ``registry.problems()`` itself.
    """
    global _REGISTRY
    _REGISTRY = Registry.load(strict=strict)
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry so the next get_registry() reloads (tests, env changes)."""
    global _REGISTRY
    _REGISTRY = None
