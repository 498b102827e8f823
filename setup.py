"""Build steps of the layerzoo wheel and sdist; the metadata lives in pyproject.toml.

The wheel ships the three onnxruntime-web files that `zoo web` copies into a page, as
``zoo/webpage/onnxruntime-web/`` with a ``package.json`` naming their version, so a wheel user
needs no npm. They are copied at build time from ``node_modules/onnxruntime-web`` (``npm ci``
installs the version ``package.json`` pins) into the build folder, never into the source tree.
The sdist carries the same files under the same ``node_modules`` path, so a wheel built from it
(``python -m build``) has them too. Without ``node_modules`` the wheel is built without them
and ``zoo web`` names what to install; ``pip install -e .`` copies nothing (``zoo web`` finds
the checkout's ``node_modules``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist
from setuptools.errors import SetupError

ROOT = Path(__file__).resolve().parent
ORT = Path("node_modules", "onnxruntime-web")
# the files zoo web copies (zoo.export.web.ORT_FILES; tests/test_wheel.py checks the wheel)
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
SHIPPED = Path("zoo", "webpage", "onnxruntime-web")  # in the wheel


def ort_version() -> str | None:
    """The version of node_modules' onnxruntime-web, None if it is not installed; SetupError
    if it is not the version package.json pins or a file zoo web needs is missing."""
    source = ROOT / ORT
    if not source.is_dir():
        return None
    pin = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))
    pinned = pin["dependencies"]["onnxruntime-web"]
    found = json.loads((source / "package.json").read_text(encoding="utf-8"))["version"]
    if found != pinned:
        raise SetupError(f"{source} holds onnxruntime-web {found}, package.json pins {pinned}; "
                         "run `npm ci`")
    missing = [name for name in ORT_FILES if not (source / "dist" / name).is_file()]
    if missing:
        raise SetupError(f"{source / 'dist'} lacks {', '.join(missing)}; run `npm ci`")
    return found


class BuildPy(build_py):
    """build_py, then onnxruntime-web's files into the build folder's zoo/webpage."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / SHIPPED
        shutil.rmtree(target, ignore_errors=True)  # a build folder left from an earlier build
        version = ort_version()
        if version is None:
            self.warn(f"no {ORT}: the wheel is built without onnxruntime-web (zoo web will "
                      "say what to install)")
            return
        target.mkdir(parents=True)
        for name in ORT_FILES:
            shutil.copyfile(ROOT / ORT / "dist" / name, target / name)
        (target / "package.json").write_text(json.dumps(
            {"name": "onnxruntime-web", "version": version, "license": "MIT"}) + "\n",
            encoding="utf-8")


class Sdist(sdist):
    """sdist, with onnxruntime-web's files (and its package.json) under node_modules/."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        if ort_version() is None:
            self.warn(f"no {ORT}: the sdist is built without onnxruntime-web")
            return
        for name in ("package.json", *(f"dist/{f}" for f in ORT_FILES)):
            target = Path(base_dir) / ORT / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / ORT / name, target)


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
