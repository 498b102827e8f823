"""zoo.export.onnx and zoo.export.check: every preset exports to one ONNX file that agrees
with torch (logits and seeded samples), and the file carries what a sampler needs. A window
model's file maps windows to logits (format 1); a sequence model's is its step graph (format
2), checked position by position against torch's full forward."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from lanes import slow_but
from onnx.reference import ReferenceEvaluator

from zoo.build import model_kind
from zoo.data import IGNORE, load_dataset
from zoo.errors import ArtifactError
from zoo.export.check import ATOL, RTOL, check
from zoo.export.onnx import export_onnx
from zoo.export.runtime import OnnxModel
from zoo.registry import get_registry
from zoo.rundir import open_run
from zoo.sampling import entries_so_far, sample, write_entries

PRESETS = sorted(get_registry().presets)
WINDOW = [p for p in PRESETS if model_kind(p, 27) == "window"]
SEQUENCE = [p for p in PRESETS if model_kind(p, 27) == "sequence"]
# the two largest presets export and compare in the slow lane; the fast lane keeps the others
# (makemore-transformer stands for attention there)
LARGEST = ("transformer", "seq-transformer")
WINDOW_CASES = slow_but(WINDOW, *(p for p in WINDOW if p not in LARGEST))
SEQUENCE_CASES = slow_but(SEQUENCE, *(p for p in SEQUENCE if p not in LARGEST))
Exported = Callable[[str], tuple[Path, Path]]


def assert_close(actual: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("preset", WINDOW_CASES)
def test_onnxruntime_matches_torch(preset: str, exported: Exported) -> None:
    run_dir, path = exported(preset)
    run, ort_model = open_run(run_dir), OnnxModel.load(path)
    meta = run.meta
    data = load_dataset(meta["data"]["path"], run.spec.context, meta["seed"])
    x_val = data.splits["val"].arrays()[0]  # (N, T)
    assert_close(ort_model.logits(x_val), run.model.numpy_logits(x_val))  # every val context
    rng = np.random.default_rng(0)
    for batch in (1, 7, 513):
        x = rng.integers(0, run.vocab.size, (batch, run.spec.context))  # (B, T)
        assert_close(ort_model.logits(x), run.model.numpy_logits(x))
    reference = ReferenceEvaluator(onnx.load(path))
    x = rng.integers(0, run.vocab.size, (64, run.spec.context))
    assert_close(reference.run(None, {"context": x})[0], run.model.numpy_logits(x))
    options = {"vocab": run.vocab.chars, "context": run.spec.context, "n": 50, "seed": 3}
    assert sample(ort_model.logits, **options) == sample(run.model.numpy_logits, **options)


@pytest.mark.parametrize("preset", WINDOW_CASES)
def test_file_is_single_checked_and_described(preset: str, exported: Exported) -> None:
    run_dir, path = exported(preset)
    assert path == run_dir / "model.onnx"
    assert not [p for p in run_dir.iterdir() if p.suffix == ".data" or p.name.endswith(".tmp")]
    proto = onnx.load(path, load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "context" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert out.name == "logits" and out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    run = open_run(run_dir)
    in_dims, out_dims = inp.type.tensor_type.shape.dim, out.type.tensor_type.shape.dim
    assert in_dims[0].dim_param == out_dims[0].dim_param == "batch"
    assert [in_dims[1].dim_value, out_dims[1].dim_value] == [run.spec.context, run.vocab.size]
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["layerzoo.format"] == "1"
    assert json.loads(props["vocab"]) == list(run.vocab.chars)
    assert int(props["context"]) == run.spec.context
    assert json.loads(props["spec"]) == json.loads(json.dumps(run.spec.to_dict()))
    versions = set(json.loads(props["versions"]))
    assert {"layerzoo", "torch", "onnx", "onnxruntime", "numpy"} <= versions
    assert json.loads(props["metrics"]) == run.meta["metrics"]


def stepped(model: OnnxModel, ids: np.ndarray) -> np.ndarray:
    """The step graph run token by token over sequences ids [B, T]: logits [B, T, V]."""
    state, out = model.start(len(ids)), []
    for t in range(ids.shape[1]):
        logits, state = model.step(ids[:, t], state, t)  # (B, V)
        out.append(logits)
    return np.stack(out, axis=1)


def test_the_zoo_has_sequence_presets() -> None:
    assert {"makemore-rnn", "makemore-gru", "makemore-bow", "makemore-transformer",
            "seq-transformer"} <= set(SEQUENCE)


@pytest.mark.parametrize("preset", SEQUENCE_CASES)
def test_step_graph_matches_the_full_forward_at_every_position(preset: str,
                                                              exported: Exported) -> None:
    run_dir, path = exported(preset)
    run, ort_model = open_run(run_dir), OnnxModel.load(path)
    meta = run.meta
    data = load_dataset(meta["data"]["path"], run.spec.context, meta["seed"], sequence=True)
    x, y = data.splits["val"].arrays()  # (N, T) every validation word
    kept = y != IGNORE  # (N, T) the positions up to each word's end
    full = run.model.numpy_logits(x)  # (N, T, V)
    assert_close(stepped(ort_model, x)[kept], full[kept])
    rng = np.random.default_rng(0)
    for batch in (1, 7):  # any ids, every position
        ids = rng.integers(0, run.vocab.size, (batch, run.spec.context))
        assert_close(stepped(ort_model, ids), run.model.numpy_logits(ids))
    reference = ReferenceEvaluator(onnx.load(path))
    names = [f"past.{name}" for name, _, _ in ort_model.meta.state]
    state = ort_model.start(4)
    for t in range(3):  # a few positions of four words through the ONNX reference
        given = entries_so_far(state, ort_model.caches, t)
        out = reference.run(None, {"token": x[:4, t], "position": np.array(t),
                                   **dict(zip(names, given, strict=True))})
        assert_close(out[0], full[:4, t])
        state = write_entries(state, out[1:], ort_model.caches, t)
    options = {"vocab": run.vocab.chars, "context": run.spec.context, "n": 50, "seed": 3}
    words = sample(run.model.stepper(), **options)
    assert sample(ort_model, **options) == words
    assert sample(run.model.stepper(recompute=True), **options) == words


@pytest.mark.parametrize("preset", SEQUENCE_CASES)
def test_step_file_is_single_checked_and_described(preset: str, exported: Exported) -> None:
    run_dir, path = exported(preset)
    proto = onnx.load(path, load_external_data=False)
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["layerzoo.format"] == "2"
    state = json.loads(props["layerzoo.state"])
    inputs = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
              for i in proto.graph.input]
    outputs = [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
               for o in proto.graph.output]
    run = open_run(run_dir)
    past = [["past", "batch", *d[1:]] if cache else ["batch", *d] for _, d, cache in state]
    assert inputs == [("token", ["batch"]), ("position", []),
                      *[(f"past.{n}", dims) for (n, _, _), dims in zip(state, past, strict=True)]]
    assert outputs == [("logits", ["batch", run.vocab.size]),
                       *[(f"present.{n}", ["batch", *(d[1:] if cache else d)])
                         for n, d, cache in state]]
    assert int(props["context"]) == run.spec.context == run.model.context
    caches = [(n, d) for n, d, cache in state if cache]
    if "transformer" in preset:  # every attention layer caches a key and a value per position
        assert len(caches) == 8 and all(d == [run.spec.context, 64] for _, d in caches)
    else:
        assert caches == []


def test_a_step_graph_refuses_the_window_path(exported: Exported) -> None:
    path = exported("makemore-gru")[1]
    with pytest.raises(ArtifactError) as e:
        OnnxModel.load(path).logits(np.zeros((2, 3), np.int64))
    assert str(e.value) == (f"{path} is a sequence model's step graph (layerzoo format 2), "
                            "which takes one position at a time: use its start() and step(), "
                            "or sample()")


def test_a_step_refuses_state_it_cannot_write_into(exported: Exported) -> None:
    """onnxruntime writes a cache's new entry straight into the given array: one that is not
    the float32 array start() makes is refused before anything is written."""
    model = OnnxModel.load(exported("makemore-transformer")[1])
    ids = np.zeros(3, np.int64)
    good = model.start(3)
    name = model.meta.state[0][0]
    for bad, got in [(good[0].astype(np.float64), "float64"), (good[0][:, :2], "float32"),
                     (np.asfortranarray(good[0]), "float32"), (good[0].tolist(), "list")]:
        with pytest.raises(ArtifactError) as e:
            model.step(ids, [bad, *good[1:]], 0)
        assert str(e.value).startswith(f"state {name!r} must be a writable contiguous "
                                       "float32 array"), str(e.value)
        assert got in str(e.value)
    logits, state = model.step(ids, good, 0)
    assert logits.shape == (3, len(model.vocab)) and state[0] is good[0]  # written in place


def test_check_reports_sequence_parity(exported: Exported) -> None:
    run_dir, path = exported("makemore-transformer")
    result = check(run_dir, path, samples=30)
    assert result.ok and result.samples == 30
    assert result.max_abs_diff < ATOL and result.torch_loss == pytest.approx(
        open_run(run_dir).meta["metrics"]["val_loss"], abs=1e-4)


def test_check_reports_parity(exported: Exported) -> None:
    result = check(*exported("mlp-bn"), samples=30)
    assert result.ok and result.samples == 30 and result.contexts > 1000
    assert result.max_abs_diff < ATOL


def test_batchnorm_is_folded_into_gemm(exported: Exported) -> None:
    ops = [n.op_type for n in onnx.load(exported("mlp-bn")[1]).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Gemm") == 2


def test_export_of_a_model_in_train_mode_is_eval_mode(exported: Exported,
                                                      tmp_path: Path) -> None:
    run = open_run(exported("mlp-bn")[0])
    x = np.random.default_rng(0).integers(0, run.vocab.size, (32, run.spec.context))
    expected = run.model.numpy_logits(x)  # eval mode: running statistics
    run.model.train()
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    path = export_onnx(run.model, tmp_path / "m.onnx", vocab=run.vocab.chars)
    assert run.model.training
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())
    assert_close(OnnxModel.load(path).logits(x), expected)
    run.model.eval()
    export_onnx(run.model, tmp_path / "m.onnx", vocab=run.vocab.chars)
    assert not run.model.training


def test_missing_translation_names_the_layer_and_plugin(exported: Exported,
                                                        tmp_path: Path) -> None:
    if "extra-mlp" not in PRESETS:
        pytest.skip("the layerzoo-extra test plugin is not installed")
    run = open_run(exported("extra-mlp")[0])
    run.model.entries = [dataclasses.replace(e, layer=dataclasses.replace(
        e.layer, onnx_translation=None)) for e in run.model.entries]
    with pytest.raises(ArtifactError) as info:
        export_onnx(run, tmp_path / "m.onnx")
    message = str(info.value)
    assert "(hardswishish)" in message and "plugin 'extra'" in message
    assert "onnx_translation" in message and "\n" not in message
    assert not (tmp_path / "m.onnx").exists()


class DataDependent(torch.nn.Module):
    """A layer the exporter cannot trace: Python control flow on tensor values."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) if x.sum() > 0 else -x


