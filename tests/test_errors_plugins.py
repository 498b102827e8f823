"""Bad-input matrix, plugins: each broken plugin of tests/thirdparty/broken through the CLI.

By default a broken plugin is isolated: the commands still work, a warning line names the
plugin, its distribution and the reason, and the built-in layers and presets still build. In
strict mode (``LAYERZOO_STRICT_PLUGINS=1`` or ``zoo --strict-plugins``) a plugin that failed is
one clear error, exit 2. A plugin reusing a built-in name has not failed: it is warned about
once in both modes, and its layer is reachable only by its qualified name.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from matrix import assert_clean_error, snapshot

from zoo.build import build_model
from zoo.registry import Registry

BUILTIN_PRESETS = ["bigram", "deep-bn", "mlp", "mlp-bn", "wavenet"]

# package folder -> (plugin name, what the warning says after the plugin's name or None for a
# plugin that loads fine and fails only when its layer is built, and whether it failed)
BROKEN = {
    "import_error": ("broken_import", "failed to load: ModuleNotFoundError: No module named "
                     "'layerzoo_missing_dependency'", True),
    "hook_raises": ("broken_hook", "raised in layerzoo_register_layers: ValueError: the layer "
                    "table is corrupt", True),
    "duplicate": ("duplicate", "layer 'tanh' is a built-in name: this plugin's is reachable "
                  "only as 'duplicate:tanh'", False),
    "bad_declaration": ("bad_declaration", "invalid layer 'BadLayer': name 'BadLayer' is not "
                        "snake_case", True),
    "build_raises": ("broken_build", None, False),
}
PACKAGES = sorted(BROKEN)
WARNED = [p for p in PACKAGES if BROKEN[p][1] is not None]
FAILING = [p for p in PACKAGES if BROKEN[p][2]]
STRICT = [pytest.param(["--strict-plugins"], None, id="flag"),
          pytest.param([], {"LAYERZOO_STRICT_PLUGINS": "1"}, id="env")]
EXPLODE = {"model": {"layers": ["embedding", "flatten", "explode", "linear"]}}


def warnings_of(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(line.startswith("warning: ") for line in lines), stderr
    return lines


def names_the_plugin(line: str, package: str) -> None:
    plugin, reason, _ = BROKEN[package]
    dist = f"layerzoo-{package.replace('_', '-')}"
    assert f"plugin '{plugin}' (" in line and reason in line, line
    assert "0.0.1, entry point" in line and "layerzoo" in line, line
    assert dist in line or "layerzoo-broken-" in line, line
    assert "Traceback" not in line


# -- isolated by default ---------------------------------------------------------------------

@pytest.mark.parametrize("command", ["layers", "plugins"])
@pytest.mark.parametrize("package", PACKAGES)
def test_listing_still_works_and_names_the_broken_plugin(cli, fake_install, package, command):
    fake_install(package)
    result = cli(command)
    assert result.exit_code == 0, result.output
    plugin, reason, failed = BROKEN[package]
    lines = warnings_of(result.stderr)
    if reason is None:  # registers fine: listed like any other plugin, nothing to warn about
        assert lines == []
        assert "explode" in result.stdout and "broken_build" in result.stdout
    else:
        (line,) = lines
        names_the_plugin(line, package)
    for builtin in ("embedding", "linear", "batchnorm", "flatten_consecutive"):
        assert builtin in result.stdout
    if command == "plugins" and reason is not None:
        row = next(ln for ln in result.stdout.splitlines() if ln.startswith(plugin + " "))
        assert ("FAILED: " if failed else "CLASH: ") + reason.split(":")[0] in row


@pytest.mark.parametrize("package", PACKAGES)
def test_builtin_presets_still_build(cli, fake_install, package):
    fake_install(package)
    reg = Registry.load()
    for preset in BUILTIN_PRESETS:
        model = build_model(preset, 27, registry=reg)
        assert all(reg.plugins[e.layer.plugin].builtin for e in model.entries)
    listing = cli("presets")
    assert listing.exit_code == 0
    assert not [ln for ln in listing.stdout.splitlines() if " invalid " in ln]
    summary = cli("summary", "bigram")
    assert summary.exit_code == 0 and summary.stdout.splitlines()[-1].split() == ["total", "729"]


@pytest.mark.parametrize("package", WARNED)
def test_summary_of_a_builtin_preset_warns_once_and_succeeds(cli, fake_install, package):
    fake_install(package)
    result = cli("summary", "mlp")
    assert result.exit_code == 0, result.output
    (line,) = warnings_of(result.stderr)
    names_the_plugin(line, package)


def _sharing(root: Path, *plugins: str) -> list[Path]:
    """Plugin packages that each register a layer named 'shared'."""
    out = []
    for name in plugins:
        package = root / name
        package.mkdir()
        (package / "pyproject.toml").write_text(textwrap.dedent(f"""
            [project]
            name = "layerzoo-{name}"
            version = "0.{len(out) + 1}"
            [project.entry-points.layerzoo]
            {name} = "zoo_t_{name}"
            [tool.setuptools]
            py-modules = ["zoo_t_{name}"]
        """), encoding="utf-8")
        (package / f"zoo_t_{name}.py").write_text(textwrap.dedent("""
            from torch import nn
            from zoo import LayerType, hookimpl
            @hookimpl
            def layerzoo_register_layers(register):
                register(LayerType(name="shared", shape=lambda s, p, pl: s, gain=1.0,
                                   build=lambda s, p, pl: nn.Identity()))
        """), encoding="utf-8")
        out.append(package)
    return out


def test_a_name_two_plugins_share_is_refused_where_it_is_used(cli, fake_install, tmp_path):
    fake_install(*_sharing(tmp_path, "alpha", "beta"))
    spec = tmp_path / "shared.toml"
    spec.write_text('[model]\nlayers = ["embedding", "flatten", "shared", "linear"]\n')
    result = cli("summary", str(spec))
    assert result.exit_code == 2 and result.stdout == ""
    warning, error = result.stderr.splitlines()
    sources = ("plugin 'alpha' (layerzoo-alpha 0.1, entry point alpha = zoo_t_alpha) and plugin "
               "'beta' (layerzoo-beta 0.2, entry point beta = zoo_t_beta)")
    assert warning == (f"warning: layer 'shared' is registered by {sources}; the bare name is "
                       "refused, write 'alpha:shared' or 'beta:shared'")
    assert error == (f"error: {spec}: entry 2: layer 'shared' is ambiguous: it is registered by "
                     f"{sources}; write 'alpha:shared' or 'beta:shared'")
    before = snapshot(tmp_path)
    out = tmp_path / "run"
    trained = cli("train", str(spec), "--out", str(out), "--steps", "1")
    assert trained.exit_code == 2 and "write 'alpha:shared' or 'beta:shared'" in trained.stderr
    assert snapshot(tmp_path) == before and not out.exists()
    spec.write_text('[model]\nlayers = ["embedding", "flatten", "beta:shared", "linear"]\n')
    assert cli("summary", str(spec)).exit_code == 0


def test_all_broken_plugins_at_once_are_each_reported(cli, fake_install, allow_plugins):
    fake_install(*PACKAGES)
    allow_plugins("extra")
    result = cli("plugins")
    assert result.exit_code == 0
    lines = warnings_of(result.stderr)
    assert lines == [f"warning: {p}" for p in Registry.load().problems()]
    for package in WARNED:
        names_the_plugin(next(ln for ln in lines if f"'{BROKEN[package][0]}'" in ln), package)
    assert cli("summary", "extra-mlp").exit_code == 0  # a good third-party plugin still works


# -- strict mode ----------------------------------------------------------------------------

@pytest.mark.parametrize("args,env", STRICT)
@pytest.mark.parametrize("command", [["layers"], ["summary", "bigram"]])
@pytest.mark.parametrize("package", PACKAGES)
def test_strict_mode_is_one_clear_error(cli, fake_install, package, command, args, env):
    fake_install(package)
    result = cli(*args, *command, env=env)
    plugin, reason, failed = BROKEN[package]
    if not failed:  # nothing failed to load: strict mode has nothing to refuse
        assert result.exit_code == 0
        if reason is None:
            assert result.stderr == ""
        else:
            names_the_plugin(*warnings_of(result.stderr), package)
        return
    assert_clean_error(result, f"plugin '{plugin}' (", reason,
                       "(strict mode: LAYERZOO_STRICT_PLUGINS)")
    assert result.stdout == ""


@pytest.mark.parametrize("args,env", [pytest.param([], None, id="default"), *STRICT])
@pytest.mark.parametrize("command", ["summary", "train"])
def test_layer_whose_build_raises_is_one_line_naming_entry_and_plugin(
        cli, fake_install, tmp_path, args, env, command):
    fake_install("build_raises")
    spec = tmp_path / "explode.json"
    spec.write_text(json.dumps(EXPLODE))
    out = tmp_path / "run"
    extra = ["--out", str(out), "--steps", "1"] if command == "train" else []
    before = snapshot(tmp_path)
    result = cli(*args, command, str(spec), *extra, env=env)
    assert_clean_error(result, str(spec), "entry 2 (explode)", "plugin 'broken_build'",
                       "RuntimeError: out of cheese")
    assert snapshot(tmp_path) == before and not out.exists()


@pytest.mark.parametrize("command", [["layers"], ["plugins"], ["--strict-plugins", "summary",
                                                               "mlp"]])
def test_a_strict_setting_that_is_not_yes_or_no_is_one_clear_error(cli, command):
    result = cli(*command, env={"LAYERZOO_STRICT_PLUGINS": "maybe"})
    assert_clean_error(result, "LAYERZOO_STRICT_PLUGINS='maybe': expected 1, true, yes or on")
    assert result.stdout == ""
