"""The registry: built-ins are ordinary plugins, failures are isolated, names are never shadowed."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from zoo.errors import PluginError
from zoo.layer import LayerType, declaration_problems
from zoo.registry import Registry, get_registry, reset_registry

VERSION = importlib.metadata.version("layerzoo")
HEADER = ("from dataclasses import dataclass\nfrom torch import nn\n"
          "from zoo import LayerType, NoParams, hookimpl, param\n"
          "def ident(s, p, pl):\n    return s\n")


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  fresh_registry: None) -> Callable[[str, str], str]:
    """``plugin_module("name", body)``: an importable module (HEADER + body) for builtins=."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def write(name: str, body: str) -> str:
        (tmp_path / f"{name}.py").write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def load(*modules: str) -> Registry:
    """Built-in activations plus the given modules, no third-party plugins."""
    return Registry.load(builtins=["zoo.plugins.activations", *modules], allow=[])


def test_the_core_knows_no_layer_by_name(fresh_registry) -> None:
    empty = Registry.load(builtins=[], allow=[])
    assert (empty.layers, empty.presets) == ({}, {})
    with pytest.raises(PluginError) as e:
        empty.layer("linear")
    assert str(e.value) == "unknown layer 'linear'"


def test_builtins_are_plugins_with_the_package_version(fresh_registry) -> None:
    reg = get_registry()
    assert reg is get_registry()  # loaded once
    builtins = {n: p for n, p in reg.plugins.items() if p.builtin}
    assert list(builtins) == ["embedding", "linear", "norm", "activations", "reshape",
                              "dropout", "presets"]
    assert {p.version for p in builtins.values()} == {VERSION}
    assert reg.layers["batchnorm"].plugin == "norm" and reg.layers["batchnorm"].version == VERSION
    assert reg.presets["wavenet"].plugin == "presets"
    reset_registry()
    assert get_registry() is not reg


def test_unknown_names_suggest_close_matches(fresh_registry) -> None:
    reg = get_registry()
    with pytest.raises(PluginError) as e:
        reg.layer("batchnrom")
    assert str(e.value) == "unknown layer 'batchnrom' (did you mean 'batchnorm'?)"
    with pytest.raises(PluginError) as e:
        reg.layer("flaten")
    assert str(e.value) == "unknown layer 'flaten' (did you mean 'flatten'?)"
    with pytest.raises(PluginError) as e:
        reg.preset("deep_bn")
    assert str(e.value) == "unknown preset 'deep_bn' (did you mean 'deep-bn'?)"
    with pytest.raises(PluginError) as e:
        reg.layer("transformer")
    assert str(e.value) == "unknown layer 'transformer'"


def test_a_bad_register_call_fails_only_that_plugin(plugin_module) -> None:
    mod = plugin_module("zoo_t_badcall", """
        @hookimpl
        def layerzoo_register_layers(register):
            register("tanh")
        @hookimpl
        def layerzoo_register_presets(register):
            register("p", [1, 2])
    """)
    reg = load(mod)
    assert reg.problems() == [f"plugin {mod!r} invalid layer 'tanh': expected a zoo.LayerType, "
                              "got str; invalid preset 'p': expected register(name: str, "
                              "spec: dict)"]  # both reasons, not only the last
    assert "tanh" in reg.layers and reg.layers["tanh"].plugin == "activations"


def test_a_raising_preset_hook_keeps_the_plugins_layers(plugin_module) -> None:
    mod = plugin_module("zoo_t_halfway", """
        @hookimpl
        def layerzoo_register_layers(register):
            register(LayerType(name="same", shape=ident, build=lambda s, p, pl: nn.Identity()))
        @hookimpl
        def layerzoo_register_presets(register):
            raise KeyError("presets.toml")
    """)
    reg = load(mod)
    assert reg.layers["same"].plugin == mod
    assert reg.problems() == [f"plugin {mod!r} raised in layerzoo_register_presets: KeyError: "
                              "'presets.toml'"]
    with pytest.raises(PluginError) as e:
        Registry.load(builtins=[mod], allow=[], strict=True)
    assert str(e.value) == (f"plugin {mod!r} raised in layerzoo_register_presets: KeyError: "
                            "'presets.toml' (strict mode: LAYERZOO_STRICT_PLUGINS)")


