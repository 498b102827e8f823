"""Nothing untrusted runs: no pickle anywhere, no network, no external data followed.

- the package sources (zoo/, plugins/, export/) never unpickle, eval or exec;
- a trained run's tensors are safetensors files;
- train, export, sample and check work with every socket call raising;
- an ONNX file that points at external data is refused before onnxruntime sees it, wherever
  the tensor sits in the model and wherever the data would be (its own folder included).
"""

from __future__ import annotations

import ast
import io
import json
import socket
import tokenize
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from zoo.errors import ArtifactError

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = ("zoo", "plugins", "export")
# modules that deserialize by running code (or can be made to)
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve",
                  "marshal", "pickletools", "copyreg"}
# the only places the word may appear: comments and messages that explain the refusal
ALLOWED_MENTIONS = ("no pickle anywhere", "pickle starts with PROTO", "('PK') of pickles",
                    "is a pickle or torch.save file", "is a Python pickle", "never unpickles",
                    "unpickles (it can run code)")
TEXT_TOKENS = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)}


def package_sources() -> list[Path]:
    files = sorted(p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 20, files
    return files


def unsafe_code(source: str) -> list[str]:
    """What in ``source`` could unpickle or run code from data, one line per finding."""
    found = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        text = tok.string.lower()
        if "pickle" not in text:
            continue
        if tok.type in TEXT_TOKENS:
            if not any(phrase.lower() in text for phrase in ALLOWED_MENTIONS):
                found.append(f"line {tok.start[0]}: mentions pickle: {tok.string.strip()!r}")
        else:
            found.append(f"line {tok.start[0]}: uses {tok.string!r}")
    tree = ast.parse(source)
    imported = {}  # local name -> what it is: "from torch import load" makes load torch.load
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom):
            imported.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    for node in ast.walk(tree):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            found += [f"line {line}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in \
                UNSAFE_MODULES:
            found.append(f"line {line}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            head, dot, rest = ast.unparse(node.func).partition(".")
            name = imported.get(head, head) + dot + rest
            keywords = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec", "compile", "__import__", "builtins.eval",
                        "builtins.exec"):
                found.append(f"line {line}: calls {name}()")
            elif name == "torch.load" and not _is_true(keywords.get("weights_only")):
                found.append(f"line {line}: {name}() without weights_only=True")
            elif name == "numpy.load" and "allow_pickle" in keywords and \
                    not _is_false(keywords["allow_pickle"]):
                found.append(f"line {line}: {name}(allow_pickle=...)")
            elif name in ("onnx.load", "onnx.load_model") and \
                    not _is_false(keywords.get("load_external_data")):
                found.append(f"line {line}: {name}() follows external data")
    return found


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _is_false(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is False


# -- no pickle, eval or exec in the package ---------------------------------------------------

@pytest.mark.parametrize("path", package_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_package_source_never_unpickles_evals_or_execs(path):
    assert unsafe_code(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("snippet", [
    "import pickle\n",
    "import cloudpickle as cp\n",
    "from pickle import loads\n",
    "from shelve import open\n",
    "import torch\nx = torch.load(f)\n",
    "import torch as t\nx = t.load(f, weights_only=False)\n",
    "import numpy as np\nx = np.load(f, allow_pickle=True)\n",
    "from torch import load\nx = load(f)\n",
    "x = eval(text)\n",
    "exec(code)\n",
    "import onnx\nm = onnx.load(path)\n",
    "looks_pickled = 1\n",
    "# we unpickle here\n",
    "raise ValueError('cannot unpickle it')\n",
])
def test_the_scanner_finds_what_it_looks_for(snippet):
    assert unsafe_code(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "model.eval()\n",
    "import torch\nx = torch.load(f, weights_only=True)\n",
    "import numpy as np\nx = np.load(f)\n",
    "from safetensors.torch import load\nx = load(blob)\n",
    "m = onnx.load(path, load_external_data=False)\n",
    "pattern = re.compile('x')\n",
    "# layerzoo never unpickles (it can run code)\n",
    "raise ArtifactError(f'{path} is a Python pickle, not an ONNX model')\n",
])
def test_the_scanner_lets_safe_code_and_explanations_through(snippet):
    assert unsafe_code(snippet) == []


# -- weights are safetensors ----------------------------------------------------------------

def test_a_trained_run_keeps_its_tensors_in_safetensors_files(exported):
    from safetensors import safe_open

    run, onnx_path = exported("mlp-bn")
    tensor_files = sorted(run.glob("*.safetensors"))
    assert [p.name for p in tensor_files] == ["checkpoint.safetensors", "weights.safetensors"]
    for path in tensor_files:
        data = path.read_bytes()
        size = int.from_bytes(data[:8], "little")  # safetensors: u64 header length, JSON header
        header = json.loads(data[8:8 + size])
        assert isinstance(header, dict) and data[8:9] == b"{"
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        assert tensors and all({"dtype", "shape", "data_offsets"} <= set(v)
                               for v in tensors.values())
        with safe_open(str(path), framework="np") as f:
            assert set(f.keys()) == set(tensors)
    for path in run.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{path.name} looks like a pickle or zip"
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished"


# -- nothing reaches the network ----------------------------------------------------------

class NetworkUsed(AssertionError):
    """Raised by every patched socket entry point."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every way to open a connection or resolve a name raise; record the attempts."""
    attempts: list[str] = []
    socket_class = socket.socket

    def refuse(what: str):
        def raise_(*args, **kwargs):
            attempts.append(what)
            raise NetworkUsed(f"{what} called with {args!r}")
        return raise_

    monkeypatch.setattr(socket, "socket", refuse("socket.socket"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    monkeypatch.setattr(socket, "gethostbyname", refuse("socket.gethostbyname"))
    # code that imported the class before the patch still connects through these
    monkeypatch.setattr(socket_class, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket_class, "connect_ex", refuse("socket.connect_ex"))
    return attempts


def test_the_network_guard_works(no_network):
    import urllib.request

    with pytest.raises(Exception):  # noqa: B017 - urllib wraps it in URLError
        urllib.request.urlopen("http://example.com", timeout=1)
    assert no_network


def test_train_export_sample_check_never_touch_the_network(cli, tmp_path, tiny_words,
                                                            no_network):
    run = tmp_path / "run"
    trained = cli("train", "mlp-bn", "--data", str(tiny_words), "--out", str(run),
                  "--steps", "20", "--set", "train.eval_every=10", "--samples", "3")
    assert trained.exit_code == 0, trained.output
    exported = cli("export", str(run))
    assert exported.exit_code == 0, exported.output
    onnx_path = run / "model.onnx"
    for source in (run, onnx_path):
        sampled = cli("sample", str(source), "-n", "5", "--seed", "3")
        assert sampled.exit_code == 0 and len(sampled.stdout.split()) == 5
    checked = cli("check", str(run), str(onnx_path), "--samples", "5")
    assert checked.exit_code == 0, checked.output
    assert "ok" in checked.stdout and "identical" in checked.stdout
    assert no_network == []


# -- ONNX files: external data is never followed -----------------------------------------------

def with_external(tensor: TensorProto, location: str, folder: Path, flag: bool = True) -> None:
    """Move ``tensor``'s bytes into ``folder / location`` and point the tensor there."""
    raw = tensor.raw_data or onnx.numpy_helper.to_array(tensor).tobytes()
    (folder / location).write_bytes(raw)
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    if flag:
        tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def identity_model(nodes, inits=(), sparse=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("context", TensorProto.INT64, [None, 1])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 2])],
        initializer=list(inits), sparse_initializer=list(sparse))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    helper.set_model_props(model, {"layerzoo.format": "1", "vocab": '[".", "a"]',
                                   "context": "1"})
    return model


def tensor(name: str) -> TensorProto:
    return onnx.numpy_helper.from_array(np.ones((1, 2), np.float32), name)


def where_external(case: str, folder: Path) -> onnx.ModelProto:
    if case == "initializer":
        t = tensor("W")
        with_external(t, "W.bin", folder)
        return identity_model([helper.make_node("Identity", ["W"], ["logits"])], [t])
    if case == "entries-without-flag":
        t = tensor("W")
        with_external(t, "W.bin", folder, flag=False)
        return identity_model([helper.make_node("Identity", ["W"], ["logits"])], [t])
    if case == "constant-attribute":
        t = tensor("value")
        with_external(t, "value.bin", folder)
        return identity_model([helper.make_node("Constant", [], ["logits"], value=t)])
    if case == "subgraph":
        t = tensor("inner")
        with_external(t, "inner.bin", folder)
        branch = helper.make_graph([helper.make_node("Identity", ["inner"], ["out"])], "b", [],
                                   [helper.make_tensor_value_info("out", TensorProto.FLOAT,
                                                                  [1, 2])], initializer=[t])
        cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
        return identity_model([helper.make_node("If", ["cond"], ["logits"],
                                                then_branch=branch, else_branch=branch)],
                              [cond])
    if case == "sparse-initializer":
        values = onnx.numpy_helper.from_array(np.ones(2, np.float32), "S")
        with_external(values, "S.bin", folder)
        indices = onnx.numpy_helper.from_array(np.array([0, 1], np.int64), "S_idx")
        sparse = helper.make_sparse_tensor(values, indices, [1, 2])
        return identity_model([helper.make_node("Identity", ["S"], ["logits"])], (), [sparse])
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["initializer", "entries-without-flag", "constant-attribute",
                                  "subgraph", "sparse-initializer"])
def test_external_data_in_its_own_folder_is_refused_wherever_the_tensor_sits(tmp_path, case,
                                                                             monkeypatch):
    import onnxruntime as ort

    from zoo.export.runtime import OnnxModel

    proto = where_external(case, tmp_path)
    path = tmp_path / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    sessions: list[object] = []
    monkeypatch.setattr(ort, "InferenceSession", lambda *a, **k: sessions.append(a))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ArtifactError) as e:
        OnnxModel.load(path)
    assert str(e.value).startswith(f"{path} refers to external data (")
    assert "will not read other files" in str(e.value)
    assert sessions == []  # refused before onnxruntime could open anything
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_onnxruntime_is_given_the_bytes_never_the_path(exported, monkeypatch):
    """A path would let onnxruntime resolve external data next to the file on its own."""
    import onnxruntime as ort

    from zoo.export.runtime import OnnxModel

    _, onnx_path = exported("mlp-bn")
    real = ort.InferenceSession
    given: list[object] = []

    def spy(model, *args, **kwargs):
        given.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    model = OnnxModel.load(onnx_path)
    assert [type(g) for g in given] == [bytes] and given[0] == onnx_path.read_bytes()
    assert len(model.sample(3, seed=0)) == 3


def test_exported_files_are_self_contained(exported):
    from zoo.export.protobuf import external_tensors

    for preset in ("mlp-bn", "wavenet"):
        run, onnx_path = exported(preset)
        data = onnx_path.read_bytes()
        assert external_tensors(data, onnx_path) == []
        proto = onnx.load_from_string(data)
        assert all(t.data_location != TensorProto.EXTERNAL and not t.external_data
                   for t in proto.graph.initializer)
        assert sorted(p.name for p in run.iterdir() if p.suffix in (".onnx", ".data", ".bin")) \
            == ["model.onnx"]
