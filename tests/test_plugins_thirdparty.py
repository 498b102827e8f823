"""Third-party plugins through the real entry-point machinery.

``layerzoo-extra`` (tests/thirdparty/extra) is pip-installed into the venv; the broken plugins
(tests/thirdparty/broken) are installed per test into a temp folder on sys.path / PYTHONPATH.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import warnings

import pytest
import torch

from zoo.build import build_model
from zoo.errors import PluginError, SpecError
from zoo.registry import PluginWarning, Registry, get_registry

EXTRA_VERSION = "0.3.1"
EXTRA_LAYERS = ["swish", "rmsnorm", "hardswishish"]
BUILTIN_LAYERS = {"embedding", "linear", "batchnorm", "layernorm", "tanh", "relu", "sigmoid",
                  "identity", "leaky_relu", "gelu", "hardtanh", "flatten",
                  "flatten_consecutive", "dropout", "causal_self_attention",
                  "position_embedding", "last", "mean"}

# package folder -> (entry-point name, the exact problem line the registry reports)
BROKEN = {
    "import_error": ("broken_import", "plugin 'broken_import' failed to load: "
                     "ModuleNotFoundError: No module named 'layerzoo_missing_dependency'"),
    "hook_raises": ("broken_hook", "plugin 'broken_hook' raised in layerzoo_register_layers: "
                    "ValueError: the layer table is corrupt"),
    "duplicate": ("duplicate", "layer 'tanh' is registered by more than one plugin: "
                  "'activations' and 'duplicate'"),
    "bad_declaration": ("bad_declaration", "plugin 'bad_declaration' invalid layer 'BadLayer': "
                        "name 'BadLayer' is not snake_case (a-z, 0-9, _); parameter 'width' "
                        "has no doc"),
}
SPEC = [{"type": "embedding", "dim": 6}, "flatten", {"type": "linear", "out": 16},
        "rmsnorm", "swish", {"type": "linear", "out": 12}, "hardswishish", "linear"]


@pytest.fixture(autouse=True)
def _clean(fresh_registry: None) -> None:
    """Every test here starts without plugin env vars and with a fresh registry."""


# -- the good plugin --------------------------------------------------------------------------

def test_extra_is_discovered_through_its_entry_point() -> None:
    (ep,) = [e for e in importlib.metadata.entry_points(group="layerzoo") if e.name == "extra"]
    assert ep.value == "layerzoo_extra"
    assert ep.dist.name == "layerzoo-extra"
    reg = Registry.load()
    info = reg.plugins["extra"]
    assert (info.version, info.builtin, info.error) == (EXTRA_VERSION, False, None)
    assert info.layers == EXTRA_LAYERS and info.presets == ["extra-mlp"]
    for name in EXTRA_LAYERS:
        assert (reg.layers[name].plugin, reg.layers[name].version) == ("extra", EXTRA_VERSION)
    assert reg.problems() == []


def test_zoo_plugins_and_layers_list_it_with_its_version(cli) -> None:
    out = cli("plugins").output
    line = next(ln for ln in out.splitlines() if ln.startswith("extra "))
    assert line.split()[:3] == ["extra", EXTRA_VERSION, "installed"]
    assert line.endswith("layers: swish, rmsnorm, hardswishish; presets: extra-mlp")
    layers = cli("layers").output
    assert ("swish  [extra 0.3.1]  x * sigmoid(beta * x) (SiLU for beta = 1); init gain sqrt(2)"
            in layers.splitlines())
    assert ("    beta: a finite number, default 1.0 — slope inside the sigmoid: "
            "x * sigmoid(beta * x)") in layers.splitlines()


def test_its_layers_build_run_and_train_in_a_spec() -> None:
    torch.manual_seed(0)
    model = build_model(SPEC, 27, context=3)
    x = torch.randint(0, 27, (32, 3))  # (B, T)
    logits = model(x)  # (B, V)
    assert logits.shape == (32, 27)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 27, (32,))).backward()
    rms = model.layers[3]
    assert type(rms).__name__ == "RMSNorm"
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

    layer = get_registry().layer("hardswishish")
    assert layer.translation_table() == {
        torch.ops.layerzoo_extra.hardswishish.default: hardswishish_onnx}
    model = build_model(SPEC, 27, context=3)
    assert model.translation_table() == layer.translation_table()
    assert get_registry().layer("swish").translation_table() == {}


def test_its_preset_is_listed_and_builds(cli) -> None:
    out = cli("presets").output
    line = next(ln for ln in out.splitlines() if ln.startswith("extra-mlp "))
    model = build_model("extra-mlp", 27)
    assert line.split()[1:3] == ["extra", f"{model.num_parameters():,}"]
    assert [e.layer.name for e in model.entries][3:5] == ["rmsnorm", "swish"]


def test_load_plugins_env_selects_third_party_plugins(monkeypatch, cli) -> None:
    monkeypatch.setenv("LAYERZOO_LOAD_PLUGINS", "other")
    reg = Registry.load()
    assert reg.plugins["extra"].skipped and not set(EXTRA_LAYERS) & set(reg.layers)
    assert BUILTIN_LAYERS <= set(reg.layers)
    with pytest.raises(PluginError, match=r"^unknown layer 'swish'"):
        reg.layer("swish")
    line = next(ln for ln in cli("plugins").output.splitlines() if ln.startswith("extra "))
    assert line.endswith("not loaded (not in LAYERZOO_LOAD_PLUGINS)")

    monkeypatch.setenv("LAYERZOO_LOAD_PLUGINS", "")  # set but empty: no third-party plugin
    reg = Registry.load()
    assert set(reg.layers) == BUILTIN_LAYERS
    assert set(reg.presets) == {"bigram", "mlp", "mlp-bn", "deep-bn", "wavenet", "transformer"}

    monkeypatch.setenv("LAYERZOO_LOAD_PLUGINS", "extra, other")
    assert set(EXTRA_LAYERS) <= set(Registry.load().layers)


# -- broken plugins -------------------------------------------------------------------------

@pytest.mark.parametrize("package", sorted(BROKEN))
def test_broken_plugin_is_reported_and_the_others_load(package, fake_install) -> None:
    plugin, problem = BROKEN[package]
    fake_install(package)
    reg = Registry.load()
    assert reg.problems() == [problem]
    assert set(EXTRA_LAYERS) <= set(reg.layers) and "extra-mlp" in reg.presets
    assert BUILTIN_LAYERS - {"tanh"} <= set(reg.layers)
    assert reg.plugins[plugin].version == "0.0.1"
    with pytest.warns(PluginWarning) as caught:
        get_registry()
    assert [str(w.message) for w in caught] == [problem]


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


def test_non_strict_cli_warns_and_lists_the_failure(fake_install, cli) -> None:
    fake_install("hook_raises")
    result = cli("plugins")
    assert result.exit_code == 0
    assert result.stderr == f"warning: {BROKEN['hook_raises'][1]}\n"
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("broken_hook "))
    assert line.split()[:4] == ["broken_hook", "0.0.1", "installed", "nothing"]
    assert line.endswith("FAILED: raised in layerzoo_register_layers: ValueError: the layer "
                         "table is corrupt")


def test_duplicate_name_names_both_plugins_wherever_it_is_used(fake_install) -> None:
    fake_install("duplicate")
    reg = get_registry_quietly()
    both = ("layer 'tanh' is registered by both 'activations' and 'duplicate'; uninstall one, "
            "or pick one with LAYERZOO_LOAD_PLUGINS")
    with pytest.raises(PluginError) as e:
        reg.layer("tanh")
    assert str(e.value) == both
    with pytest.raises(SpecError) as e:
        build_model(["embedding", "flatten", "tanh", "linear"], 27, registry=reg)
    assert str(e.value) == f"<python>: entry 2: {both}"
    # no silent last-wins: the built-in keeps the name in `zoo plugins`, nobody gets the layer
    assert "tanh" in reg.plugins["activations"].layers
    assert "tanh" not in reg.plugins["duplicate"].layers and "tanh" not in reg.layers


def get_registry_quietly() -> Registry:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        return get_registry()


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
    assert result.stderr == (f"error: {spec}: entry 2 (explode): building it in plugin "
                             "'broken_build' raised RuntimeError: out of cheese\n")


def test_broken_plugins_through_the_installed_cli(fake_install, zoo_subprocess, tmp_path) -> None:
    site = fake_install(*BROKEN, "build_raises")
    spec = tmp_path / "explode.json"
    spec.write_text('{"model": {"layers": ["embedding", "flatten", "explode", "linear"]}}')
    env = {"PYTHONPATH": str(site)}

    loose = zoo_subprocess("summary", "extra-mlp", env=env)  # needs no contested 'tanh'
    assert loose.returncode == 0, loose.stderr
    assert sorted(loose.stderr.splitlines()) == sorted(f"warning: {p}" for _, p in
                                                       BROKEN.values())
    extra_only = Registry.load(allow=["extra"])
    total = f"{build_model('extra-mlp', 27, registry=extra_only).num_parameters():,}"
    assert loose.stdout.splitlines()[-1].split() == ["total", total]

    strict = zoo_subprocess("summary", str(spec), env={**env, "LAYERZOO_STRICT_PLUGINS": "1"})
    assert strict.returncode == 2
    assert strict.stdout == "" and "Traceback" not in strict.stderr
    (line,) = strict.stderr.splitlines()
    assert line.startswith("error: plugin 'bad_declaration' invalid layer 'BadLayer'")
    assert line.endswith(" (strict mode: LAYERZOO_STRICT_PLUGINS)")
    for _, problem in BROKEN.values():
        assert problem in line


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
