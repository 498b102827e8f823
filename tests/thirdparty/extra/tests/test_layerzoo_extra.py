"""What a plugin author writes: one conformance check per layer, through ``zoo.testing``.

Run with the plugin installed: ``pip install ./tests/thirdparty/extra && pytest``. Only
``hardswishish`` brings its own ONNX translation, so only it pays for an export here; the
project's tests/test_conformance.py exports every registered layer anyway.
"""

from __future__ import annotations

import pytest
from layerzoo_extra import HARDSWISHISH, RMSNORM, SWISH

from zoo.testing import check_layer


@pytest.mark.parametrize("layer", [SWISH, RMSNORM], ids=lambda layer: layer.name)
def test_layer_conforms(layer) -> None:
    report = check_layer(layer, onnx=False)
    assert report.plugin == "extra"
    assert report.passed == ["shapes", "forward", "gradients", "weights", "batch independence",
                             "threads"]


def test_custom_op_layer_conforms_and_exports_through_its_translation() -> None:
    pytest.importorskip("zoo.export.onnx", reason="zoo.export.onnx is not installed")
    report = check_layer(HARDSWISHISH)
    assert report.passed == ["shapes", "forward", "gradients", "weights", "batch independence",
                             "threads", "onnx"]


def test_swish_with_a_parameter() -> None:
    assert check_layer(SWISH, params={"beta": 2.0}, onnx=False).spec[1] == {
        "type": "swish", "beta": 2.0}
