"""The browser page: a static folder that samples a layerzoo model with onnxruntime-web.

    zoo web model.onnx -o site/            # write the folder
    zoo web --serve -o site/               # serve it on http://127.0.0.1:8000/
    node site/sample.mjs -n 20 --seed 0    # the same words as `zoo sample model.onnx ...`

The folder holds ``index.html`` (a form and the model's card), the model as ``model.onnx``,
``model.json`` (what the sampler needs and the card shows: onnxruntime-web cannot read an ONNX
file's custom metadata), the JavaScript sampler as ES modules (the files of ``web/`` in the
checkout, installed as package data ``zoo.webpage``) and the three files of onnxruntime-web's
single-threaded wasm backend. Nothing is fetched from the network, so the page works offline.

onnxruntime-web comes from npm (``package.json`` and ``package-lock.json`` pin it; ``npm ci``
installs it, as ``make`` does), and a wheel carries its three files as package data
(``zoo/webpage/onnxruntime-web``, copied from ``node_modules`` by setup.py when the wheel is
built). They are looked up in, first to last: ``ort_dir`` (``zoo web --ort-dir``), the
environment variable ``LAYERZOO_ORT_DIR``, the wheel's copy (an installed layerzoo) or
``node_modules/onnxruntime-web/dist`` of the layerzoo checkout (an editable install), then
``node_modules/onnxruntime-web/dist`` of the current folder. Reading the model needs no torch;
torch is only used, when the spec's plugins are installed, to print the spec's layer summary
on the card.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.resources
import json
import os
import shutil
import sys
import tempfile
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import runpaths
from zoo.errors import ArtifactError, ZooError
from zoo.export.contract import Metadata
from zoo.export.runtime import OnnxModel

if TYPE_CHECKING:
    from zoo.registry import Registry

__all__ = ["build_site", "find_ort_dir", "server", "serve", "Site", "ORT_ENV", "ORT_FILES",
           "ORT_VERSION", "PAGE_FILES"]

ORT_ENV = "LAYERZOO_ORT_DIR"
ORT_VERSION = "1.30.0"  # package.json's pin, named to a wheel user who has no package.json
ORT_SHIPPED = "onnxruntime-web"  # the wheel's copy, a folder of package zoo.webpage
ORT_SUBDIR = Path("node_modules") / "onnxruntime-web" / "dist"
# the wasm-only ES module build of onnxruntime-web, the emscripten glue it imports and the
# SIMD wasm binary (the threaded build also runs on one thread; the jsep/jspi/asyncify
# variants are for WebGPU/WebNN, which the page does not use)
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
PAGE_FILES = ("index.html", "page.mjs", "model.mjs", "sampler.mjs", "rng.mjs", "sample.mjs")
MODEL_NAME, SIDECAR = "model.onnx", "model.json"
SITE_FILES = (MODEL_NAME, SIDECAR, *PAGE_FILES, *ORT_FILES)  # everything a folder holds
CHECKOUT_HINT = "run `npm ci` in the layerzoo checkout (make test does it)"
INSTALL_HINT = (f"install onnxruntime-web {ORT_VERSION} with "
                f"`npm install onnxruntime-web@{ORT_VERSION}` in the current folder")
MIME = {".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
        ".json": "application/json", ".onnx": "application/octet-stream"}


@dataclass(frozen=True)
class Site:
    """A written ``zoo web`` folder."""

    path: Path
    files: tuple[str, ...]  # names, in the order written
    bytes: int  # total size


def build_site(model_path: str | Path, out: str | Path, *, ort_dir: str | Path | None = None,
               registry: Registry | None = None) -> Site:
    """Write the page for the layerzoo .onnx file ``model_path`` into the new folder ``out``.

    ``out`` must not exist or be empty. Every check runs before anything is written; a new
    folder appears whole or not at all (it is assembled next to ``out`` and renamed), an empty
    one that exists (``.``, or a link to one) is kept and gets each file whole.
    ArtifactError (one line) for an unusable model, a run directory, a non-empty ``out`` or
    missing onnxruntime-web files. ``registry`` builds the spec for the card's layer summary.
    """
    model_path, out = Path(model_path), Path(out)
    if model_path.is_dir():
        raise ArtifactError(f"{model_path} is a directory; `zoo web` takes an .onnx file (export "
                            f"a run with `zoo export {model_path} -o model.onnx`)")
    _check_out(out)
    sources = find_ort_dir(ort_dir)
    # the contract's checks (export/contract.py): layerzoo metadata, signature, no external data
    model = OnnxModel.load(model_path)
    sidecar = _sidecar(model, model_path, registry, _ort_version(sources))
    page = importlib.resources.files("zoo.webpage")
    # an empty folder that exists ('.', or one reached through a link) is kept and filled:
    # removed and replaced, it would leave a shell inside it in a deleted folder
    keep = out.is_dir()
    target = out.resolve() if keep else out
    staging = Path(tempfile.mkdtemp(prefix=".zoo-web-" if keep else f".{out.name}.",
                                    dir=target if keep else out.parent))
    try:
        (staging / MODEL_NAME).write_bytes(model.data)  # the bytes checked and hashed
        (staging / SIDECAR).write_text(json.dumps(sidecar, ensure_ascii=False, indent=1) + "\n",
                                       encoding="utf-8")
        for name in PAGE_FILES:
            (staging / name).write_bytes((page / name).read_bytes())
        for name in ORT_FILES:
            shutil.copyfile(sources / name, staging / name)
        staging.chmod(0o755)  # mkdtemp makes it private; a served folder is for reading
        if keep:  # each file moved in whole, then the staging folder removed
            for name in SITE_FILES:
                os.replace(staging / name, target / name)
            staging.rmdir()
        else:
            staging.rename(out)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        if keep:  # the folder was empty: leave it so
            for name in SITE_FILES:
                (target / name).unlink(missing_ok=True)
        raise ArtifactError(f"cannot write {out}: {e.strerror or e}") from None
    return Site(out, SITE_FILES, sum((out / name).stat().st_size for name in SITE_FILES))


def find_ort_dir(override: str | Path | None = None) -> Path:
    """The folder holding onnxruntime-web's wasm-backend files (see the module docstring)."""
    if override is None and os.environ.get(ORT_ENV):
        override = os.environ[ORT_ENV]
    page = Path(str(importlib.resources.files("zoo.webpage")))
    # an editable install's zoo.webpage is web/ of the checkout, next to its package.json;
    # an installed one holds the wheel's copy
    checkout = page.resolve().parent
    in_checkout = (checkout / "package.json").is_file()
    if override is not None:
        candidates = [Path(override)]
    else:
        installed = checkout / ORT_SUBDIR if in_checkout else page / ORT_SHIPPED
        candidates = list(dict.fromkeys([installed, Path.cwd() / ORT_SUBDIR]))
    for folder in candidates:
        if all((folder / name).is_file() for name in ORT_FILES):
            return folder
    where = " or ".join(str(c) for c in candidates)
    missing = [n for n in ORT_FILES if not (candidates[0] / n).is_file()]
    hint = CHECKOUT_HINT if in_checkout else INSTALL_HINT
    raise ArtifactError(f"onnxruntime-web's wasm files are missing ({', '.join(missing)} not in "
                        f"{where}); {hint}, or point --ort-dir or {ORT_ENV} at a folder that "
                        "has them")


