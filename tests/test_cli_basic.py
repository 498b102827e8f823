"""The read-only commands: zoo layers, plugins, presets, summary; and how errors look."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest

from zoo.plugins import DEFAULT_PLUGINS
from zoo.registry import get_registry

VERSION = importlib.metadata.version("layerzoo")


@pytest.fixture(autouse=True)
def _clean(fresh_registry: None) -> None:
    """No plugin env vars from the caller's shell; a fresh registry per test."""


def test_layers_lists_every_layer_with_plugin_version_and_parameters(cli) -> None:
    result = cli("layers")
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    heads = [ln for ln in lines if not ln.startswith(" ")]
    assert [h.split("  ")[0] for h in heads] == sorted(get_registry().layers)
    assert (f"linear  [linear {VERSION}]  Affine map over the last axis, y = x W^T + b (works "
            "on [B, C] and [B, T, C]).") in heads
    assert ("    bias: true or false, default True — learn an additive bias (initialised to "
            "zero)") in lines
    assert "    init: one of 'kaiming', 'xavier', 'normal', 'zeros', default 'kaiming' — " \
           "weights ~ N(0, s): s = gain/sqrt(fan_in), gain*sqrt(2/(fan_in+fan_out)), gain, " \
           "or all zeros" in lines
    assert f"tanh  [activations {VERSION}]  tanh(x); init gain 5/3" in heads
    # bounds and defaults, as validation enforces them
    assert ("    n: an integer >= 1, default 2 — how many consecutive positions to merge"
            in lines)
    assert ("    p: a finite number >= 0 and <= 1, default 0.1 — probability of zeroing each "
            "feature while training") in lines


def test_plugins_lists_builtins_with_what_they_registered(cli) -> None:
    result = cli("plugins")
    assert result.exit_code == 0 and result.stderr == ""
    rows = [line.split(None, 5) for line in result.stdout.splitlines()]
    assert rows[0] == ["plugin", "version", "kind", "distribution", "module", "registered"]
    by_name = {r[0]: r[1:] for r in rows[1:]}
    assert by_name["norm"] == [VERSION, "built-in", "layerzoo", "zoo.plugins.norm",
                               "layers: batchnorm, layernorm"]
    assert by_name["presets"][:4] == [VERSION, "built-in", "layerzoo", "zoo.plugins.presets"]
    assert {"bigram", "deep-bn", "mlp-bn", "mlp", "wavenet"} <= set(
        by_name["presets"][4].removeprefix("presets: ").split(", "))
    assert list(by_name)[:len(DEFAULT_PLUGINS)] == [m.rsplit(".", 1)[-1]
                                                    for m in DEFAULT_PLUGINS]


def test_plugins_json_is_one_document_for_tools(cli) -> None:
    result = cli("plugins", "--json")
    assert result.exit_code == 0 and result.stderr == ""
    doc = json.loads(result.stdout)
    assert doc["problems"] == []
    norm = next(p for p in doc["plugins"] if p["plugin"] == "norm")
    assert norm == {"plugin": "norm", "status": "ok", "builtin": True,
                    "distribution": "layerzoo", "version": VERSION, "entry_point": None,
                    "module": "zoo.plugins.norm", "layers": ["batchnorm", "layernorm"],
                    "presets": [], "error": None, "clashes": []}


def test_presets_lists_the_zoo_with_sizes(cli) -> None:
    result = cli("presets")
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1:3] for line in result.stdout.splitlines()[1:]}
    assert rows["mlp-bn"] == ["presets", "12,097"]
    assert rows["wavenet"] == ["presets", "76,579"]
    assert rows["bigram"] == ["presets", "729"]
    assert set(rows) == set(get_registry().presets)
    assert cli("presets", "--vocab", "30").stdout.split("\n")[1].split()[:3] == [
        "bigram", "presets", "900"]


@pytest.mark.parametrize("name, total", [("mlp-bn", "12,097"), ("wavenet", "76,579")])
def test_summary_prints_layers_shapes_and_the_total(cli, name: str, total: str) -> None:
    result = cli("summary", name)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[-1].split() == ["total", total]
    assert lines[0] == f"{name}: context {8 if name == 'wavenet' else 3}, vocabulary 27"


def test_summary_of_mlp_bn_row_by_row(cli) -> None:
    lines = cli("summary", "mlp-bn").stdout.splitlines()
    assert [ln.split() for ln in lines[2:]] == [
        ["input", "(token", "ids)", "(3,)"],
        ["entry", "0", "(embedding)", "embedding", "(3,", "10)", "270"],
        ["entry", "1", "(flatten)", "flatten", "(30,)", "0"],
        ["entry", "2", "(linear)", "linear", "(200,)", "6,000"],
        ["entry", "3", "(batchnorm)", "batchnorm", "(200,)", "400"],
        ["entry", "4", "(tanh)", "tanh", "(200,)", "0"],
        ["entry", "5", "(linear)", "linear", "(27,)", "5,427"],
        ["total", "12,097"]]