def test_untraceable_layer_is_named(exported: Exported, tmp_path: Path) -> None:
    run = open_run(exported("mlp")[0])
    index = next(i for i, e in enumerate(run.model.entries) if e.layer.name == "tanh")
    run.model.layers[index] = DataDependent()
    with pytest.raises(ArtifactError) as info:
        export_onnx(run, tmp_path / "m.onnx")
    label = run.model.entries[index].label
    assert f"ONNX export failed in {label} of plugin 'activations': " in str(info.value)
    assert "\n" not in str(info.value)


def test_export_errors_are_artifact_errors(exported: Exported, tmp_path: Path) -> None:
    run = open_run(exported("bigram")[0])
    with pytest.raises(ArtifactError, match="does not exist"):
        export_onnx(run, tmp_path / "nowhere" / "m.onnx")
    with pytest.raises(ArtifactError, match="is a directory"):
        export_onnx(run, tmp_path)
    with pytest.raises(ArtifactError, match="needs vocab"):
        export_onnx(run.model, tmp_path / "m.onnx")
    with pytest.raises(ArtifactError, match="layerzoo's own"):
        export_onnx(run, tmp_path / "m.onnx", metadata={"vocab": "x"})
    path = export_onnx(run, tmp_path / "m.onnx", metadata={"owner": "me"})
    assert OnnxModel.load(path).metadata["owner"] == "me"


