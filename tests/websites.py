"""The ``site`` fixture of tests/test_web*.py: `zoo web` folders of the tiny exported runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from zoo.export.quantize import quantize_onnx
from zoo.export.web import build_site

_SITES: dict[tuple[str, bool], Path] = {}  # shared by every test module of the session


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory,
         exported: Callable[[str], tuple[Path, Path]]) -> Callable[..., Path]:
    """``site("mlp-bn", int8=False)`` -> a `zoo web` folder of that preset's run, built once."""

    def get(preset: str, int8: bool = False) -> Path:
        if (preset, int8) not in _SITES:
            _, path = exported(preset)
            root = tmp_path_factory.mktemp(f"web-{preset}")
            if int8:
                path = quantize_onnx(path, root / "model.int8.onnx")
            _SITES[preset, int8] = build_site(path, root / "site").path
        return _SITES[preset, int8]

    return get
