"""The registry: built-ins are ordinary plugins, failures are isolated, names are never shadowed."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from zoo.build import build_model
from zoo.errors import PluginError
from zoo.layer import LayerType, declaration_problems
from zoo.plugins import DEFAULT_PLUGINS
from zoo.registry import PluginInfo, Registry, get_registry, reset_registry
from zoo.spec import load_spec

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
    assert list(builtins) == [m.rsplit(".", 1)[-1] for m in DEFAULT_PLUGINS]  # load order
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
        reg.layer("sigmiod")
    assert str(e.value) == "unknown layer 'sigmiod' (did you mean 'sigmoid'?)"
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
    assert reg.problems() == [f"plugin {mod!r} (built-in {mod}) invalid layer 'tanh': expected a "
                              "zoo.LayerType, got str; invalid preset 'p': expected "
                              "register(name: str, spec: dict)"]  # both reasons, not the last
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
    assert reg.problems() == [f"plugin {mod!r} (built-in {mod}) raised in "
                              "layerzoo_register_presets: KeyError: 'presets.toml'"]
    with pytest.raises(PluginError) as e:
        Registry.load(builtins=[mod], allow=[], strict=True)
    assert str(e.value) == (f"plugin {mod!r} (built-in {mod}) raised in "
                            "layerzoo_register_presets: KeyError: 'presets.toml' (strict mode: "
                            "LAYERZOO_STRICT_PLUGINS)")


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
    # two non-built-in plugins: Registry.load(builtins=...) treats them as built-ins, so load
    # them as the third-party plugins they stand for
    reg = Registry(strict=False)
    for mod in (one, two):
        reg._add(PluginInfo(mod, "1.0", False, f"dist-{mod}", mod),
                 lambda m=mod: importlib.import_module(m))
    reg._collect()
    assert "tiny" not in reg.presets and {f"{one}:tiny", f"{two}:tiny"} <= set(reg.presets)
    both = (f"plugin {one!r} (dist-{one} 1.0, entry point {one} = {one}) and plugin {two!r} "
            f"(dist-{two} 1.0, entry point {two} = {two})")
    assert reg.problems() == [f"preset 'tiny' is registered by {both}; the bare name is "
                              f"refused, write '{one}:tiny' or '{two}:tiny'"]
    assert reg.failures() == []  # every preset is still reachable: nothing failed
    with pytest.raises(PluginError) as e:
        reg.preset("tiny")
    assert str(e.value) == (f"preset 'tiny' is ambiguous: it is registered by {both}; write "
                            f"'{one}:tiny' or '{two}:tiny'")
    assert "uninstall" not in str(e.value)
    assert reg.preset(f"{two}:tiny").spec["model"]["layers"] == ["embedding", "linear"]
    assert reg.plugins[one].clashes == [f"preset 'tiny' is registered by another plugin too: "
                                        f"this plugin's is reachable only as '{one}:tiny'"]


@pytest.mark.parametrize("value, strict", [("1", True), ("true", True), ("yes", True),
                                           ("ON", True), ("0", False), ("", False),
                                           ("no", False), ("off", False), ("False", False)])
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


@pytest.mark.parametrize("value", ["maybe", "2", "strict", "enabled"])
def test_a_strict_setting_that_is_not_yes_or_no_is_refused(monkeypatch, value: str) -> None:
    monkeypatch.setenv("LAYERZOO_STRICT_PLUGINS", value)
    for strict in (None, False, True):  # a typo is an error even where a flag overrides it
        with pytest.raises(PluginError) as e:
            Registry.load(allow=[], strict=strict)
        assert str(e.value) == (f"LAYERZOO_STRICT_PLUGINS={value!r}: expected 1, true, yes or "
                                "on to turn it on, or 0, false, no, off or nothing to turn it "
                                "off")


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
        "parameter 'type' uses the key that names the layer in a spec entry; call it "
        "something else"]
    assert declaration_problems(_layer(params=params.Listy)) == [
        "parameter 'sizes' has unsupported type <class 'list'>"]
    assert declaration_problems(_layer(params=params.Undocumented)) == [
        "parameter 'width' has no doc"]


def _impostor(tmp_path: Path) -> Path:
    """A plugin package whose entry point is named 'linear', like a built-in plugin."""
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
    return package


def test_an_entry_point_named_like_a_builtin_plugin_is_refused(tmp_path, fake_install) -> None:
    fake_install(_impostor(tmp_path))
    registry = Registry.load()
    assert registry.plugins["linear"].builtin and not registry.plugins["linear"].error
    assert registry.plugins["linear"].version == VERSION
    assert registry.layers["linear"].plugin == "linear"
    assert registry.failures() == [
        "plugin 'linear' (layerzoo-impostor 9.9, entry point linear = impostor_plugin) failed "
        "to load: the plugin name 'linear' is taken by a built-in plugin; rename the entry point"]
    with pytest.raises(PluginError, match="taken by a built-in plugin"):
        Registry.load(strict=True)


def test_a_skipped_entry_point_named_like_a_builtin_keeps_the_builtin_record(
        tmp_path, fake_install, monkeypatch) -> None:
    fake_install(_impostor(tmp_path))
    monkeypatch.setenv("LAYERZOO_LOAD_PLUGINS", "")
    registry = Registry.load()
    builtin = registry.plugins["linear"]
    assert (builtin.builtin, builtin.version, builtin.skipped, builtin.error) == (
        True, VERSION, False, None)
    skipped = registry.plugins["linear (layerzoo-impostor)"]
    assert (skipped.skipped, skipped.version, skipped.error) == (True, "9.9", None)
    assert registry.problems() == []


# -- qualified names and the clash rule ----------------------------------------------------

def test_every_layer_and_preset_answers_to_its_qualified_name(fresh_registry) -> None:
    reg = get_registry()
    for name, layer in reg.layers.items():
        assert reg.layer(f"{layer.plugin}:{layer.name}") is layer
        assert reg.name_of(layer) == name
    for name, preset in reg.presets.items():
        assert reg.preset(f"{preset.plugin}:{preset.name}") is preset
        assert reg.name_of(preset) == name
    assert reg.layer("norm:batchnorm") is reg.layer("batchnorm")


def test_unknown_qualified_names_say_which_half_is_wrong(fresh_registry) -> None:
    reg = get_registry()
    with pytest.raises(PluginError) as e:
        reg.layer("nrom:batchnorm")
    assert str(e.value) == "unknown layer 'nrom:batchnorm': no plugin named 'nrom' (did you " \
                           "mean 'norm'?)"
    with pytest.raises(PluginError) as e:
        reg.layer("norm:batchnrom")
    assert str(e.value) == "unknown layer 'norm:batchnrom': plugin 'norm' registers no layer " \
                           "'batchnrom' (did you mean 'batchnorm'?)"
    with pytest.raises(PluginError) as e:
        reg.preset("norm:mlp")
    assert str(e.value) == "unknown preset 'norm:mlp': plugin 'norm' registers no preset 'mlp'"


def _third_party(plugin_module, name: str, body: str) -> tuple[Registry, str]:
    """The built-ins plus one module loaded as a third-party plugin (as an entry point is)."""
    mod = plugin_module(name, body)
    reg = Registry(strict=False)
    for module in DEFAULT_PLUGINS:
        reg._add(PluginInfo(module.rsplit(".", 1)[-1], VERSION, True, "layerzoo", module),
                 lambda m=module: importlib.import_module(m))
    reg._add(PluginInfo(mod, "2.5", False, "layerzoo-clash", mod),
             lambda: importlib.import_module(mod))
    reg._collect()
    return reg, mod


CLASH = """
    @hookimpl
    def layerzoo_register_layers(register):
        register(LayerType(name="tanh", doc="not tanh", shape=ident, gain=1.0,
                           build=lambda s, p, pl: nn.Identity()))
        register(LayerType(name="clashy_only", doc="mine", shape=ident,
                           build=lambda s, p, pl: nn.Identity()))
    @hookimpl
    def layerzoo_register_presets(register):
        register("mlp", {"model": {"layers": ["embedding", "flatten", "tanh", "linear"]}})
