"""Deployment files: clean of the exporting machine, int8 with a loss verdict, refused input."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import pytest
from lanes import slow_but
from matrix import assert_clean_error, snapshot

import zoo
from zoo.build import build_model
from zoo.errors import ArtifactError
from zoo.export.contract import INT8_DYNAMIC, LAYERZOO_KEYS, QUANTIZED_KEY
from zoo.export.onnx import export_onnx, export_run
from zoo.export.quantize import quantize_onnx
from zoo.export.runtime import OnnxModel
from zoo.export.web import build_site
from zoo.registry import ALLOW_ENV, get_registry, reset_registry

Exported = Callable[[str], tuple[Path, Path]]
ROOT = Path(zoo.__file__).resolve().parents[1]  # where the built-in plugins' sources live
VOCAB = tuple(".abcdefghijklmnopqrstuvwxyz")


def all_presets() -> list[str]:
    """Every preset of every installed plugin (the collection-time registry loads them all)."""
    return sorted(get_registry().presets)


@pytest.fixture
def every_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The default registry with every installed plugin, whatever the environment allows."""
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    reset_registry()
    yield
    reset_registry()


def test_third_party_preset_is_among_the_exported(every_plugin: None) -> None:
    assert "extra-mlp" in get_registry().presets  # the Makefile pip-installs thirdparty/extra


@pytest.mark.parametrize("preset", slow_but(all_presets(), "mlp-bn"))
def test_exported_file_carries_no_paths_or_source(preset: str, tmp_path: Path,
                                                  every_plugin: None) -> None:
    folder = tmp_path / "home" / "alice-secret-xyzzy" / "exports"
    folder.mkdir(parents=True)
    model = build_model(preset, len(VOCAB))
    path = export_onnx(model, folder / "model.onnx", vocab=VOCAB)
    data = path.read_bytes()
    sources = {str(ROOT), "alice-secret-xyzzy", "site-packages", 'File "'}
    extra = importlib.util.find_spec("layerzoo_extra")  # the third-party plugin's own folder
    if extra is not None and extra.origin:
        sources.add(str(Path(extra.origin).resolve().parent))
    assert [s for s in sources if s.encode() in data] == []
    proto = onnx.load_from_string(data)
    assert not [n for n in proto.graph.node if n.metadata_props or n.doc_string]
    assert not proto.doc_string and not proto.graph.doc_string
    assert {p.key for p in proto.metadata_props} <= set(LAYERZOO_KEYS)


def test_int8_file_is_smaller_keeps_metadata_and_is_judged_by_loss(exported: Exported,
                                                                    cli, tmp_path: Path) -> None:
    run_dir, fp32 = exported("mlp")
    out = tmp_path / "q.onnx"
    result = cli("export", str(run_dir), "--int8", "-o", str(out))
    assert result.exit_code == 0, result.output
    q, f = OnnxModel.load(out), OnnxModel.load(fp32)
    assert q.quantized == INT8_DYNAMIC and f.quantized is None
    assert {k: v for k, v in q.metadata.items() if k != QUANTIZED_KEY} == f.metadata
    assert out.stat().st_size < fp32.stat().st_size
    assert len(q.sample(20, seed=0)) == 20
    check = cli("check", str(run_dir), str(out))
    assert "validation loss: torch" in check.output and "drift" in check.output
    assert ("ok" in check.output) == (check.exit_code == 0)
    strict = cli("check", str(run_dir), str(out), "--max-loss-drift", "0")
    loose = cli("check", str(run_dir), str(out), "--max-loss-drift", "5")
    assert (strict.exit_code, loose.exit_code) in ((1, 0), (0, 0))
    assert loose.exit_code == 0 and "TOO HIGH" not in loose.output


