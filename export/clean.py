"""Strip an ONNX model of everything that describes the machine that exported it.

    clean_proto(proto)      # in place, before the layerzoo metadata_props are set

torch's exporter records, per node, metadata_props with stack traces (absolute paths of the
exporting machine and its source lines) and doc strings; a deployment file must carry none of
that. ``clean_proto`` walks every message of the model (graphs, subgraphs in attributes,
functions, training info, tensors, value infos) by protobuf reflection, so a field added to a
later onnx.proto is covered as long as it is called ``doc_string`` or ``metadata_props``; it
clears those, renames every node to ``<op>_<n>`` (node names are labels, not references) and
renames any value whose name is not a plain identifier-like token, consistently everywhere it
is referenced. The model's own metadata_props are cleared too: the writer sets layerzoo's.
Imports onnx only (no torch).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import onnx
from google.protobuf.message import Message

__all__ = ["clean_proto", "SAFE_NAME"]

SAFE_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")  # no '/', quotes, spaces or newlines
_STRIPPED = ("doc_string", "metadata_props")


def clean_proto(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Remove doc strings, metadata_props and path-like names from ``proto`` (in place)."""
    for message in _messages(proto):
        for name in _STRIPPED:
            if name in message.DESCRIPTOR.fields_by_name:
                message.ClearField(name)
    _rename(proto)
    return proto


def _messages(message: Message) -> Iterator[Message]:
    """``message`` and every message nested in it, depth first."""
    stack = [message]
    while stack:
        current = stack.pop()
        yield current
        for field, value in current.ListFields():
            if field.type != field.TYPE_MESSAGE:
                continue
            if isinstance(value, Message):
                stack.append(value)
            else:  # a repeated message field (onnx.proto declares no maps)
                stack.extend(reversed(value))  # popped in order: nodes numbered as listed


def _graphs(proto: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    return (m for m in _messages(proto) if isinstance(m, onnx.GraphProto))


def _nodes(proto: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    return (m for m in _messages(proto) if isinstance(m, onnx.NodeProto))


def _rename(proto: onnx.ModelProto) -> None:
    """Nodes become ``<op>_<n>``; unsafe value names become ``value_<n>`` everywhere."""
    values: dict[str, str] = {}

    def safe(name: str) -> str:
        if not name or SAFE_NAME.fullmatch(name):
            return name
        return values.setdefault(name, f"value_{len(values)}")

    for count, node in enumerate(_nodes(proto)):
        node.name = f"{node.op_type}_{count}"
        node.input[:] = [safe(n) for n in node.input]
        node.output[:] = [safe(n) for n in node.output]
    for graph in _graphs(proto):
        graph.name = safe(graph.name) or "graph"
        for group in (graph.input, graph.output, graph.value_info, graph.initializer):
            for item in group:
                item.name = safe(item.name)
        for sparse in graph.sparse_initializer:
            sparse.values.name = safe(sparse.values.name)
            sparse.indices.name = safe(sparse.indices.name)
    for function in proto.functions:
        function.input[:] = [safe(n) for n in function.input]
        function.output[:] = [safe(n) for n in function.output]
