"""Third-party plugins through the real entry-point machinery.

``layerzoo-extra`` (tests/thirdparty/extra) is pip-installed into the venv; the broken plugins
(tests/thirdparty/broken) and ``layerzoo-seqplug`` (tests/thirdparty/seqplug) are installed per
test into a temp folder on sys.path / PYTHONPATH.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from zoo.build import build_model
from zoo.errors import PluginError, SpecError
from zoo.registry import PluginWarning, Registry, get_registry

TESTS = Path(__file__).parent
EXTRA_VERSION = "0.3.1"
EXTRA_LAYERS = ["swish", "rmsnorm", "hardswishish"]
BUILTIN_LAYERS = {"embedding", "linear", "batchnorm", "layernorm", "tanh", "relu", "sigmoid",
                  "identity", "leaky_relu", "gelu", "hardtanh", "flatten",
                  "flatten_consecutive", "dropout"}
BROKEN_DISTS = {  # package folder -> (distribution, module)
    "import_error": ("layerzoo-broken-import", "layerzoo_broken_import"),
    "hook_raises": ("layerzoo-broken-hook", "layerzoo_broken_hook"),
    "bad_declaration": ("layerzoo-bad-declaration", "layerzoo_bad_declaration"),
    "duplicate": ("layerzoo-duplicate", "layerzoo_duplicate"),
}


def source(package: str, plugin: str) -> str:
    """How messages name one of tests/thirdparty/broken's plugins."""
    dist, module = BROKEN_DISTS[package]
    return f"plugin {plugin!r} ({dist} 0.0.1, entry point {plugin} = {module})"


# package folder -> (entry-point name, the exact problem line the registry reports)
BROKEN = {
    "import_error": ("broken_import", f"{source('import_error', 'broken_import')} failed to "
                     "load: ModuleNotFoundError: No module named 'layerzoo_missing_dependency'"),
    "hook_raises": ("broken_hook", f"{source('hook_raises', 'broken_hook')} raised in "
                    "layerzoo_register_layers: ValueError: the layer table is corrupt"),
    "bad_declaration": ("bad_declaration", f"{source('bad_declaration', 'bad_declaration')} "
                        "invalid layer 'BadLayer': name 'BadLayer' is not snake_case (a-z, 0-9, "
                        "_); parameter 'width' has no doc"),
}
DUPLICATE = (f"{source('duplicate', 'duplicate')}: layer 'tanh' is a built-in name: this "
             "plugin's is reachable only as 'duplicate:tanh'")
SPEC = [{"type": "embedding", "dim": 6}, "flatten", {"type": "linear", "out": 16},
        "extra:rmsnorm", "swish", {"type": "linear", "out": 12}, "hardswishish", "linear"]


@pytest.fixture(autouse=True)
def _clean(allow_plugins) -> None:
    """Every test here sees the built-ins and layerzoo-extra (plus what it installs itself)."""
    allow_plugins("extra")


# -- the good plugin --------------------------------------------------------------------------

def test_extra_is_discovered_through_its_entry_point() -> None:
    (ep,) = [e for e in importlib.metadata.entry_points(group="layerzoo") if e.name == "extra"]
    assert ep.value == "layerzoo_extra"
    assert ep.dist.name == "layerzoo-extra"
    reg = Registry.load()
    info = reg.plugins["extra"]
    assert (info.version, info.builtin, info.error) == (EXTRA_VERSION, False, None)
    assert (info.distribution, info.module) == ("layerzoo-extra", "layerzoo_extra")
    assert info.layers == EXTRA_LAYERS and info.presets == ["extra-mlp"]
    for name in EXTRA_LAYERS:
        layer = reg.layer(f"extra:{name}")
        assert (layer.plugin, layer.version) == ("extra", EXTRA_VERSION)
    assert reg.failures() == []


def test_zoo_plugins_and_layers_list_it_with_its_version(cli) -> None:
    out = cli("plugins").output
    line = next(ln for ln in out.splitlines() if ln.startswith("extra "))
    assert line.split()[:5] == ["extra", EXTRA_VERSION, "installed", "layerzoo-extra",
                                "layerzoo_extra"]
    assert "swish" in line and "hardswishish" in line and "presets: extra-mlp" in line
    layers = cli("layers").output
    assert ("swish  [extra 0.3.1]  x * sigmoid(beta * x) (SiLU for beta = 1); init gain sqrt(2)"
            in layers.splitlines())
    assert ("    beta: a finite number >= 0, default 1.0 — slope inside the sigmoid: "
            "x * sigmoid(beta * x)") in layers.splitlines()