def test_cli_export_and_check(exported: Exported, cli, tmp_path: Path) -> None:
    run_dir, _ = exported("mlp")
    result = cli("export", str(run_dir), "-o", str(tmp_path / "m.onnx"))
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'm.onnx'}" in result.output and "Gemm x2" in result.output
    result = cli("check", str(run_dir), str(tmp_path / "m.onnx"), "--samples", "10")
    assert result.exit_code == 0, result.output
    assert ": ok" in result.output and "identical" in result.output

    proto = onnx.load(tmp_path / "m.onnx")
    weight = next(t for t in proto.graph.initializer if len(t.dims) == 2)
    array = onnx.numpy_helper.to_array(weight) * 1.01  # a slightly different model
    weight.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), weight.name))
    onnx.save(proto, tmp_path / "tampered.onnx")
    result = cli("check", str(run_dir), str(tmp_path / "tampered.onnx"))
    assert result.exit_code == 1 and "DIFFER" in result.output


def test_cli_check_refuses_a_file_of_another_run(exported: Exported, cli) -> None:
    result = cli("check", str(exported("mlp")[0]), str(exported("wavenet")[1]))
    assert result.exit_code == 2 and "was not exported from" in result.stderr


def _with_props(src: Path, dst: Path, **changes: str) -> Path:
    proto = onnx.load(src)
    props = {p.key: p.value for p in proto.metadata_props} | changes
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, dst)
    return dst


