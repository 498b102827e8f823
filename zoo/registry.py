"""The layer registry: pluggy discovers built-in and third-party plugins the same way.

Built-in plugins are the modules named in ``zoo.plugins.DEFAULT_PLUGINS``; third-party ones
are found through the entry-point group ``layerzoo``. Every plugin is loaded and asked for its
layers and presets in isolation: one that fails is reported with its distribution, version,
entry point and reason, and the others still load (``LAYERZOO_STRICT_PLUGINS=1`` makes any
failure an error). ``LAYERZOO_LOAD_PLUGINS=a,b`` loads only those third-party plugins; set but
empty, none.

Names: every layer and preset is reachable as ``PLUGIN:NAME``, and by its bare ``NAME`` when
that is unambiguous. A built-in always keeps its bare name: a third-party plugin reusing it is
reachable only qualified. A bare name two third-party plugins share is refused, and the message
lists the qualified names to use.
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
from zoo.names import map_layer_types, qualified

__all__ = ["Registry", "PluginInfo", "PluginWarning", "Preset", "get_registry", "reset_registry"]

ENTRY_POINT_GROUP = "layerzoo"
STRICT_ENV = "LAYERZOO_STRICT_PLUGINS"
ALLOW_ENV = "LAYERZOO_LOAD_PLUGINS"


@dataclass
class PluginInfo:
    """One plugin as ``zoo plugins`` shows it."""

    name: str  # the PLUGIN of PLUGIN:NAME: the entry-point name, or a built-in module's
    version: str
    builtin: bool
    distribution: str = ""  # what `pip uninstall` takes; "layerzoo" for the built-ins
    module: str = ""  # the entry point's target (or the built-in module)
    layers: list[str] = field(default_factory=list)  # bare names, in registration order
    presets: list[str] = field(default_factory=list)
    error: str | None = None  # why it failed, if it did
    clashes: list[str] = field(default_factory=list)  # its names reachable only qualified, why
    skipped: bool = False  # left out by LAYERZOO_LOAD_PLUGINS

    def source(self) -> str:
        """How messages name the plugin: "plugin 'x' (dist 1.0, entry point x = mod)"."""
        if self.builtin:
            return f"plugin {self.name!r} (built-in {self.module})"
        return (f"plugin {self.name!r} ({self.distribution} {self.version}, entry point "
                f"{self.name} = {self.module})")

    def fail(self, message: str) -> None:
        """Record why the plugin failed, keeping earlier reasons (one plugin can fail twice)."""
        self.error = f"{self.error}; {message}" if self.error else message


@dataclass(frozen=True)
class Preset:
    """A named model spec registered by a plugin."""

    name: str
    spec: dict[str, Any]
    description: str
    plugin: str


def env_flag(name: str) -> bool:
    """A yes/no environment variable; PluginError for a value that is neither."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise PluginError(f"{name}={os.environ[name]!r}: expected 1, true, yes or on to turn it "
                      "on, or 0, false, no, off or nothing to turn it off")