def test_zoo_plugins_json_describes_every_plugin(cli, fake_install) -> None:
    fake_install("hook_raises", "duplicate")
    result = cli("plugins", "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    by_name = {p["plugin"]: p for p in doc["plugins"]}
    assert by_name["extra"] == {
        "plugin": "extra", "status": by_name["extra"]["status"], "builtin": False,
        "distribution": "layerzoo-extra", "version": EXTRA_VERSION,
        "entry_point": "extra = layerzoo_extra", "module": "layerzoo_extra",
        "layers": by_name["extra"]["layers"], "presets": ["extra-mlp"], "error": None,
        "clashes": by_name["extra"]["clashes"]}
    assert by_name["extra"]["status"] in ("ok", "clash")  # a later built-in may take a name
    assert {name.split(":")[-1] for name in by_name["extra"]["layers"]} == set(EXTRA_LAYERS)
    assert by_name["linear"]["status"] == "ok" and by_name["linear"]["builtin"]
    assert by_name["linear"]["module"] == "zoo.plugins.linear"
    hook = by_name["broken_hook"]
    assert (hook["status"], hook["distribution"]) == ("failed", "layerzoo-broken-hook")
    assert hook["error"] == ("raised in layerzoo_register_layers: ValueError: the layer table "
                             "is corrupt")
    dup = by_name["duplicate"]
    assert (dup["status"], dup["layers"]) == ("clash", ["duplicate:tanh"])
    assert BROKEN["hook_raises"][1] in doc["problems"] and DUPLICATE in doc["problems"]
    assert result.stderr.splitlines() == [f"warning: {p}" for p in doc["problems"]]


def test_its_layers_build_run_and_train_in_a_spec() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, 27, context=3)
    x = torch.randint(0, 27, (32, 3))  # (B, T)
    logits = model(x)  # (B, V)
    assert logits.shape == (32, 27)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 27, (32,))).backward()
    rms = model.layers[3]
    assert type(rms).__name__ == "RMSNorm" and model.entries[3].layer.plugin == "extra"
    assert rms.weight.grad is not None and rms.weight.grad.abs().sum() > 0
    # the linear under hardswishish trains: the custom op's backward carries the gradient
    assert model.layers[5].weight.grad.abs().sum() > 0


def test_custom_op_forward_and_backward_match_the_formula() -> None:
    x = torch.linspace(-5, 5, 41, dtype=torch.float64, requires_grad=True)
    got = torch.ops.layerzoo_extra.hardswishish(x)
    want = x * torch.clamp(x + 3, 0, 6) / 6
    assert torch.allclose(got, want, atol=1e-12)
    x_inner = (torch.rand(20, dtype=torch.float64) * 10 - 5).requires_grad_()  # avoid kinks
    assert torch.autograd.gradcheck(torch.ops.layerzoo_extra.hardswishish, (x_inner,))


def test_its_layer_declares_the_onnx_translation_for_its_custom_op() -> None:
    from layerzoo_extra.onnx import hardswishish_onnx

    layer = get_registry().layer("extra:hardswishish")
    assert layer.translation_table() == {
        torch.ops.layerzoo_extra.hardswishish.default: hardswishish_onnx}
    model = build_model(SPEC, 27, context=3)
    assert model.translation_table() == layer.translation_table()
    assert get_registry().layer("extra:swish").translation_table() == {}


def test_its_preset_is_listed_and_builds(cli) -> None:
    out = cli("presets").output
    line = next(ln for ln in out.splitlines() if ln.startswith("extra-mlp "))
    model = build_model("extra-mlp", 27)
    assert line.split()[1:3] == ["extra", f"{model.num_parameters():,}"]
    # its bare names mean its own layers, even where a built-in has taken one of them
    assert [(e.layer.plugin, e.layer.name) for e in model.entries][3:5] == [
        ("extra", "rmsnorm"), ("extra", "swish")]