def test_a_step_graph_that_does_not_match_its_state_is_one_line(exported: Exported, cli,
                                                                tmp_path: Path) -> None:
    path = exported("makemore-transformer")[1]
    state = json.loads(OnnxModel.load(path).metadata["layerzoo.state"])
    more = _with_props(path, tmp_path / "more.onnx",
                       **{"layerzoo.state": json.dumps([*state, ["99.key", [16, 64], True]])})
    fewer = _with_props(path, tmp_path / "fewer.onnx",
                        **{"layerzoo.state": json.dumps(state[1:])})
    broken = _with_props(path, tmp_path / "broken.onnx", **{"layerzoo.state": "[[1, 2]]"})
    future = _with_props(path, tmp_path / "future.onnx", **{"layerzoo.format": "3"})
    for file, fragment in [(more, "missing past.99.key"),
                           (fewer, f"unexpected past.{state[0][0]}"),
                           (broken, "format 2 needs 'layerzoo.state'"),
                           (future, "has layerzoo format '3'; this layerzoo reads formats '1' "
                                    "and '2' (upgrade layerzoo)")]:
        result = cli("sample", str(file), "-n", "3")
        assert result.exit_code == 2 and result.stdout == "", file
        assert result.stderr.count("\n") == 1 and str(file) in result.stderr
        assert fragment in result.stderr, result.stderr


@pytest.mark.parametrize("preset", slow_but(["makemore-rnn", "seq-transformer"],
                                             "makemore-rnn"))
def test_int8_step_graphs_keep_the_loss(preset: str, exported: Exported, cli) -> None:
    run_dir, _ = exported(preset)
    result = cli("export", str(run_dir), "--int8")
    assert result.exit_code == 0, result.output
    int8 = run_dir / "model.int8.onnx"
    assert OnnxModel.load(int8).meta.step and OnnxModel.load(int8).quantized == "int8-dynamic"
    report = check(run_dir, int8)
    assert report.ok and abs(report.loss_drift) < 0.01
    # every learned product is quantised; a 0/1 matrix that only routes values stays fp32
    fp32, quantised = onnx.load(run_dir / "model.onnx"), onnx.load(int8)
    weights = {t.name for t in fp32.graph.initializer}
    learned = [n for n in fp32.graph.node if n.op_type == "Gemm" or (
        n.op_type == "MatMul" and n.input[1] in weights and not _zero_one(fp32, n.input[1]))]
    assert [n.op_type for n in quantised.graph.node].count("MatMulInteger") == len(learned)
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in quantised.graph.initializer}
    for node in quantised.graph.node:
        if node.op_type == "MatMul" and node.input[1] in constants:
            assert set(np.unique(constants[node.input[1]])) <= {0.0, 1.0}, node.name


def _zero_one(proto: onnx.ModelProto, name: str) -> bool:
    (tensor,) = [t for t in proto.graph.initializer if t.name == name]
    return set(np.unique(onnx.numpy_helper.to_array(tensor))) <= {0.0, 1.0}
