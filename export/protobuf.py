"""A reader of the ONNX protobuf wire format, for the checks the runtime makes before
onnxruntime sees a file: which tensors keep their data in other files, and which ops the graph
holds.

    external_tensors(data)   # ["'w'"]: names of tensors with external data; [] for none
    op_counts(data)          # {"Gemm": 2, "Tanh": 1}: the main graph's nodes per op type

Standard library only: the onnxruntime side (``zoo.export.runtime``, ``zoo sample``) runs
without the onnx package. Why not ``onnx.load`` and ``onnx.external_data_helper``: importing
onnx 1.23 costs 1.6-2.4 s on top of numpy and onnxruntime's 0.5-0.6 s (medians of 9 runs in
fresh processes, a loaded 2-core machine; ml_dtypes' extension is most of it), while walking a
48 kB model takes 0.06 ms (``onnx.load_from_string``: 0.03 ms). Every field is read as a
zero-copy view of the bytes; a message that is not well formed raises ValueError or
IndexError, which ``external_tensors`` turns into one ArtifactError line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zoo.errors import ArtifactError

__all__ = ["external_tensors", "op_counts", "graph_ops", "MAX_NESTING"]

MAX_NESTING = 64  # subgraphs inside subgraphs: deeper than any real model, shallow for a bomb

# The protobuf field numbers of every onnx.proto message field through which a TensorProto can
# be reached (tests/test_runtime.py derives that set from onnx's own descriptors and checks it
# equals these tables):
# ModelProto.graph/training_info/functions, TrainingInfoProto.initialization/algorithm,
# FunctionProto.node/attribute_proto (attribute defaults), GraphProto.node/initializer/
# sparse_initializer, NodeProto.attribute, AttributeProto.t/g/tensors/graphs/sparse_tensor/
# sparse_tensors, SparseTensorProto.values/indices.
_MODEL = {7: "graph", 20: "training", 25: "function"}
_TRAINING = {1: "graph", 2: "graph"}
_FUNCTION = {7: "node", 11: "attribute"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}
_SPARSE = {1: "tensor", 2: "tensor"}
_TENSOR_NAME, _TENSOR_EXTERNAL, _TENSOR_LOCATION = 8, 13, 14
_MODEL_GRAPH, _GRAPH_NODE, _NODE_OP_TYPE = 7, 1, 4  # ModelProto.graph, .node, NodeProto.op_type
_KINDS = {"graph": _GRAPH, "node": _NODE, "attribute": _ATTRIBUTE, "sparse": _SPARSE,
          "training": _TRAINING, "function": _FUNCTION}


def external_tensors(data: bytes, path: Path | str = "<bytes>") -> list[str]:
    """Names of the tensors of a serialized ModelProto that keep their data in other files.

    Walks the protobuf wire format itself (graph initializers, node attributes, subgraphs,
    sparse tensors, functions and their attribute defaults, training graphs), so it needs no
    onnx package and opens no file.
    ArtifactError if ``data`` is not a well-formed protobuf message.
    """
    try:
        return list(_walk(memoryview(data), _MODEL, 0))
    except (ValueError, IndexError) as e:
        raise ArtifactError(f"{path} is not a valid ONNX model (corrupted or truncated: "
                            f"{e})") from None


def op_counts(data: bytes) -> dict[str, int]:
    """How many nodes of each op type the main graph of a serialized ModelProto holds, in the
    order the types first appear."""
    counts: dict[str, int] = {}
    for number, graph in _fields(memoryview(data)):
        if number != _MODEL_GRAPH or isinstance(graph, int):
            continue
        for field, node in _fields(graph):
            if field != _GRAPH_NODE or isinstance(node, int):
                continue
            for key, value in _fields(node):
                if key == _NODE_OP_TYPE and not isinstance(value, int):
                    op = bytes(value).decode("utf-8", "replace")
                    counts[op] = counts.get(op, 0) + 1
    return counts


def graph_ops(data: bytes) -> set[str]:
    """The op types of the main graph's nodes of a serialized ModelProto."""
    return set(op_counts(data))


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