def test_two_plugins_with_one_preset_name(plugin_module) -> None:
    one = plugin_module("zoo_t_one", """
        @hookimpl
        def layerzoo_register_presets(register):
            register("tiny", {"model": {"layers": ["embedding", "flatten", "linear"]}})
    """)
    two = plugin_module("zoo_t_two", """
        @hookimpl
        def layerzoo_register_presets(register):
            register("tiny", {"model": {"layers": ["embedding", "linear"]}})
    """)
    reg = load(one, two)
    assert "tiny" not in reg.presets
    assert reg.problems() == [f"preset 'tiny' is registered by more than one plugin: {one!r} "
                              f"and {two!r}"]
    with pytest.raises(PluginError) as e:
        reg.preset("tiny")
    assert str(e.value) == (f"preset 'tiny' is registered by both {one!r} and {two!r}; "
                            "uninstall one, or pick one with LAYERZOO_LOAD_PLUGINS")


@pytest.mark.parametrize("value, strict", [("1", True), ("true", True), ("yes", True),
                                           ("0", False), ("", False)])
def test_strict_env_values(plugin_module, monkeypatch, value: str, strict: bool) -> None:
    mod = plugin_module("zoo_t_raises", """
        @hookimpl
        def layerzoo_register_layers(register):
            raise RuntimeError("nope")
    """)
    monkeypatch.setenv("LAYERZOO_STRICT_PLUGINS", value)
    if strict:
        with pytest.raises(PluginError, match="RuntimeError: nope"):
            Registry.load(builtins=[mod], allow=[])
    else:
        assert Registry.load(builtins=[mod], allow=[]).plugins[mod].error == (
            "raised in layerzoo_register_layers: RuntimeError: nope")


def _layer(**kw) -> LayerType:
    return LayerType(**{"name": "ok", "shape": lambda s, p, pl: s,
                        "build": lambda s, p, pl: None, **kw})


def test_declaration_problems(plugin_module) -> None:
    mod = plugin_module("zoo_t_params", """
        @dataclass(frozen=True)
        class Reserved:
            type: int = param(1, "clashes with the entry's type key")
        @dataclass(frozen=True)
        class Listy:
            sizes: list = param(None, "a list is not a spec value")
        @dataclass(frozen=True)
        class Undocumented:
            width: int = param(3)
    """)
    params = importlib.import_module(mod)
    assert declaration_problems(_layer()) == []
    assert declaration_problems(_layer(name="2d")) == [
        "name '2d' is not snake_case (a-z, 0-9, _)"]
    assert declaration_problems(_layer(shape=None)) == ["shape must be callable"]
    assert declaration_problems(_layer(params=dict)) == ["params must be a dataclass type"]
    assert declaration_problems(_layer(params=params.Reserved)) == [
        "parameter 'type' uses a reserved key"]
    assert declaration_problems(_layer(params=params.Listy)) == [
        "parameter 'sizes' has unsupported type <class 'list'>"]
    assert declaration_problems(_layer(params=params.Undocumented)) == [
        "parameter 'width' has no doc"]


def test_an_entry_point_named_like_a_builtin_plugin_is_refused(tmp_path, fake_install) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "pyproject.toml").write_text(textwrap.dedent("""
        [project]
        name = "layerzoo-impostor"
        version = "9.9"
        [project.entry-points.layerzoo]
        linear = "impostor_plugin"
        [tool.setuptools]
        py-modules = ["impostor_plugin"]
    """))
    (package / "impostor_plugin.py").write_text("")
    fake_install(package)
    registry = Registry.load()
    assert registry.plugins["linear"].builtin and not registry.plugins["linear"].error
    assert registry.layers["linear"].plugin == "linear"
    assert ("plugin 'linear' failed to load: the plugin name is taken by a built-in plugin"
            in registry.problems())
    with pytest.raises(PluginError, match="taken by a built-in plugin"):
        Registry.load(strict=True)
