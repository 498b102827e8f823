"""zoo.export.runtime: onnxruntime alone samples what torch samples, and every unusable file
is refused with one line (exit status 2 from ``zoo sample``) before onnxruntime reads it."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from lanes import slow_but
from matrix import SAMPLING_REFUSED, assert_clean_error
from onnx import external_data_helper

from zoo.errors import ArtifactError
from zoo.export.protobuf import external_tensors, op_counts
from zoo.export.runtime import OnnxModel
from zoo.registry import ALLOW_ENV, get_registry
from zoo.rundir import open_run
from zoo.sampling import sample

Exported = Callable[[str], tuple[Path, Path]]


@pytest.fixture(scope="module")
def mlp_bn(exported: Exported) -> tuple[Path, Path]:
    return exported("mlp-bn")


def torch_words(run_dir: Path, n: int = 20, **options) -> list[str]:
    run = open_run(run_dir)
    return sample(run.model.sampling_model(), vocab=run.vocab.chars, context=run.spec.context,
                  n=n, seed=0, **options)


def test_model_exposes_vocab_context_metadata(mlp_bn: tuple[Path, Path]) -> None:
    run_dir, path = mlp_bn
    model, run = OnnxModel.load(path), open_run(run_dir)
    assert model.vocab == run.vocab.chars and model.context == 3
    assert model.metrics == run.meta["metrics"] and model.spec == run.spec.to_dict()
    assert model.metadata["layerzoo.format"] == "1"
    assert model.sample(20, seed=0, prefix="an") == torch_words(run_dir, prefix="an")
    assert model.logits(np.zeros((0, 3), np.int64)).shape == (0, len(model.vocab))


@pytest.mark.parametrize("context, fragment", [
    (np.array([[0, 1, -1]]), "token ids must be in"),  # onnxruntime would wrap -1
    (np.array([[0, 1, 27]]), "token ids must be in"),
    (np.zeros((2, 4), np.int64), "shape \\[batch, 3\\]"),
    (np.zeros(3, np.int64), "shape \\[batch, 3\\]"),
    (np.zeros((2, 3), np.float32), "integer token ids"),
])
def test_logits_refuse_bad_contexts(mlp_bn: tuple[Path, Path], context: np.ndarray,
                                    fragment: str) -> None:
    with pytest.raises(ArtifactError, match=fragment):
        OnnxModel.load(mlp_bn[1]).logits(context)


def test_runtime_works_where_torch_cannot_be_imported(mlp_bn: tuple[Path, Path],
                                                      no_torch_env: dict[str, str]) -> None:
    code = ("import sys\n"
            "try:\n    import torch\nexcept ImportError:\n    pass\n"
            "else:\n    sys.exit('torch was importable')\n"
            "from zoo.export.runtime import OnnxModel\n"
            f"print('\\n'.join(OnnxModel.load({str(mlp_bn[1])!r}).sample(20, seed=0)))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=no_torch_env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == torch_words(mlp_bn[0])


def test_zoo_sample_onnx_never_imports_torch(mlp_bn: tuple[Path, Path], zoo_subprocess,
                                            no_torch_env: dict[str, str]) -> None:
    out = zoo_subprocess("sample", str(mlp_bn[1]), "-n", "20", "--seed", "0", env=no_torch_env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == torch_words(mlp_bn[0])
    assert out.stderr == ""


def test_zoo_sample_run_dir_matches_onnx(mlp_bn: tuple[Path, Path], cli) -> None:
    options = ["-n", "15", "--seed", "4", "--top-k", "5", "--temperature", "0.8"]
    from_torch = cli("sample", str(mlp_bn[0]), *options)
    from_onnx = cli("sample", str(mlp_bn[1]), *options)
    assert from_torch.exit_code == from_onnx.exit_code == 0
    assert from_torch.stdout == from_onnx.stdout and len(from_onnx.stdout.split()) == 15


# -- files that must be refused -----------------------------------------------------------


def _external(proto: onnx.ModelProto, location: str, *, in_constant: bool = False) -> bytes:
    """The model with one tensor's data moved to ``location`` (nothing is written there)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    if in_constant:
        tensor = onnx.numpy_helper.from_array(np.ones(4, np.float32), "c")
        proto.graph.node.insert(0, onnx.helper.make_node("Constant", [], ["c"], value=tensor))
        tensor = proto.graph.node[0].attribute[0].t
    else:
        tensor = proto.graph.initializer[0]
    external_data_helper.set_external_data(tensor, location=location, offset=0, length=16)
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")
    return proto.SerializeToString()