def server(folder: str | Path, *, port: int = 8000, host: str = "127.0.0.1"
           ) -> http.server.ThreadingHTTPServer:
    """A standard-library HTTP server for a ``zoo web`` folder, listening, not yet serving.

    ``port=0`` picks a free port (``server.server_address[1]``). Use it as a context manager
    and call ``serve_forever()``; ``shutdown()`` from another thread stops it.
    """
    folder = Path(folder)
    if not (folder / "index.html").is_file() or not (folder / SIDECAR).is_file():
        raise ArtifactError(f"{folder} is not a `zoo web` folder (no index.html and "
                            f"{SIDECAR}); write one with `zoo web MODEL.onnx -o {folder}`")
    handler = functools.partial(_Handler, directory=str(folder))
    try:
        return _Server((host, port), handler)
    except OSError as e:
        raise ArtifactError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


def serve(folder: str | Path, *, port: int = 8000, host: str = "127.0.0.1",
          ready: Callable[[str], None] | None = None) -> None:
    """Serve a ``zoo web`` folder until interrupted; ``ready(url)`` once it listens."""
    with server(folder, port=port, host=host) as httpd:
        if ready is not None:
            ready(f"http://{host}:{httpd.server_address[1]}/")
        try:
            httpd.serve_forever()
        except KeyboardInterrupt:
            pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True  # a client that never finishes its request cannot hold up a stop

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (a tab closed during a download) is nothing to report;
        anything else is one line, never a traceback."""
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            print(f"zoo web: a request from {client_address[0]} failed: "
                  f"{type(error).__name__}: {error}", file=sys.stderr)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder's own files by their plain names, and nothing else: no listing of a
    folder, no dotfile, no link that leads out of the folder, no subfolder."""

    # browsers refuse ES modules served as application/octet-stream, Python's guess for .mjs
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **MIME}

    def send_head(self) -> Any:
        name = self._site_file()
        if name is None:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        self.path = "/" + urllib.parse.quote(name)
        return super().send_head()

    def _site_file(self) -> str | None:
        """The name of the file of the folder this request asks for ('/' is index.html)."""
        path = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        name = path[1:] if path.startswith("/") else path
        name = name or "index.html"
        if any(c in name for c in "/\\\0") or name.startswith("."):
            return None
        root = Path(self.directory).resolve()
        try:
            real = (root / name).resolve(strict=True)
        except (OSError, RuntimeError):  # missing, or a loop of links
            return None
        return name if real.parent == root and real.is_file() else None

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would bury the URL printed at start."""


def _check_out(out: Path) -> None:
    runpaths.check_target(out, "the page", allowed=())
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out} exists and is not a folder; give a new folder for the page")
    if out.is_dir() and any(out.iterdir()):
        raise ArtifactError(f"{out} is not empty; give a new or empty folder (zoo web does not "
                            "overwrite files)")
    if not out.parent.is_dir():
        raise ArtifactError(f"cannot write {out}: folder {out.parent} does not exist")


def _sidecar(model: OnnxModel, source: Path, registry: Registry | None,
             ort_version: str | None) -> dict[str, Any]:
    """model.json: the file's layerzoo metadata, plus the card's summary when it can be built."""
    meta = model.meta
    summary, parameters = _summary(meta, source, registry)
    return {"model": MODEL_NAME, "sha256": hashlib.sha256(model.data).hexdigest(),
            "source": source.name, "vocab": list(meta.vocab),
            "context": meta.context, "spec": meta.spec, "metrics": meta.metrics,
            "quantized": model.quantized, "versions": meta.versions,
            "parameters": parameters, "summary": summary, "onnxruntime_web": ort_version,
            "format": meta.format,
            "state": [[name, list(dims), cache] for name, dims, cache in meta.state]}


def _summary(meta: Metadata, source: Path, registry: Registry | None
             ) -> tuple[str | None, int | None]:
    """The spec's layer table and parameter count, or (None, None) if its plugins are absent."""
    try:
        import torch

        from zoo import report
        from zoo.build import build_model
        from zoo.spec import Spec

        spec = Spec.from_dict(meta.spec, source=str(source))
        with torch.random.fork_rng():  # the weights are thrown away: leave the caller's RNG be
            model = build_model(spec, len(meta.vocab), registry=registry)
    except (ZooError, ImportError):
        return None, None
    return report.summary(model, source.name), model.num_parameters()


def _ort_version(folder: Path) -> str | None:
    """The version in onnxruntime-web's package.json: the folder's own (the wheel's copy) or
    its parent's (node_modules/onnxruntime-web/dist); None if neither names onnxruntime-web."""
    for path in (folder / "package.json", folder.parent / "package.json"):
        try:
            package = json.loads(path.read_text(encoding="utf-8"))
            if package["name"] == "onnxruntime-web":
                return package["version"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None