"""


def test_a_builtin_name_is_never_displaced(plugin_module) -> None:
    reg, mod = _third_party(plugin_module, "zoo_t_clash", CLASH)
    assert reg.layer("tanh").plugin == "activations" and reg.layers["tanh"].plugin == "activations"
    assert reg.layer(f"{mod}:tanh").doc == "not tanh" and f"{mod}:tanh" in reg.layers
    assert reg.preset("mlp").plugin == "presets" and reg.preset(f"{mod}:mlp").plugin == mod
    assert reg.layer("clashy_only").plugin == mod  # its unclashing names stay bare
    assert reg.failures() == []
    assert reg.problems() == [  # one warning, naming the plugin and its distribution
        f"plugin {mod!r} (layerzoo-clash 2.5, entry point {mod} = {mod}): layer 'tanh' is a "
        f"built-in name: this plugin's is reachable only as '{mod}:tanh'; preset 'mlp' is a "
        f"built-in name: this plugin's is reachable only as '{mod}:mlp'"]
    # every built-in preset still builds, with the built-in tanh
    for name in ("bigram", "mlp", "mlp-bn", "deep-bn", "wavenet"):
        model = build_model(name, 27, registry=reg)
        assert all(e.layer.plugin != mod for e in model.entries)
    # the plugin's own preset means its own tanh by the bare name
    mine = build_model(f"{mod}:mlp", 27, registry=reg)
    assert [e.layer.plugin for e in mine.entries][2] == mod
    assert build_model(["embedding", "flatten", f"{mod}:tanh", "linear"], 27,
                       registry=reg).entries[2].label == f"entry 2 ({mod}:tanh)"


def test_qualify_records_every_layer_with_its_plugin(plugin_module) -> None:
    reg, mod = _third_party(plugin_module, "zoo_t_clash2", CLASH)
    spec = load_spec({"model": {"context": 8, "layers": [
        {"type": "embedding", "dim": 4}, {"repeat": 2, "layers": [
            {"type": "flatten_consecutive"}, {"type": "linear", "out": 8}, "tanh"]},
        f"{mod}:tanh", "flatten", "clashy_only", "linear", "no_such_layer"]}}, registry=reg)
    qualified = reg.qualify(spec)
    assert qualified.layers == [
        {"type": "embedding:embedding", "dim": 4}, {"repeat": 2, "layers": [
            {"type": "reshape:flatten_consecutive"}, {"type": "linear:linear", "out": 8},
            "activations:tanh"]},
        f"{mod}:tanh", "reshape:flatten", f"{mod}:clashy_only", "linear:linear",
        "no_such_layer"]  # unknown names stay as written, for validation to report
    assert spec.qualified(reg) == qualified
    assert (qualified.context, qualified.train, qualified.source) == (
        spec.context, spec.train, spec.source)


def test_a_qualified_spec_builds_the_same_model_whatever_is_installed(plugin_module) -> None:
    """A run recorded before a clashing plugin arrived rebuilds the same layers after."""
    plain = Registry.load(builtins=None, allow=[])
    spec = plain.qualify(load_spec("mlp-bn", registry=plain))
    clashing, _ = _third_party(plugin_module, "zoo_t_clash3", CLASH)
    before = build_model(spec, 27, registry=plain)
    after = build_model(spec, 27, registry=clashing)
    assert [(e.layer.plugin, e.layer.name) for e in after.entries] == [
        (e.layer.plugin, e.layer.name) for e in before.entries]
    assert [e.label for e in after.entries] == [e.label for e in before.entries]
