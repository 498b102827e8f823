"""The onnxruntime side: load a layerzoo .onnx file and sample from it, with no torch.

    model = OnnxModel.load("model.onnx")
    model.sample(n=20, seed=0)               # words, as zoo.sampling.sample gives them
    model.logits(np.zeros((1, model.context), np.int64))   # (1, V) float32

Imports numpy, onnxruntime and the standard library only. The file is read once and checked
before onnxruntime sees it: a file that is not ONNX, or any tensor that points at external data
(which onnxruntime would read from disk next to the file), is refused with one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from zoo import files
from zoo.errors import ArtifactError
from zoo.sampling import sample

__all__ = ["OnnxModel", "external_tensors"]

FORMAT_KEY, FORMAT = "layerzoo.format", "1"
INPUT, OUTPUT = "context", "logits"
MAX_NESTING = 64  # subgraphs inside subgraphs: deeper than any real model, shallow for a bomb

# protobuf field numbers of the onnx.proto messages that can hold a TensorProto
_MODEL = {7: "graph", 20: "training", 25: "function"}
_TRAINING = {1: "graph", 2: "graph"}
_FUNCTION = {7: "node"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_KINDS = {"graph": _GRAPH, "node": _NODE, "attribute": _ATTRIBUTE, "sparse": _SPARSE,
          "training": _TRAINING, "function": _FUNCTION}


class OnnxModel:
    """A layerzoo ONNX file in an onnxruntime session: int64 [B, T] contexts -> float32 [B, V]."""

    def __init__(self, session: ort.InferenceSession, path: Path, vocab: tuple[str, ...],
                 context: int, metadata: dict[str, str]) -> None:
        self.session = session
        self.path = path
        self.vocab = vocab
        self.context = context
        self.metadata = metadata

    @classmethod
    def load(cls, path: str | Path) -> OnnxModel:
        """Read, check and open ``path``; ArtifactError (one line) for anything unusable."""
        path = Path(path)
        data = _read(path)
        external = external_tensors(data, path)
        if external:
            raise ArtifactError(f"{path} refers to external data ({', '.join(external[:3])}); "
                                "layerzoo files are self-contained and it will not read other "
                                "files; re-export it with `zoo export`")
        options = ort.SessionOptions()
        options.log_severity_level = 4  # failures become ArtifactError; no stderr chatter
        # idle worker threads would otherwise busy-wait after each call, starving the caller
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime's errors share no base class
            raise ArtifactError(f"{path} is not a valid ONNX model: {_first_line(e)}") from None
        metadata = dict(session.get_modelmeta().custom_metadata_map)
        vocab, context = _read_metadata(metadata, path)
        _check_signature(session, path, context, len(vocab))
        return cls(session, path, vocab, context, metadata)

    @property
    def spec(self) -> dict[str, Any]:
        """The spec the model was built from (as ``Spec.to_dict`` wrote it)."""
        return json.loads(self.metadata.get("spec", "{}"))

    @property
    def metrics(self) -> dict[str, float] | None:
        """The training run's final losses, if the file carries them."""
        return json.loads(self.metadata["metrics"]) if "metrics" in self.metadata else None

    def logits(self, context: np.ndarray) -> np.ndarray:
        """Next-character logits float32 [B, V] for int64 token ids [B, T]."""
        x = np.asarray(context)
        if x.ndim != 2 or x.shape[1] != self.context:
            raise ArtifactError(f"contexts must have shape [batch, {self.context}], got "
                                f"{list(x.shape)}")
        if x.dtype.kind not in "iu":
            raise ArtifactError(f"contexts must be integer token ids, got dtype {x.dtype}")
        if x.size and (x.min() < 0 or x.max() >= len(self.vocab)):
            # onnxruntime's Gather wraps -1 to the last row silently; refuse instead
            raise ArtifactError(f"token ids must be in [0, {len(self.vocab) - 1}], got "
                                f"{int(x.min())}..{int(x.max())}")
        if not len(x):
            return np.zeros((0, len(self.vocab)), np.float32)
        x = np.ascontiguousarray(x, np.int64)  # (B, T)
        return self.session.run([OUTPUT], {INPUT: x})[0]  # (B, V) float32

    def sample(self, n: int, **options: Any) -> list[str]:
        """``zoo.sampling.sample`` over this model's logits (same seed, same words as torch)."""
        return sample(self.logits, vocab=self.vocab, context=self.context, n=n, **options)


def _read(path: Path) -> bytes:
    """The bytes of a regular file of at most 2 GiB (zoo.files) that may hold an ONNX model."""
    if path.is_dir():
        raise ArtifactError(f"{path} is a directory; expected an .onnx file (a run directory "
                            "is exported with `zoo export`)")
    data = files.read_bytes(path, files.ONNX, ArtifactError)
    if not data:
        raise ArtifactError(f"{path} is empty; expected an ONNX model")
    if data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ArtifactError(f"{path} is a Python pickle, not an ONNX model; layerzoo never "
                            "unpickles (it can run code)")
    if data[:2] == b"PK":
        raise ArtifactError(f"{path} is a zip archive (torch.save?), not an ONNX model")
    return data


