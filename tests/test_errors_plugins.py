"""Bad-input matrix, plugins: each broken plugin of tests/thirdparty/broken through the CLI.

By default a broken plugin is isolated: the commands still work, a warning line names the
plugin and the reason, and the built-in layers and presets still build. In strict mode
(``LAYERZOO_STRICT_PLUGINS=1`` or ``zoo --strict-plugins``) it is one clear error, exit 2.
"""

from __future__ import annotations

import json

import pytest
from matrix import assert_clean_error, snapshot

from zoo.build import build_model
from zoo.registry import Registry

BUILTIN_PRESETS = ["bigram", "deep-bn", "mlp", "mlp-bn", "wavenet"]
TANH_FREE = {"bigram"}  # the only built-in preset a contested 'tanh' leaves buildable
BOTH = "'activations' and 'duplicate'"

# package folder -> (plugin name, what the warning / strict error says after the name, or None
# for a plugin that loads fine and fails only when its layer is built)
BROKEN = {
    "import_error": ("broken_import", "failed to load: ModuleNotFoundError: No module named "
                     "'layerzoo_missing_dependency'"),
    "hook_raises": ("broken_hook", "raised in layerzoo_register_layers: ValueError: the layer "
                    "table is corrupt"),
    "duplicate": ("duplicate", f"layer 'tanh' is registered by more than one plugin: {BOTH}"),
    "bad_declaration": ("bad_declaration", "invalid layer 'BadLayer': name 'BadLayer' is not "
                        "snake_case"),
    "build_raises": ("broken_build", None),
}
PACKAGES = sorted(BROKEN)
FAILING = [p for p in PACKAGES if BROKEN[p][1] is not None]
STRICT = [pytest.param(["--strict-plugins"], None, id="flag"),
          pytest.param([], {"LAYERZOO_STRICT_PLUGINS": "1"}, id="env")]
EXPLODE = {"model": {"layers": ["embedding", "flatten", "explode", "linear"]}}


def warnings_of(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(line.startswith("warning: ") for line in lines), stderr
    return lines


def names_the_plugin(line: str, package: str) -> None:
    plugin, reason = BROKEN[package]
    assert f"'{plugin}'" in line and reason in line, line
    assert "Traceback" not in line


# -- isolated by default ---------------------------------------------------------------------

@pytest.mark.parametrize("command", ["layers", "plugins"])
@pytest.mark.parametrize("package", PACKAGES)
def test_listing_still_works_and_names_the_broken_plugin(cli, fake_install, package, command):
    fake_install(package)
    result = cli(command)
    assert result.exit_code == 0, result.output
    plugin, reason = BROKEN[package]
    lines = warnings_of(result.stderr)
    if reason is None:  # registers fine: listed like any other plugin, nothing to warn about
        assert lines == []
        assert "explode" in result.stdout and "broken_build" in result.stdout
    else:
        (line,) = lines
        names_the_plugin(line, package)
    for builtin in ("embedding", "linear", "batchnorm", "flatten_consecutive"):
        assert builtin in result.stdout
    if command == "plugins" and package not in ("duplicate", "build_raises"):
        row = next(ln for ln in result.stdout.splitlines() if ln.startswith(plugin + " "))
        assert "FAILED" in row and reason.split(":")[0] in row


@pytest.mark.parametrize("package", PACKAGES)
def test_builtin_presets_still_build(cli, fake_install, package):
    fake_install(package)
    reg = Registry.load()
    for preset in BUILTIN_PRESETS:
        if package == "duplicate" and preset not in TANH_FREE:
            continue
        assert build_model(preset, 27, registry=reg).num_parameters() > 0
    listing = cli("presets")
    assert listing.exit_code == 0
    invalid = {ln.split()[0] for ln in listing.stdout.splitlines() if " invalid " in ln}
    assert invalid == (set(BUILTIN_PRESETS) - TANH_FREE if package == "duplicate" else set())
    summary = cli("summary", "bigram")
    assert summary.exit_code == 0 and summary.stdout.splitlines()[-1].split() == ["total", "729"]


@pytest.mark.parametrize("package", FAILING)
def test_summary_of_a_builtin_preset_warns_once_and_succeeds(cli, fake_install, package):
    fake_install(package)
    result = cli("summary", "mlp" if package != "duplicate" else "bigram")
    assert result.exit_code == 0, result.output
    (line,) = warnings_of(result.stderr)
    names_the_plugin(line, package)


def test_contested_name_is_an_error_naming_both_plugins_where_it_is_used(cli, fake_install,
                                                                          tmp_path):
    fake_install("duplicate")
    result = cli("summary", "mlp-bn")
    assert result.exit_code == 2 and result.stdout == ""
    warning, error = result.stderr.splitlines()
    assert warning.startswith("warning: ") and BOTH in warning
    assert error.startswith("error: preset 'mlp-bn'") and "entry 4: layer 'tanh' is " \
        f"registered by both {BOTH}; uninstall one, or pick one with LAYERZOO_LOAD_PLUGINS" in error
    before = snapshot(tmp_path)
    out = tmp_path / "run"
    trained = cli("train", "mlp", "--out", str(out), "--steps", "1")
    assert trained.exit_code == 2 and f"registered by both {BOTH}" in trained.stderr
    assert snapshot(tmp_path) == before and not out.exists()


def test_all_broken_plugins_at_once_are_each_reported(cli, fake_install):
    fake_install(*PACKAGES)
    result = cli("plugins")
    assert result.exit_code == 0
    lines = warnings_of(result.stderr)
    assert len(lines) == len(FAILING)
    for package in FAILING:
        names_the_plugin(next(ln for ln in lines if f"'{BROKEN[package][0]}'" in ln), package)
    assert cli("summary", "extra-mlp").exit_code == 0  # a good third-party plugin still works


# -- strict mode ----------------------------------------------------------------------------

@pytest.mark.parametrize("args,env", STRICT)
@pytest.mark.parametrize("command", [["layers"], ["summary", "bigram"]])
@pytest.mark.parametrize("package", PACKAGES)
def test_strict_mode_is_one_clear_error(cli, fake_install, package, command, args, env):
    fake_install(package)
    result = cli(*args, *command, env=env)
    plugin, reason = BROKEN[package]
    if reason is None:  # nothing failed to load: strict mode has nothing to refuse
        assert result.exit_code == 0 and result.stderr == ""
        return
    line = assert_clean_error(result, f"'{plugin}'", reason,
                              "(strict mode: LAYERZOO_STRICT_PLUGINS)")
    assert result.stdout == ""
    if package == "duplicate":
        assert BOTH in line


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