def test_int8_of_an_onnx_file_and_refusal_of_a_quantised_one(exported: Exported, cli,
                                                             tmp_path: Path) -> None:
    _, fp32 = exported("mlp")
    q = quantize_onnx(fp32, tmp_path / "q.onnx")
    with pytest.raises(ArtifactError, match="already quantised"):
        quantize_onnx(q, tmp_path / "qq.onnx")
    result = cli("export", str(q), "--int8", "-o", str(tmp_path / "qq.onnx"))
    assert result.exit_code == 2 and "already quantised" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "qq.onnx").exists()


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf"])
def test_bad_max_loss_drift_is_one_line(exported: Exported, cli, value: str) -> None:
    run_dir, fp32 = exported("mlp")
    result = cli("check", str(run_dir), str(fp32), "--max-loss-drift", value)
    assert result.exit_code == 2 and "max_loss_drift" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("opset", ["99", "17", "0"])
def test_unsupported_opset_is_refused_and_nothing_written(exported: Exported, cli,
                                                          tmp_path: Path, opset: str) -> None:
    run_dir, _ = exported("mlp")
    out = tmp_path / "m.onnx"
    result = cli("export", str(run_dir), "--opset", opset, "-o", str(out))
    assert result.exit_code == 2 and f"opset {opset} is not supported" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_int8_is_known_from_the_graph_when_its_metadata_key_is_gone(exported: Exported, cli,
                                                                     tmp_path: Path) -> None:
    run_dir, fp32 = exported("mlp")
    proto = onnx.load(quantize_onnx(fp32, tmp_path / "q.onnx"), load_external_data=False)
    kept = [p for p in proto.metadata_props if p.key != QUANTIZED_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(proto.SerializeToString())
    assert OnnxModel.load(bare).quantized == INT8_DYNAMIC
    assert OnnxModel.load(fp32).quantized is None
    assert_clean_error(cli("export", str(bare), "--int8", "-o", str(tmp_path / "qq.onnx")),
                       "already quantised")
    check = cli("check", str(run_dir), str(bare), "--max-loss-drift", "5")
    assert check.exit_code == 0 and "drift" in check.output, check.output
    site = build_site(bare, tmp_path / "site")
    assert json.loads((site.path / "model.json").read_text())["quantized"] == INT8_DYNAMIC


RUN_FILES = ("weights.safetensors", "checkpoint.safetensors", "spec.json", "meta.json",
             "vocab.json", "metrics.jsonl", "other.onnx")


def test_no_write_path_touches_a_runs_own_files(exported: Exported, cli,
                                                tmp_path: Path) -> None:
    source, onnx_file = exported("mlp")
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    (tmp_path / "link.onnx").symlink_to(run_dir / "weights.safetensors")
    cases = [("export", str(run_dir), "-o", str(tmp_path / "link.onnx"))]
    for name in RUN_FILES:
        target = str(run_dir / name)
        cases += [("export", str(run_dir), "-o", target),
                  ("export", str(run_dir), "--int8", "-o", target),
                  ("export", str(onnx_file), "--int8", "-o", target)]
    cases += [("web", str(onnx_file), "-o", str(run_dir / "site")),
              ("web", str(onnx_file), "-o", str(run_dir))]
    before = snapshot(tmp_path)
    for args in cases:
        err = assert_clean_error(cli(*args), str(run_dir))
        assert "inside run directory" in err or "is a directory (a run's)" in err, err
        assert snapshot(tmp_path) == before, args
    # the run's exports are its to replace: exporting again to the default paths works
    for args in [(), ("--int8",)] * 2:
        result = cli("export", str(run_dir), *args)
        assert result.exit_code == 0, result.output
    assert OnnxModel.load(run_dir / "model.onnx").quantized is None
    assert OnnxModel.load(run_dir / "model.int8.onnx").quantized == INT8_DYNAMIC
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("run/model.")} == {
        k: v for k, v in before.items() if not k.startswith("run/model.")}


def test_export_run_writes_the_requested_opset(exported: Exported, tmp_path: Path) -> None:
    run_dir, _ = exported("mlp")
    path = export_run(run_dir, tmp_path / "m.onnx", opset=18)
    opsets = {o.domain: o.version for o in onnx.load(path).opset_import}
    assert opsets.get("", opsets.get("ai.onnx")) == 18
    assert json.loads(OnnxModel.load(path).metadata["vocab"])[0] == "."
