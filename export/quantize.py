"""int8: a layerzoo ONNX file, dynamically quantised with onnxruntime's own tools.

    zoo export runs/mlp-bn --int8            # writes runs/mlp-bn/model.int8.onnx
    quantize_onnx(Path("model.onnx"), Path("model.int8.onnx"))

Weights of MatMul/Gemm/Gather become int8 (per output channel where the op allows it); the
activations are quantised on the fly at run time (``quantize_dynamic``), so no calibration
data is needed. onnxruntime's pre-processing (shape inference and graph optimisation,
``quant_pre_process``) runs first, as its documentation asks. The result keeps every layerzoo
metadata_prop and adds ``layerzoo.quantized = "int8-dynamic"`` (export/contract.py); it is
judged by validation-loss drift (``zoo check``), not by logit equality. No torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from zoo import atomic, runpaths
from zoo.errors import ArtifactError
from zoo.export.clean import clean_proto
from zoo.export.contract import INT8_DYNAMIC, QUANTIZED_KEY
from zoo.export.runtime import OnnxModel

__all__ = ["quantize_onnx", "PER_CHANNEL"]

# one scale per output column: lower loss drift, same speed (docs/benchmarks.md, int8 vs fp32)
PER_CHANNEL = True


def quantize_onnx(src: Path, dst: Path) -> Path:
    """Write ``src`` (a layerzoo fp32 .onnx file) to ``dst`` dynamically quantised to int8.

    ArtifactError, with nothing written, if ``src`` is not a usable layerzoo file, is already
    quantised, or ``dst`` cannot be written. Returns ``dst``.
    """
    src, dst = Path(src), Path(dst)
    model = OnnxModel.load(src)  # refuses foreign, broken or external-data files
    if model.quantized:
        raise ArtifactError(f"{src} is already quantised ({model.quantized}); quantise the fp32 "
                            "file (zoo export RUN --int8)")
    if dst.is_dir() and not runpaths.is_run(dst):
        raise ArtifactError(f"{dst} is a directory; give a file name such as "
                            f"{dst / runpaths.EXPORTS[1]}")
    runpaths.check_target(dst, "the int8 file")
    if not dst.parent.is_dir():
        raise ArtifactError(f"cannot write {dst}: folder {dst.parent} does not exist")
    props = dict(model.metadata)
    props[QUANTIZED_KEY] = INT8_DYNAMIC
    with tempfile.TemporaryDirectory(prefix="layerzoo-int8-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        try:
            with _quiet():
                _quantize(src, pre, out)
            proto = onnx.load(out, load_external_data=False)
        except Exception as e:  # onnxruntime's tools raise many kinds
            raise ArtifactError(f"cannot quantise {src}: {' '.join(str(e).split())[:300]}"
                                ) from None
    clean_proto(proto)
    onnx.helper.set_model_props(proto, props)
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ArtifactError(f"the quantised graph of {src} fails onnx.checker: "
                            f"{' '.join(str(e).split())[:300]}") from None
    try:
        atomic.write_bytes(dst, proto.SerializeToString())
    except OSError as e:
        raise ArtifactError(f"cannot write {dst}: {e.strerror or e}") from None
    return dst


def _quantize(src: Path, pre: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    # uint8 weights (u8u8), not int8: onnxruntime's u8s8 kernels on x86 CPUs without VNNI
    # (AVX2) add pairs of products in int16 with saturation (VPMADDUBSW), so the same file gave
    # other logits there than on VNNI CPUs or in onnxruntime-web (up to 0.5 apart on a tiny
    # mlp-bn); u8u8 is exact integer arithmetic everywhere, so every backend gives the same words
    quantize_dynamic(pre, out, per_channel=PER_CHANNEL, weight_type=QuantType.QUInt8,
                     nodes_to_exclude=_routings(onnx.load(pre, load_external_data=False)),
                     extra_options={"MatMulConstBOnly": True})


def _routings(proto: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose constant matrix holds only zeros and ones: it routes
    values (attention's step spreads each head's weight over the head's features) and is no
    learned weight, so it stays fp32 rather than rounding the activations it routes."""
    zero_one = {init.name for init in proto.graph.initializer
                if _zero_one(numpy_helper.to_array(init))}
    return [node.name for node in proto.graph.node
            if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in zero_one]


def _zero_one(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.size > 1 and a.dtype.kind == "f" and bool(np.isin(a, (0, 1)).all())


@contextlib.contextmanager
def _quiet():
    """onnxruntime's quantiser logs warnings (e.g. 'Please consider pre-processing') to root."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
