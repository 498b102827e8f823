"""A plugin author's path without a layerzoo checkout: `zoo new-plugin` writes a package that
works as written, `zoo test-plugin` checks an installed plugin, and plugins written against an
earlier plugin API (tests/compat, frozen) keep working."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import pytest
from matrix import assert_clean_error, snapshot

import zoo
from zoo.plugincheck import check_plugin
from zoo.registry import ALLOW_ENV, PluginWarning, Registry
from zoo.testing import ConformanceError, check_layer

TESTS = Path(__file__).parent
COMPAT = sorted(p.parent for p in (TESTS / "compat").glob("*/pyproject.toml"))
BIN = Path(sys.executable).parent

# exact messages: only the built-in plugins load, plus what a test installs itself
pytestmark = pytest.mark.usefixtures("fresh_registry")


def test_the_plugin_api_is_versioned():
    assert zoo.PLUGIN_API == 1


# -- plugins frozen at earlier plugin APIs ------------------------------------------------------


@pytest.mark.parametrize("package", COMPAT, ids=[p.name for p in COMPAT])
@pytest.mark.slow  # the whole conformance kit on a frozen plugin
def test_a_plugin_written_for_an_earlier_api_still_works(package, fake_install):
    (plugin,) = tomllib.loads((package / "pyproject.toml").read_text())["project"][
        "entry-points"]["layerzoo"]
    fake_install(package)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # no deprecation, no clash: it loads clean
        registry = Registry.load()
    assert registry.plugins[plugin].error is None and not registry.problems()
    # not strict: a frozen plugin's nn.Linear may give other bits on two threads, which the kit
    # reports as a skipped threads check (zoo train keeps such a model on one thread)
    outcomes = list(check_plugin(plugin, registry=registry))
    failed = [o.line() for o in outcomes if o.status == "failed"]
    assert not failed, "\n".join(failed)
    presets = [o for o in outcomes if o.what.startswith("preset ")]
    assert presets and all("words identical" in o.detail for o in presets)


def test_a_parameter_may_be_called_like_a_block_key(fake_install):
    from zoo.build import build_model

    fake_install(TESTS / "compat" / "api1")
    registry = Registry.load()
    model = build_model([{"type": "scaled_tokens", "dim": 6},
                         {"type": "gated", "residual": False, "width": 5},  # a layer: it has type
                         {"residual": [{"type": "gated", "residual": True}]},  # a block: no type
                         "final_position", "linear"], 27, context=4, registry=registry)
    gated = [m for m in model.layers if type(m).__name__ == "Gated"]
    assert [g.residual for g in gated] == [False, True]


# -- zoo test-plugin -----------------------------------------------------------------------------


def test_test_plugin_names_each_failure_and_exits_1(cli, fake_install):
    fake_install("build_raises")
    result = cli("test-plugin", "broken_build")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == ("failed  layer 'broken_build:explode' on [B, T, C] = (4, 8): entry 1 "
                        "(explode): building it in plugin 'broken_build' raised RuntimeError: "
                        "out of cheese")
    assert lines[-1] == "plugin 'broken_build': 0 passed, 5 failed, 0 input shapes refused by " \
                        "the layer"


def test_test_plugin_of_an_unknown_plugin_is_one_line(cli):
    assert_clean_error(cli("test-plugin", "activatons"), "no plugin 'activatons' is installed "
                       "(did you mean 'activations'?); `zoo plugins` lists them")


def test_strict_check_layer_fails_a_skipped_check():
    check_layer("tanh", in_shape=(6,))  # features only: causality cannot be checked
    with pytest.raises(ConformanceError, match=r"fails the strict check: checks were skipped: "
                                               r"causality \(the layer was not checked on a "
                                               r"sequence\)"):
        check_layer("tanh", in_shape=(6,), strict=True)


# -- zoo new-plugin --------------------------------------------------------------------------


@pytest.mark.slow  # runs the package's own tests and trains it
def test_new_plugin_writes_a_package_that_installs_tests_and_trains(cli, tmp_path, fake_install):
    result = cli("new-plugin", "my_layers", "-o", str(tmp_path))
    assert result.exit_code == 0, result.output
    root = tmp_path / "layerzoo-my-layers"
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert written == [".github/workflows/test.yml", ".gitignore", "README.md",
                       "layerzoo_my_layers/__init__.py", "pyproject.toml",
                       "tests/test_layerzoo_my_layers.py"]
    assert sorted(result.stdout.split()) == sorted(str(root / p) for p in written)
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["layerzoo"] == {"my_layers": "layerzoo_my_layers"}
    assert "zoo test-plugin my_layers" in (root / ".github/workflows/test.yml").read_text()
    site = fake_install(root)
    env = {**os.environ, "PYTHONPATH": str(site), ALLOW_ENV: "my_layers"}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            "-k", "conformance", str(root / "tests")], capture_output=True,
                           text=True, env=env,
                           cwd=root, timeout=600)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout  # the kit per example (check_plugin: test-plugin above)
    trained = subprocess.run([str(BIN / "zoo"), "train", "my_layers-mlp", "--steps", "30",
                              "--out", str(tmp_path / "run")], capture_output=True, text=True,
                             env=env, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "trained" in trained.stdout and (tmp_path / "run" / "weights.safetensors").is_file()


@pytest.mark.parametrize("args,message", [
    (["new-plugin", "My-Layers"], "plugin name 'My-Layers' must be snake_case"),
    (["new-plugin", "ok", "-o", "{tmp}/nope"], "-o {tmp}/nope: no such folder"),
    (["new-plugin", "taken", "-o", "{tmp}"], "{tmp}/layerzoo-taken already exists; nothing was "
                                             "written"),
])
def test_new_plugin_refuses_in_one_line_and_writes_nothing(cli, tmp_path, args, message):
    (tmp_path / "layerzoo-taken").mkdir()
    (tmp_path / "layerzoo-taken" / "mine.txt").write_text("keep")
    before = snapshot(tmp_path)
    result = cli(*[a.format(tmp=tmp_path) for a in args])
    assert_clean_error(result, message.format(tmp=tmp_path))
    assert snapshot(tmp_path) == before