def test_summary_options_and_spec_files(cli, tmp_path: Path) -> None:
    lines = cli("summary", "mlp", "--vocab", "10", "--context", "5").stdout.splitlines()
    assert lines[0] == "mlp: context 5, vocabulary 10"
    assert lines[-1].split() == ["total", f"{10 * 10 + 50 * 200 + 200 + 200 * 10 + 10:,}"]
    spec = tmp_path / "tiny.toml"
    spec.write_text('[model]\ncontext = 2\nlayers = [{ type = "embedding", dim = 3 }, '
                    '"flatten", "linear"]\n', encoding="utf-8")
    result = cli("summary", str(spec))
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1].split() == ["total", f"{27 * 3 + 6 * 27 + 27:,}"]


def test_qualified_names_on_the_command_line_and_in_specs(cli, tmp_path: Path) -> None:
    plain = cli("summary", "mlp").stdout.splitlines()
    qualified = cli("summary", "presets:mlp").stdout.splitlines()
    assert qualified[0] == "presets:mlp: context 3, vocabulary 27"
    assert qualified[1:] == plain[1:]
    spec = tmp_path / "q.toml"
    spec.write_text('[model]\nlayers = [{ type = "embedding:embedding", dim = 3 }, '
                    '"reshape:flatten", "activations:tanh", "linear"]\n', encoding="utf-8")
    result = cli("summary", str(spec))
    assert result.exit_code == 0
    assert [ln.split()[2] for ln in result.stdout.splitlines()[3:6]] == [
        "(embedding)", "(flatten)", "(tanh)"]  # labels use the name a user would write
    wrong = cli("summary", "presest:mlp")
    assert wrong.exit_code == 2 and wrong.stderr == (
        "error: unknown preset 'presest:mlp': no plugin named 'presest' (did you mean "
        "'presets'?); `zoo presets` lists presets\n")


def test_a_preset_wins_over_a_file_of_the_same_name_here(cli, tmp_path: Path,
                                                         monkeypatch) -> None:
    """A bare word is a preset if one is registered; ./NAME (or a path) is always the file."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "mlp"  # a run directory (spec.json inside) named like a preset
    run.mkdir()
    (run / "spec.json").write_text(json.dumps(
        {"model": {"context": 2, "layers": [{"type": "embedding", "dim": 3}, "flatten",
                                            "linear"]}}), encoding="utf-8")
    (run / "vocab.json").write_text(json.dumps(list(".abc")), encoding="utf-8")
    assert cli("summary", "mlp").stdout.splitlines()[0] == "mlp: context 3, vocabulary 27"
    trained = cli("train", "./mlp", "--steps", "1")
    assert trained.exit_code == 2 and trained.stderr == (
        "error: mlp is a run directory, not a spec: give mlp/spec.json to train its spec "
        "anew, or `zoo train --resume mlp` to continue it\n")
    (tmp_path / "tiny").write_text('[model]\nlayers = ["embedding", "flatten", "linear"]\n',
                                   encoding="utf-8")
    result = cli("summary", "tiny")  # no preset is called that: the file
    assert result.exit_code == 0 and result.stdout.startswith("tiny: context 3")
    (tmp_path / "empty").mkdir()
    empty = cli("summary", "empty")
    assert empty.exit_code == 2 and "empty is a directory, not a spec file" in empty.stderr


def test_a_typo_in_a_preset_name_is_one_line_with_did_you_mean(cli) -> None:
    result = cli("summary", "wavnet")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == ("error: no preset or spec file named 'wavnet' (did you mean "
                             "'wavenet'?); `zoo presets` lists presets\n")


def test_an_unknown_layer_in_a_spec_file(cli, tmp_path: Path) -> None:
    spec = tmp_path / "typo.json"
    spec.write_text('{"model": {"layers": ["embedding", "flatten", "layernrom", "linear"]}}')
    result = cli("summary", str(spec))
    assert result.exit_code == 2
    assert result.stderr == (f"error: {spec}: entry 2: unknown layer 'layernrom' (did you mean "
                             "'layernorm'?)\n")


def test_a_spec_file_syntax_error_names_file_and_line(cli, tmp_path: Path) -> None:
    spec = tmp_path / "broken.toml"
    spec.write_text('[model]\ncontext = 3\nlayers = ["tanh" "linear"]\n', encoding="utf-8")
    result = cli("summary", str(spec))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith(f"error: {spec}:3: invalid TOML: ")
    assert result.stderr.count("\n") == 1


def test_debug_shows_the_traceback(zoo_subprocess) -> None:
    debug = zoo_subprocess("--debug", "summary", "wavnet")
    assert debug.returncode == 1
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert debug.stderr.rstrip().endswith(
        "zoo.errors.SpecError: no preset or spec file named 'wavnet' (did you mean 'wavenet'?); "
        "`zoo presets` lists presets")


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0 and VERSION in result.stdout


def test_train_help_names_the_default_preset_the_library_uses(cli) -> None:
    from zoo.spec import DEFAULT_PRESET

    result = cli("train", "--help")
    assert result.exit_code == 0, result.output
    assert f"default {DEFAULT_PRESET})" in " ".join(result.output.split())
    assert DEFAULT_PRESET in get_registry().presets