def test_load_plugins_env_selects_third_party_plugins(monkeypatch, cli) -> None:
    monkeypatch.setenv("LAYERZOO_LOAD_PLUGINS", "other")
    reg = Registry.load()
    assert reg.plugins["extra"].skipped
    assert all(reg.plugins[layer.plugin].builtin for layer in reg.layers.values())
    assert BUILTIN_LAYERS <= set(reg.layers)
    with pytest.raises(PluginError, match=r"^unknown layer 'swish'"):
        reg.layer("swish")
    with pytest.raises(PluginError) as e:
        reg.layer("extra:swish")
    assert str(e.value) == ("unknown layer 'extra:swish': plugin 'extra' (layerzoo-extra 0.3.1, "
                            "entry point extra = layerzoo_extra) is not loaded (not in "
                            "LAYERZOO_LOAD_PLUGINS)")
    line = next(ln for ln in cli("plugins").output.splitlines() if ln.startswith("extra "))
    assert line.endswith("not loaded (not in LAYERZOO_LOAD_PLUGINS)")

    monkeypatch.setenv("LAYERZOO_LOAD_PLUGINS", "")  # set but empty: no third-party plugin
    reg = Registry.load()
    assert all(reg.plugins[layer.plugin].builtin for layer in reg.layers.values())
    assert all(reg.plugins[preset.plugin].builtin for preset in reg.presets.values())
    assert BUILTIN_LAYERS <= set(reg.layers)
    assert {"bigram", "mlp", "mlp-bn", "deep-bn", "wavenet"} <= set(reg.presets)

    monkeypatch.setenv("LAYERZOO_LOAD_PLUGINS", "extra, other")
    reg = Registry.load()
    assert all(reg.layer(f"extra:{name}") for name in EXTRA_LAYERS)


# -- broken plugins -------------------------------------------------------------------------

@pytest.mark.parametrize("package", sorted(BROKEN))
def test_broken_plugin_is_reported_and_the_others_load(package, fake_install) -> None:
    plugin, problem = BROKEN[package]
    fake_install(package)
    reg = Registry.load()
    assert reg.failures() == [problem]
    assert all(reg.layer(f"extra:{name}") for name in EXTRA_LAYERS) and "extra-mlp" in reg.presets
    assert BUILTIN_LAYERS <= set(reg.layers)
    assert reg.plugins[plugin].version == "0.0.1"
    with pytest.warns(PluginWarning) as caught:
        get_registry()
    assert [str(w.message) for w in caught] == reg.problems()