def external_tensors(data: bytes, path: Path | str = "<bytes>") -> list[str]:
    """Names of the tensors of a serialized ModelProto that keep their data in other files.

    Walks the protobuf wire format itself (graph initializers, node attributes, subgraphs,
    sparse tensors, functions, training graphs), so it needs no onnx package.
    ArtifactError if ``data`` is not a well-formed protobuf message.
    """
    try:
        return list(_walk(memoryview(data), _MODEL, 0))
    except (ValueError, IndexError) as e:
        raise ArtifactError(f"{path} is not a valid ONNX model (corrupted or truncated: "
                            f"{e})") from None


def _walk(data: memoryview, fields: dict[int, str], depth: int) -> Iterator[str]:
    if depth > MAX_NESTING:
        raise ValueError(f"messages nested deeper than {MAX_NESTING}")
    for number, value in _fields(data):
        kind = fields.get(number)
        if kind is None or isinstance(value, int):
            continue
        if kind == "tensor":
            name = _tensor_external(value)
            if name is not None:
                yield name
        else:
            yield from _walk(value, _KINDS[kind], depth + 1)


def _tensor_external(data: memoryview) -> str | None:
    """The tensor's name (or '?') if it uses external data, else None."""
    name, external = "?", False
    for number, value in _fields(data):
        if number == _TENSOR_NAME and not isinstance(value, int):
            name = bytes(value).decode("utf-8", "replace") or "?"
        elif number == _TENSOR_LOCATION and value == 1:  # TensorProto.EXTERNAL
            external = True
        elif number == _TENSOR_EXTERNAL:
            external = True  # a location entry without the flag: refuse it all the same
    return repr(name) if external else None


def _fields(data: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """(field number, value) pairs of one message: ints for varints, zero-copy views else."""
    i, end = 0, len(data)
    while i < end:
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, i = _varint(data, i)
            yield number, value
        elif wire == 2:
            size, i = _varint(data, i)
            if i + size > end:
                raise ValueError("a field runs past the end of the data")
            yield number, data[i:i + size]
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
            if i > end:
                raise ValueError("a field runs past the end of the data")
        else:
            raise ValueError(f"wire type {wire} is not used by ONNX")


def _varint(data: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("a varint longer than 10 bytes")


def _read_metadata(meta: dict[str, str], path: Path) -> tuple[tuple[str, ...], int]:
    if FORMAT_KEY not in meta or "vocab" not in meta or "context" not in meta:
        raise ArtifactError(f"{path} has no layerzoo metadata; export it with `zoo export`")
    if meta[FORMAT_KEY] != FORMAT:
        raise ArtifactError(f"{path} has layerzoo format {meta[FORMAT_KEY]!r}; this layerzoo "
                            f"reads format {FORMAT!r} (upgrade layerzoo)")
    try:
        vocab = json.loads(meta["vocab"])
        context = int(meta["context"])
        for key in ("spec", "metrics", "versions"):
            if key in meta:
                json.loads(meta[key])
    except ValueError as e:
        raise ArtifactError(f"{path} has corrupted layerzoo metadata ({e}); export it again "
                            "with `zoo export`") from None
    if (not isinstance(vocab, list) or len(vocab) < 2 or vocab[0] != "."
            or not all(isinstance(c, str) and len(c) == 1 for c in vocab)
            or len(set(vocab)) != len(vocab) or context < 1):
        raise ArtifactError(f"{path} has corrupted layerzoo metadata (vocab or context); export "
                            "it again with `zoo export`")
    return tuple(vocab), context


def _check_signature(session: ort.InferenceSession, path: Path, context: int,
                     size: int) -> None:
    ins, outs = session.get_inputs(), session.get_outputs()
    want_in, want_out = f"{INPUT} int64 [batch, {context}]", f"{OUTPUT} float32 [batch, {size}]"
    if (len(ins) != 1 or ins[0].name != INPUT or ins[0].type != "tensor(int64)"
            or not _fits(ins[0].shape, context)):
        got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in ins)
        raise ArtifactError(f"{path} takes [{got}]; a layerzoo model takes {want_in}")
    if (len(outs) != 1 or outs[0].name != OUTPUT or outs[0].type != "tensor(float)"
            or not _fits(outs[0].shape, size)):
        got = ", ".join(f"{o.name} {o.type} {o.shape}" for o in outs)
        raise ArtifactError(f"{path} gives [{got}]; a layerzoo model gives {want_out}")


def _fits(shape: list[Any], width: int) -> bool:
    """[batch, width], where a symbolic (str/None) width is accepted too."""
    return len(shape) == 2 and (not isinstance(shape[1], int) or shape[1] == width)


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."