def _without_metadata(proto: onnx.ModelProto) -> bytes:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.metadata_props[:]
    return proto.SerializeToString()


def _with_metadata(proto: onnx.ModelProto, **props: str) -> bytes:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    current = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**current, **props})
    return proto.SerializeToString()


BAD_FILES: dict[str, tuple[Callable[[bytes, onnx.ModelProto], bytes], str]] = {
    "empty": (lambda data, proto: b"", "is empty"),
    "random": (lambda data, proto: np.random.default_rng(0).bytes(4096),
               "not a valid ONNX model"),
    "truncated": (lambda data, proto: data[:len(data) // 2], "not a valid ONNX model"),
    "pickle": (lambda data, proto: pickle.dumps({"weights": [1.0, 2.0]}), "pickle"),
    "zip": (lambda data, proto: b"PK\x03\x04" + bytes(100), "zip archive"),
    "no-metadata": (lambda data, proto: _without_metadata(proto), "has no layerzoo metadata"),
    "bad-vocab": (lambda data, proto: _with_metadata(proto, vocab="[oops"),
                  "corrupted layerzoo metadata"),
    "future-format": (lambda data, proto: _with_metadata(proto, **{"layerzoo.format": "9"}),
                      "format '9'"),
    "escaping": (lambda data, proto: _external(proto, "../../etc/passwd"), "external data"),
    "absolute": (lambda data, proto: _external(proto, "/etc/passwd"), "external data"),
    "sidecar": (lambda data, proto: _external(proto, "side.bin"), "external data"),
    "constant": (lambda data, proto: _external(proto, "../../etc/passwd", in_constant=True),
                 "external data"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_files_are_refused_with_one_line(kind: str, mlp_bn: tuple[Path, Path],
                                             tmp_path: Path, cli) -> None:
    data = mlp_bn[1].read_bytes()
    make, fragment = BAD_FILES[kind]
    folder = tmp_path / "a" / "b"
    folder.mkdir(parents=True)
    (folder / "side.bin").write_bytes(bytes(64))  # a sidecar onnxruntime would happily read
    path = folder / f"{kind}.onnx"
    path.write_bytes(make(data, onnx.load(mlp_bn[1])))
    with pytest.raises(ArtifactError, match=fragment):
        OnnxModel.load(path)
    result = cli("sample", str(path))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert str(path) in result.stderr


def test_missing_file_and_prefix_outside_vocabulary(mlp_bn: tuple[Path, Path], cli,
                                                    tmp_path: Path) -> None:
    result = cli("sample", str(tmp_path / "nope.onnx"))
    assert result.exit_code == 2 and "no such ONNX file" in result.stderr
    result = cli("sample", str(mlp_bn[1]), "--prefix", "Zoë")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "'Z'" in result.stderr and "'ë'" in result.stderr and "abcdefghij" in result.stderr


def test_foreign_onnx_signature_is_refused(tmp_path: Path) -> None:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 3])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    proto.ir_version = 10
    onnx.helper.set_model_props(proto, {"layerzoo.format": "1", "context": "3",
                                        "vocab": json.dumps(list(".ab"))})
    onnx.save(proto, tmp_path / "relu.onnx")
    with pytest.raises(ArtifactError, match="a layerzoo model takes context int64"):
        OnnxModel.load(tmp_path / "relu.onnx")


def test_the_protobuf_walker_agrees_with_onnx(mlp_bn: tuple[Path, Path]) -> None:
    """Its external tensors, and its op counts (`zoo export` prints them), are onnx's."""
    proto = onnx.load(mlp_bn[1])
    assert external_tensors(proto.SerializeToString()) == []
    ops: dict[str, int] = {}
    for node in proto.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    assert list(op_counts(proto.SerializeToString()).items()) == list(ops.items())
    bad = onnx.ModelProto.FromString(_external(proto, "x.bin", in_constant=True))
    found = [t.name for t in external_data_helper._get_all_tensors(bad)
             if external_data_helper.uses_external_data(t)]
    assert len(external_tensors(bad.SerializeToString())) == len(found) == 1


def test_external_data_walker_covers_every_place_a_tensor_can_live() -> None:
    """Derive from onnx's own schema every message field through which a TensorProto can be
    reached, and check the hand-written walker's tables name exactly those."""
    from zoo.export import protobuf

    reaches: dict[str, bool] = {}

    def can_reach(descriptor) -> bool:
        if descriptor.full_name not in reaches:
            reaches[descriptor.full_name] = descriptor.name == "TensorProto"  # cycles: no
            reaches[descriptor.full_name] = descriptor.name == "TensorProto" or any(
                f.message_type is not None and can_reach(f.message_type)
                for f in descriptor.fields)
        return reaches[descriptor.full_name]

    needed, seen, todo = set(), set(), [onnx.ModelProto.DESCRIPTOR]
    while todo:
        message = todo.pop()
        if message.full_name in seen or message.name == "TensorProto":
            continue
        seen.add(message.full_name)
        for f in message.fields:
            if f.message_type is not None and can_reach(f.message_type):
                needed.add((message.name, f.number))
                todo.append(f.message_type)
    tables = {"ModelProto": protobuf._MODEL, "TrainingInfoProto": protobuf._TRAINING,
              "FunctionProto": protobuf._FUNCTION, "GraphProto": protobuf._GRAPH,
              "NodeProto": protobuf._NODE, "AttributeProto": protobuf._ATTRIBUTE,
              "SparseTensorProto": protobuf._SPARSE}
    covered = {(name, number) for name, table in tables.items() for number in table}
    assert covered == needed
    assert ("FunctionProto", 11) in needed  # attribute defaults of local functions


def _function_default_external(proto: onnx.ModelProto, location: str) -> bytes:
    """mlp-bn plus a local function whose attribute DEFAULT is an external tensor, used."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    default = onnx.helper.make_attribute("value", onnx.numpy_helper.from_array(
        np.zeros((), np.float32), "default"))
    external_data_helper.set_external_data(default.t, location=location, offset=0, length=4)
    default.t.data_location = onnx.TensorProto.EXTERNAL
    default.t.ClearField("raw_data")
    constant = onnx.helper.make_node("Constant", [], ["y"])
    constant.attribute.append(onnx.AttributeProto(name="value", ref_attr_name="value",
                                                  type=onnx.AttributeProto.TENSOR))
    function = onnx.helper.make_function("local", "Zero", [], ["y"], [constant],
                                         [onnx.helper.make_opsetid("", 20)])
    function.attribute_proto.append(default)
    proto.functions.append(function)
    proto.opset_import.append(onnx.helper.make_opsetid("local", 1))
    last = proto.graph.node[-1]
    last.output[0] = "pre_logits"
    proto.graph.node.append(onnx.helper.make_node("Zero", [], ["zero"], domain="local"))
    proto.graph.node.append(onnx.helper.make_node("Add", ["pre_logits", "zero"], ["logits"]))
    return proto.SerializeToString()


def test_function_attribute_default_with_external_data_opens_no_file(
        mlp_bn: tuple[Path, Path], zoo_subprocess, tmp_path: Path) -> None:
    # a FIFO would block forever if anything opened it: the test would time out
    os.mkfifo(tmp_path / "weights.bin")
    path = tmp_path / "sneaky.onnx"
    path.write_bytes(_function_default_external(onnx.load(mlp_bn[1]), "weights.bin"))
    with pytest.raises(ArtifactError, match="external data"):
        OnnxModel.load(path)
    out = zoo_subprocess("sample", str(path), cwd=tmp_path)
    assert out.returncode == 2 and "external data" in out.stderr and out.stdout == ""


def test_onnxruntime_failure_while_running_names_the_file(mlp_bn: tuple[Path, Path], cli,
                                                          tmp_path: Path) -> None:
    proto = onnx.load(mlp_bn[1])
    reshape = next(n for n in proto.graph.node if n.op_type == "Reshape")
    shape = next(t for t in proto.graph.initializer if t.name == reshape.input[1])
    wrong = onnx.numpy_helper.to_array(shape).copy()
    wrong[-1] += 1  # a width that does not divide the values: onnxruntime fails in session.run
    shape.CopyFrom(onnx.numpy_helper.from_array(wrong, shape.name))
    path = tmp_path / "broken.onnx"
    onnx.save(proto, path)
    with pytest.raises(ArtifactError, match="onnxruntime failed to run the model"):
        OnnxModel.load(path).sample(3)
    result = cli("sample", str(path), "-n", "3")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert str(path) in result.stderr and "onnxruntime failed" in result.stderr


@pytest.mark.parametrize("preset", slow_but(sorted(get_registry().presets), "mlp-bn",
                                             "makemore-gru"))
def test_torch_and_onnxruntime_give_identical_words(preset: str, exported: Exported) -> None:
    run_dir, path = exported(preset)
    run, model = open_run(run_dir), OnnxModel.load(path)
    for options in ({}, {"top_k": 3, "temperature": 0.7, "start": 11},
                    {"prefix": model.vocab[1], "temperature": 1.5}):
        words = torch_words(run_dir, n=300, **options)
        assert model.sample(300, seed=0, **options) == words
        assert len(words) == 300 and run.vocab.chars == model.vocab


def test_zoo_sample_start_and_n_are_index_stable(mlp_bn: tuple[Path, Path], cli) -> None:
    ten = cli("sample", str(mlp_bn[1]), "-n", "10", "--seed", "7").stdout.splitlines()
    five = cli("sample", str(mlp_bn[1]), "-n", "5", "--seed", "7").stdout.splitlines()
    later = cli("sample", str(mlp_bn[1]), "-n", "5", "--seed", "7", "--start", "5")
    assert len(ten) == 10 and five == ten[:5] and later.stdout.splitlines() == ten[5:]


def test_the_sampler_runs_each_call_on_one_thread(mlp_bn: tuple[Path, Path],
                                                  exported: Exported) -> None:
    """The sampler grows a chunk per core at once: a file opened for it runs each call on one
    intra-op thread, and gives the words of the file opened as asked."""
    _, path = mlp_bn
    model = OnnxModel.load(path)
    assert model.threads is None and model.sampling_model().__self__.threads == 1
    assert OnnxModel.load(path, threads=1).sampling_model().__self__.threads == 1
    options = {"vocab": model.vocab, "context": model.context, "n": 30, "seed": 4}
    assert sample(model.sampling_model(), **options) == sample(model.logits, **options)
    _, step_path = exported("makemore-gru")
    stepper = OnnxModel.load(step_path).sampling_model()
    assert stepper.threads == 1 and stepper.meta.step


ZOO = Path(sys.executable).parent / "zoo"
BUILTIN_ONLY = {**os.environ, ALLOW_ENV: ""}  # no installed plugin's warning on stderr


@pytest.mark.parametrize("command", [["layers"], ["sample", "MODEL", "-n", "100000"],
                                     ["check", "RUN", "MODEL", "--samples", "5"]])
def test_a_closed_output_pipe_ends_any_command_quietly(command: list[str],
                                                       mlp_bn: tuple[Path, Path]) -> None:
    """`zoo ... | head -1`: the reader went away; nothing to report."""
    run_dir, path = mlp_bn
    args = [{"RUN": str(run_dir), "MODEL": str(path)}.get(a, a) for a in command]
    proc = subprocess.Popen([str(ZOO), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=BUILTIN_ONLY)
    proc.stdout.close()  # closed before the command writes its first line
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 0 and err == b"", err


def test_ctrl_c_in_sample_exits_130_after_whole_words(mlp_bn: tuple[Path, Path]) -> None:
    _, path = mlp_bn
    proc = subprocess.Popen([str(ZOO), "sample", str(path), "-n", str(10**9)], bufsize=0,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=BUILTIN_ONLY)
    first = proc.stdout.readline()  # unbuffered: what follows is left to communicate()
    assert first.endswith(b"\n")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT and err == b"", err
    assert (first + out).endswith(b"\n")
    words, model = (first + out).decode().splitlines(), OnnxModel.load(path)
    assert words == sample(model.sampling_model(), vocab=model.vocab, context=model.context,
                           n=len(words), seed=0)


@pytest.mark.parametrize("args, fragment", SAMPLING_REFUSED)
def test_zoo_sample_refuses_what_node_refuses(args: list[str], fragment: str, cli,
                                              mlp_bn: tuple[Path, Path]) -> None:
    assert_clean_error(cli("sample", str(mlp_bn[1]), *args), fragment)