def layerzoo_version() -> str:
    try:
        return importlib.metadata.version("layerzoo")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class Registry:
    """Layer types and presets collected from every plugin that loaded.

    ``layers`` and ``presets`` are keyed by the name a user writes: the bare name where it is
    unambiguous, ``PLUGIN:NAME`` otherwise. ``layer()`` and ``preset()`` accept either form.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.layers: dict[str, LayerType] = {}
        self.presets: dict[str, Preset] = {}
        self.plugins: dict[str, PluginInfo] = {}
        self.clashes: list[str] = []  # one warning per plugin or shared name; not failures
        self._pm = pluggy.PluginManager("layerzoo")
        self._pm.add_hookspecs(hookspecs)

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, *, strict: bool | None = None, allow: Iterable[str] | None = None,
             builtins: Iterable[str] | None = None) -> Registry:
        """Load the built-in plugins and the installed third-party ones.

        ``strict`` and ``allow`` default to ``LAYERZOO_STRICT_PLUGINS`` and
        ``LAYERZOO_LOAD_PLUGINS``. Raises PluginError in strict mode if any plugin failed,
        and for a strict setting that is not a clear yes or no.
        """
        from zoo.plugins import DEFAULT_PLUGINS

        from_env = env_flag(STRICT_ENV)  # checked even when overridden: a typo is an error
        if strict is None:
            strict = from_env
        if allow is None and ALLOW_ENV in os.environ:
            allow = [a.strip() for a in os.environ[ALLOW_ENV].split(",") if a.strip()]
        allowed = None if allow is None else set(allow)
        reg = cls(strict=strict)
        version = layerzoo_version()
        for module in DEFAULT_PLUGINS if builtins is None else builtins:
            info = PluginInfo(module.rsplit(".", 1)[-1], version, True, "layerzoo", module)
            reg._add(info, lambda m=module: importlib.import_module(m))
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            ep_version = ep.dist.version if ep.dist is not None else "unknown"
            info = PluginInfo(ep.name, ep_version, False, dist, ep.value,
                              skipped=allowed is not None and ep.name not in allowed)
            reg._add(info, ep.load)
        reg._collect()
        if strict and reg.failures():
            raise PluginError("; ".join(reg.failures()) + f" (strict mode: {STRICT_ENV})")
        return reg

    def _add(self, info: PluginInfo, loader: Callable[[], Any]) -> None:
        taken = self.plugins.get(info.name)
        if taken is not None or ":" in info.name:
            # keep the first plugin's record: a second one must never overwrite it
            key = f"{info.name} ({info.distribution})"
            self.plugins[key] = info
            if info.skipped:
                return
            why = ("its name contains ':', which separates PLUGIN:NAME" if taken is None else
                   f"the plugin name {info.name!r} is taken by "
                   + ("a built-in plugin" if taken.builtin else taken.source()))
            info.fail(f"failed to load: {why}; rename the entry point")
            return
        self.plugins[info.name] = info
        if info.skipped:
            return
        try:
            self._pm.register(loader(), name=info.name)
        except Exception as e:  # a plugin's import may raise anything; isolate it
            info.fail(f"failed to load: {type(e).__name__}: {e}")

    def _collect(self) -> None:
        claims: dict[tuple[str, str], list[tuple[PluginInfo, Any]]] = {}
        for hook, kind in ((self._pm.hook.layerzoo_register_layers, "layer"),
                           (self._pm.hook.layerzoo_register_presets, "preset")):
            # get_hookimpls() is in registration (load) order; pluggy *calls* them in reverse,
            # so iterate it as is: tables and messages follow load order
            for impl in hook.get_hookimpls():
                info = self.plugins[impl.plugin_name]
                collected: list[Any] = []
                try:
                    impl.function(register=lambda *a, _c=collected, **k: _c.append((a, k)))
                except Exception as e:
                    info.fail(f"raised in {hook.name}: {type(e).__name__}: {e}")
                    continue
                for args, kwargs in collected:
                    check = _check_layer if kind == "layer" else _check_preset
                    item = check(info, *args, **kwargs)
                    if item is None:
                        continue
                    owners = claims.setdefault((kind, item.name), [])
                    if any(owner is info for owner, _ in owners):
                        info.fail(f"registers {kind} {item.name!r} twice")
                        continue
                    owners.append((info, item))
                    (info.layers if kind == "layer" else info.presets).append(item.name)
        lost: dict[str, list[str]] = {}  # plugin -> its names a built-in keeps
        for (kind, name), owners in claims.items():
            self._settle(kind, name, owners, lost)
        # one warning per plugin that lost names to built-ins, before the shared-name ones
        self.clashes[:0] = [f"{self.plugins[p].source()}: " + "; ".join(notes)
                            for p, notes in lost.items()]

    def _settle(self, kind: str, name: str, owners: list[tuple[PluginInfo, Any]],
                lost: dict[str, list[str]]) -> None:
        """Give each claim of a name its key: bare when unambiguous, else PLUGIN:NAME."""
        table: dict[str, Any] = self.layers if kind == "layer" else self.presets
        builtins = [info for info, _ in owners if info.builtin]
        keeper = owners[0][0] if len(owners) == 1 else builtins[0] if len(builtins) == 1 else None
        for info, item in owners:
            table[name if info is keeper else qualified(info.name, name)] = item
            if info is keeper:
                continue
            rival = "a built-in name" if keeper else "registered by another plugin too"
            note = (f"{kind} {name!r} is {rival}: this plugin's is reachable only as "
                    f"{qualified(info.name, name)!r}")
            info.clashes.append(note)
            if keeper is not None:
                lost.setdefault(info.name, []).append(note)
        if keeper is None:
            rivals = sorted(owners, key=lambda owner: owner[0].name)  # not load order: stable
            self.clashes.append(
                f"{kind} {name!r} is registered by " + " and ".join(i.source() for i, _ in rivals)
                + "; the bare name is refused, write " + _either(rivals, name))

    # -- queries -------------------------------------------------------------------------

    def failures(self) -> list[str]:
        """One line per plugin that failed to load or register (what strict mode refuses)."""
        return [f"{p.source()} {p.error}" for p in self.plugins.values() if p.error]

    def problems(self) -> list[str]:
        """Every line to warn about: failures, then names reachable only qualified."""
        return self.failures() + self.clashes

    def layer(self, name: str) -> LayerType:
        """The layer type called ``name`` or ``PLUGIN:name``; PluginError saying why not."""
        return self._find("layer", self.layers, name)

    def preset(self, name: str) -> Preset:
        """The preset called ``name`` or ``PLUGIN:name``; PluginError saying why not."""
        return self._find("preset", self.presets, name)

    def _find(self, kind: str, table: dict[str, Any], name: str) -> Any:
        if name in table:
            return table[name]
        plugin, sep, bare = name.rpartition(":")
        if sep:
            for item in table.values():
                if (item.plugin, item.name) == (plugin, bare):
                    return item
            info = self.plugins.get(plugin)
            if info is None:
                raise PluginError(f"unknown {kind} {name!r}: no plugin named {plugin!r}"
                                  f"{did_you_mean(plugin, self.plugins)}")
            if info.skipped or info.error:
                why = (f"is not loaded (not in {ALLOW_ENV})" if info.skipped else
                       f"failed ({info.error})")
                raise PluginError(f"unknown {kind} {name!r}: {info.source()} {why}")
            own = [item.name for item in table.values() if item.plugin == plugin]
            raise PluginError(f"unknown {kind} {name!r}: plugin {plugin!r} registers no "
                              f"{kind} {bare!r}{did_you_mean(bare, own)}")
        rivals = [(self.plugins.get(i.plugin) or PluginInfo(i.plugin, "", False), i)
                  for i in sorted(table.values(), key=lambda i: i.plugin) if i.name == name]
        if rivals:
            raise PluginError(f"{kind} {name!r} is ambiguous: it is registered by "
                              + " and ".join(info.source() for info, _ in rivals)
                              + "; write " + _either(rivals, name))
        raise PluginError(f"unknown {kind} {name!r}{did_you_mean(name, table)}")

    def name_of(self, item: LayerType | Preset) -> str:
        """The name a user writes for a registered layer or preset: bare when unambiguous."""
        table: dict[str, Any] = self.presets if isinstance(item, Preset) else self.layers
        return item.name if table.get(item.name) is item else qualified(item.plugin, item.name)

    def qualify(self, spec: Any) -> Any:
        """A Spec with every layer named ``PLUGIN:NAME``, as a run records it (spec.json).

        A run so recorded rebuilds the same layers whatever plugin is installed later. Names
        that do not resolve are left as written, for validation to report.
        """
        return dataclasses.replace(spec, layers=map_layer_types(spec.layers, self._qualified))

    def _qualified(self, name: str) -> str:
        try:
            layer = self.layer(name)
        except PluginError:
            return name
        return qualified(layer.plugin, layer.name) if layer.plugin else name

    def preset_layers(self, preset: Preset) -> Any:
        """A preset's layers, its bare names meaning its own plugin's layers where it has them.

        A third-party preset written before a built-in took one of its layer names keeps
        building the plugin's own layer.
        """
        own = {layer.name: layer for layer in self.layers.values()
               if layer.plugin == preset.plugin}

        def mine(name: str) -> str:
            layer = own.get(name)
            return name if layer is None or self.layers.get(name) is layer else \
                qualified(preset.plugin, name)

        return map_layer_types(preset.spec.get("model", {}).get("layers"), mine) \
            if isinstance(preset.spec.get("model"), dict) else None


def _check_layer(info: PluginInfo, layer: Any = None, *extra: Any,
                 **kwargs: Any) -> LayerType | None:
    problems = declaration_problems(layer) if not (extra or kwargs) else [
        "register() takes one LayerType"]
    if problems:
        what = getattr(layer, "name", layer)
        info.fail(f"invalid layer {what!r}: " + "; ".join(problems))
        return None
    return dataclasses.replace(layer, plugin=info.name, version=info.version)


def _check_preset(info: PluginInfo, name: Any = None, spec: Any = None,
                  description: str = "") -> Preset | None:
    if not isinstance(name, str) or not isinstance(spec, dict):
        info.fail(f"invalid preset {name!r}: expected register(name: str, spec: dict)")
        return None
    if ":" in name or not name:
        info.fail(f"invalid preset {name!r}: a preset name is not empty and has no ':'")
        return None
    return Preset(name, spec, str(description), info.name)


def _either(owners: list[tuple[PluginInfo, Any]], name: str) -> str:
    return " or ".join(repr(qualified(info.name, name)) for info, _ in owners)


class PluginWarning(UserWarning):
    """A plugin failed to load or register, or one of its names is reachable only qualified."""


_DEFAULT: Registry | None = None


def get_registry() -> Registry:
    """The registry library callers get when they pass none, loaded on first use.

    Plugin problems become PluginWarning (or PluginError with LAYERZOO_STRICT_PLUGINS=1). The
    CLI never uses it: each command loads its own Registry and passes it explicitly.
    """
    global _DEFAULT
    if _DEFAULT is None:
        registry = Registry.load()
        for problem in registry.problems():
            warnings.warn(problem, PluginWarning, stacklevel=2)
        _DEFAULT = registry
    return _DEFAULT


def reset_registry() -> None:
    """Forget the default registry so the next get_registry() reloads (tests, env changes)."""
    global _DEFAULT
    _DEFAULT = None
