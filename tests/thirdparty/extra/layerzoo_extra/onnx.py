"""The ONNX translation of ``layerzoo_extra::hardswishish``: ONNX HardSwish is the same function.

A plain function of onnxscript opset-20 ops, traced by the exporter (needs onnxscript).
"""

from __future__ import annotations

from onnxscript import opset20 as op


def hardswishish_onnx(x):
    # HardSwish(x) = x * max(0, min(1, x/6 + 1/2)) = x * clamp(x + 3, 0, 6) / 6
    return op.HardSwish(x)