@pytest.mark.parametrize("package", sorted(BROKEN))
def test_broken_plugin_is_an_error_in_strict_mode(package, fake_install, monkeypatch,
                                                  cli) -> None:
    plugin, problem = BROKEN[package]
    fake_install(package)
    with pytest.raises(PluginError) as e:
        Registry.load(strict=True)
    assert str(e.value) == f"{problem} (strict mode: LAYERZOO_STRICT_PLUGINS)"
    monkeypatch.setenv("LAYERZOO_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError) as e:
        get_registry()
    assert str(e.value) == f"{problem} (strict mode: LAYERZOO_STRICT_PLUGINS)"
    monkeypatch.delenv("LAYERZOO_STRICT_PLUGINS")
    result = cli("--strict-plugins", "layers")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == f"error: {problem} (strict mode: LAYERZOO_STRICT_PLUGINS)\n"


def test_non_strict_cli_warns_once_and_marks_the_failure(fake_install, cli) -> None:
    fake_install("hook_raises")
    problems = Registry.load().problems()
    for command in ("plugins", "layers"):
        result = cli(command)
        assert result.exit_code == 0
        assert result.stderr == "".join(f"warning: {p}\n" for p in problems)
        assert "warning" not in result.stdout  # once, on stderr only
    line = next(ln for ln in cli("plugins").stdout.splitlines()
                if ln.startswith("broken_hook "))
    assert line.split()[:6] == ["broken_hook", "0.0.1", "installed", "layerzoo-broken-hook",
                                "layerzoo_broken_hook", "nothing"]
    assert line.endswith("FAILED: raised in layerzoo_register_layers: ValueError: the layer "
                         "table is corrupt")


def test_a_builtin_name_reused_by_a_plugin_stays_the_builtins(fake_install, cli) -> None:
    fake_install("duplicate")
    reg = Registry.load(strict=True)  # reusing a name is not a failure: strict mode loads
    assert reg.failures() == [] and DUPLICATE in reg.problems()
    assert reg.layer("tanh").plugin == "activations"
    assert reg.layer("duplicate:tanh").doc == "another tanh"
    model = build_model(["embedding", "flatten", "duplicate:tanh", "tanh", "linear"], 27,
                        registry=reg)
    assert [e.layer.plugin for e in model.entries][2:4] == ["duplicate", "activations"]
    assert [e.label for e in model.entries][2:4] == ["entry 2 (duplicate:tanh)",
                                                     "entry 3 (tanh)"]
    result = cli("summary", "mlp-bn")  # every built-in preset still builds
    assert result.exit_code == 0 and f"warning: {DUPLICATE}" in result.stderr.splitlines()
    line = next(ln for ln in cli("plugins").stdout.splitlines() if ln.startswith("duplicate "))
    assert "layers: duplicate:tanh" in line and line.endswith(
        "CLASH: layer 'tanh' is a built-in name: this plugin's is reachable only as "
        "'duplicate:tanh'")
    listing = cli("layers").stdout.splitlines()
    assert "duplicate:tanh  [duplicate 0.0.1]  another tanh" in listing
    assert any(ln.startswith("tanh  [activations ") for ln in listing)


def _plugin_package(root: Path, name: str, layers: list[str]) -> Path:
    """A third-party plugin package registering identity layers with these names."""
    package = root / name
    package.mkdir()
    (package / "pyproject.toml").write_text(textwrap.dedent(f"""
        [project]
        name = "layerzoo-{name}"
        version = "1.2"
        [project.entry-points.layerzoo]
        {name} = "layerzoo_{name}"
        [tool.setuptools]
        py-modules = ["layerzoo_{name}"]
    """), encoding="utf-8")
    (package / f"layerzoo_{name}.py").write_text(textwrap.dedent(f"""
        from torch import nn
        from zoo import LayerType, hookimpl
        @hookimpl
        def layerzoo_register_layers(register):
            for name in {layers!r}:
                register(LayerType(name=name, doc="identity from {name}", gain=1.0,
                                   shape=lambda s, p, pl: s,
                                   build=lambda s, p, pl: nn.Identity()))
    """), encoding="utf-8")
    return package


def test_two_plugins_sharing_a_name_refuse_the_bare_name(fake_install, cli, tmp_path) -> None:
    fake_install(_plugin_package(tmp_path, "rival", ["swish"]))
    reg = Registry.load()
    both = ("plugin 'extra' (layerzoo-extra 0.3.1, entry point extra = layerzoo_extra) and "
            "plugin 'rival' (layerzoo-rival 1.2, entry point rival = layerzoo_rival)")
    assert reg.failures() == []
    assert (f"layer 'swish' is registered by {both}; the bare name is refused, write "
            "'extra:swish' or 'rival:swish'") in reg.problems()
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({"model": {"layers": ["embedding", "flatten", "swish",
                                                     "linear"]}}))
    result = cli("summary", str(spec))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        f"error: {spec}: entry 2: layer 'swish' is ambiguous: it is registered by {both}; "
        "write 'extra:swish' or 'rival:swish'")
    assert "uninstall" not in result.stderr
    spec.write_text(json.dumps({"model": {"layers": ["embedding", "flatten", "rival:swish",
                                                     "extra:swish", "linear"]}}))
    assert cli("summary", str(spec)).exit_code == 0
    assert cli("summary", "extra-mlp").exit_code == 0  # its preset means its own swish
    listing = cli("layers").stdout.splitlines()
    assert any(ln.startswith("extra:swish  [extra ") for ln in listing)
    assert any(ln.startswith("rival:swish  [rival ") for ln in listing)
    rows = cli("plugins").stdout.splitlines()
    for plugin in ("extra", "rival"):
        row = next(ln for ln in rows if ln.startswith(plugin + " "))
        assert "CLASH: " in row  # extra's rmsnorm clashes with the built-in one as well
        assert ("layer 'swish' is registered by another plugin too: this plugin's is "
                f"reachable only as '{plugin}:swish'") in row


@pytest.mark.filterwarnings("ignore::zoo.registry.PluginWarning")  # train's default registry
def test_a_run_trained_before_a_clashing_plugin_still_works(fake_install, tmp_path,
                                                             tiny_words) -> None:
    from zoo.export.onnx import export_run
    from zoo.export.runtime import OnnxModel
    from zoo.rundir import open_run
    from zoo.sampling import sample
    from zoo.train import train

    out = tmp_path / "run"
    train("extra-mlp", data=tiny_words, out=out, overrides={"steps": 4, "eval_every": 2},
          progress=False, log=lambda line: None)
    recorded = json.loads((out / "spec.json").read_text())["model"]["layers"]
    assert recorded[:5] == [{"type": "embedding:embedding", "dim": 10}, "reshape:flatten",
                            {"type": "linear:linear", "out": 128, "bias": False},
                            "extra:rmsnorm", "extra:swish"]
    # now a plugin arrives that shares every bare name the run used of extra's
    fake_install(_plugin_package(tmp_path, "rival", ["rmsnorm", "swish", "hardswishish"]))
    reg = Registry.load()
    with pytest.raises(SpecError, match="'swish' is ambiguous"):
        build_model(["embedding", "flatten", "swish", "linear"], 27, registry=reg)
    run = open_run(out, registry=reg)
    assert [e.layer.plugin for e in run.model.entries][3:5] == ["extra", "extra"]
    train(None, out=out, resume=True, progress=False, log=lambda line: None)
    model = OnnxModel.load(export_run(out))
    words = sample(model.logits, vocab=model.vocab, context=model.context, n=3, seed=0)
    assert len(words) == 3


def test_layer_whose_build_raises_is_named_with_its_plugin(fake_install, cli, tmp_path) -> None:
    fake_install("build_raises")
    reg = Registry.load(strict=True)  # it registers fine: the failure comes at build time
    assert reg.layers["explode"].plugin == "broken_build"
    message = ("<python>: entry 2 (explode): building it in plugin 'broken_build' raised "
               "RuntimeError: out of cheese")
    with pytest.raises(SpecError) as e:
        build_model(["embedding", "flatten", "explode", "linear"], 27, registry=reg)
    assert str(e.value) == message
    assert build_model("mlp", 27, registry=reg).num_parameters() == 11_897  # others still work
    spec = tmp_path / "explode.json"
    spec.write_text('{"model": {"layers": ["embedding", "flatten", "explode", "linear"]}}')
    result = cli("summary", str(spec))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines()[-1] == (f"error: {spec}: entry 2 (explode): building it "
                                              "in plugin 'broken_build' raised RuntimeError: "
                                              "out of cheese")


def test_broken_plugins_through_the_installed_cli(fake_install, zoo_subprocess, tmp_path) -> None:
    site = fake_install(*BROKEN, "build_raises", "duplicate")
    spec = tmp_path / "explode.json"
    spec.write_text('{"model": {"layers": ["embedding", "flatten", "explode", "linear"]}}')
    env = {"PYTHONPATH": str(site)}
    expected = Registry.load().problems()

    loose = zoo_subprocess("summary", "extra-mlp", env=env)
    assert loose.returncode == 0, loose.stderr
    assert loose.stderr.splitlines() == [f"warning: {p}" for p in expected]
    assert {p for _, p in BROKEN.values()} | {DUPLICATE} <= set(expected)
    extra_only = Registry.load(allow=["extra"])
    total = f"{build_model('extra-mlp', 27, registry=extra_only).num_parameters():,}"
    assert loose.stdout.splitlines()[-1].split() == ["total", total]

    strict = zoo_subprocess("summary", str(spec), env={**env, "LAYERZOO_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2
    assert strict.stdout == "" and "Traceback" not in strict.stderr
    (line,) = strict.stderr.splitlines()
    assert line.startswith("error: plugin '")
    assert line.endswith(" (strict mode: LAYERZOO_STRICT_PLUGINS)")
    for _, problem in BROKEN.values():
        assert problem in line
    assert "duplicate" not in line  # reusing a built-in name is not a failure


def test_top_level_plugins_and_export_are_not_installed(tmp_path) -> None:
    code = ("import importlib\n"
            "for name in ('plugins', 'export', 'zoo.plugins', 'zoo.export'):\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "        print(name, 'ok')\n"
            "    except ModuleNotFoundError as e:\n"
            "        print(name, 'missing', e.name)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True, timeout=60).stdout
    assert out.splitlines() == ["plugins missing plugins", "export missing export",
                                "zoo.plugins ok", "zoo.export ok"]


NOISY = '''
import warnings

import torch
from torch import nn

from zoo import LayerType, hookimpl


class Noisy(nn.Module):
    def forward(self, x):
        warnings.warn("noisy layer says hello", UserWarning)
        warnings.warn("an old API", DeprecationWarning)  # the tools' business: dropped
        return torch.nn.functional.softmax(x) * x.shape[-1]  # torch warns: no dim given


@hookimpl
def layerzoo_register_layers(register):
    register(LayerType(name="noisy", doc="warns", gain=1.0, shape=lambda s, p, pl: s,
                       build=lambda s, p, pl: Noisy()))
'''


def test_export_warnings_are_one_line_naming_the_layer_and_plugin(fake_install,
                                                                   tmp_path) -> None:
    import warnings

    from zoo.capture import LayerWarning
    from zoo.export.onnx import export_onnx

    package = _plugin_package(tmp_path, "loud", [])
    (package / "layerzoo_loud.py").write_text(NOISY, encoding="utf-8")
    fake_install(package)
    model = build_model(["embedding", "flatten", {"type": "linear", "out": 8}, "noisy",
                         "linear"], 27, registry=Registry.load())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        export_onnx(model, tmp_path / "m.onnx", vocab=[".", *"abcdefghijklmnopqrstuvwxyz"])
    assert [(w.category, str(w.message)) for w in caught] == [(
        LayerWarning, "ONNX export: entry 3 (noisy) of plugin 'loud' warned: UserWarning: "
        "noisy layer says hello; UserWarning: Implicit dimension choice for softmax has been "
        "deprecated. Change the call to include dim=X as an argument.")]
