"""The wheel, installed without the checkout: built from the sdist as `python -m build` builds
it, it holds the packages, their data and onnxruntime-web's three files and nothing else; in a
fresh venv, from a folder outside the source tree, its `zoo` trains, exports, samples, checks,
writes and checks a plugin, and writes and serves a page. A wheel built without node_modules
has no onnxruntime-web, and its `zoo web` names exactly what to install.

The fresh venv gets layerzoo's dependencies as links to this environment's installed
distributions (no download, no copy), leaving out layerzoo and every editable install, so the
layerzoo code it runs is the wheel's and the checkout is not on its path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from zoo.export.web import ORT_ENV, ORT_FILES, ORT_SUBDIR, ORT_VERSION, PAGE_FILES
from zoo.registry import ALLOW_ENV, STRICT_ENV

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
    "version"]
ORT_SOURCE = ROOT / ORT_SUBDIR  # what `npm ci` installed; the wheel's copy must equal it
SHIPPED = "zoo/webpage/onnxruntime-web/"
# the source tree, without what git ignores (a build, a venv, caches) or node_modules
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "node_modules", "build", "dist",
                                    "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
                                    ".hypothesis", "runs", "site", "out")
TIMEOUT = 600
Zoo = Callable[..., subprocess.CompletedProcess]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
        expect: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=TIMEOUT)
    assert done.returncode == expect, (args, done.stdout[-3000:], done.stderr[-3000:])
    return done


def wheel_files() -> dict[str, Path]:
    """What a wheel of this tree must hold under zoo/ (pyproject.toml's packages and their
    data), each name with its source file."""
    packages = {"zoo": ROOT / "zoo", "zoo/plugins": ROOT / "plugins",
                "zoo/export": ROOT / "export", "zoo/bundled": ROOT / "data",
                "zoo/webpage": ROOT / "web"}
    data = {"zoo": ["plugin_template/*.tmpl"], "zoo/plugins": ["presets/*.toml"],
            "zoo/bundled": ["names.txt"], "zoo/webpage": ["*.mjs", "*.html"]}
    return {f"{package}/{path.relative_to(folder).as_posix()}": path
            for package, folder in packages.items()
            for pattern in ["*.py", *data.get(package, [])] for path in folder.glob(pattern)}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"sdist", "wheel", "bare"}: the sdist and its wheel, built from a copy of the source tree
    with node_modules, and a wheel built from the copy without node_modules."""
    assert all((ORT_SOURCE / name).is_file() for name in ORT_FILES), \
        f"{ORT_SOURCE}: run `npm ci` (make does)"
    tmp = tmp_path_factory.mktemp("wheel")
    src, out, bare = tmp / "src", tmp / "dist", tmp / "bare"
    shutil.copytree(ROOT, src, symlinks=True, ignore=NOT_SOURCE)
    (src / "node_modules").symlink_to(ROOT / "node_modules")
    run(sys.executable, "-c", "import sys; from setuptools import build_meta; "
        "build_meta.build_sdist(sys.argv[1])", out, cwd=src)
    (sdist,) = out.glob("*.tar.gz")
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
           "--no-index", "--disable-pip-version-check", "-q"]
    run(*pip, "-w", out, sdist, cwd=tmp)  # `python -m build`: the wheel from the sdist
    (src / "node_modules").unlink()
    run(*pip, "-w", bare, src, cwd=tmp)  # `pip wheel .` without node_modules
    (wheel,) = out.glob("*.whl")
    (bare_wheel,) = bare.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel, "bare": bare_wheel}


def _not_fresh(site: Path) -> set[str]:
    """Top-level names of site that a fresh venv would not have: layerzoo and every editable
    install (their dist-info, .pth files, finders), and compiled caches."""
    names = {"__pycache__"}
    for info in site.glob("*.dist-info"):
        direct = info / "direct_url.json"
        editable = direct.is_file() and json.loads(direct.read_text(encoding="utf-8")).get(
            "dir_info", {}).get("editable", False)
        if editable or info.name.split("-")[0].lower() == "layerzoo":
            names.add(info.name)
            record = (info / "RECORD").read_text(encoding="utf-8").splitlines()
            names.update(line.split(",")[0].split("/")[0] for line in record)
    return names


def fresh_venv(root: Path, wheel: Path) -> tuple[Path, dict[str, str]]:
    """A venv at root with this environment's distributions but layerzoo's linked in, and
    ``wheel`` pip-installed; returns its bin folder and an environment that uses it."""
    run(sys.executable, "-m", "venv", "--without-pip", root, cwd=root.parent)
    python = root / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=root).stdout.strip())
    ours = Path(sysconfig.get_paths()["purelib"])
    skip = _not_fresh(ours)
    for entry in ours.iterdir():
        if entry.name not in skip:
            (site / entry.name).symlink_to(entry)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", ALLOW_ENV, STRICT_ENV, ORT_ENV)}
    env["PATH"] = os.pathsep.join([str(root / "bin"), env.get("PATH", "")])
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel, cwd=root,
        env=env)
    return root / "bin", env


@pytest.fixture(scope="module")
def installed(built: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, dict[str, str], Path]:
    """(bin folder, environment, work folder) of a fresh venv with the wheel installed; the
    work folder is outside the source tree and has no node_modules."""
    tmp = tmp_path_factory.mktemp("installed")
    bin_dir, env = fresh_venv(tmp / "venv", built["wheel"])
    (tmp / "work").mkdir()
    return bin_dir, env, tmp / "work"


def zoo_in(bin_dir: Path, env: dict[str, str], cwd: Path) -> Zoo:
    def zoo(*args: str | Path, expect: int = 0) -> subprocess.CompletedProcess:
        return run(bin_dir / "zoo", *args, cwd=cwd, env=env, expect=expect)

    return zoo


@pytest.fixture(scope="module")
def zoo(installed: tuple[Path, dict[str, str], Path]) -> Zoo:
    """The wheel's ``zoo``, run in the work folder: ``zoo("train", ...)``."""
    return zoo_in(*installed)


@pytest.fixture(scope="module")
def model(zoo: Zoo, installed: tuple[Path, dict[str, str], Path]) -> Path:
    """The work folder's run/ and model.onnx: `zoo train` on the wheel's names.txt (no --data),
    then `zoo export`."""
    trained = zoo("train", "mlp-bn", "--steps", "30", "--out", "run", "--samples", "0")
    assert "trained run" in trained.stdout
    exported = zoo("export", "run", "-o", "model.onnx")
    assert exported.stdout.startswith("wrote model.onnx")
    return installed[2] / "model.onnx"


def test_the_sdist_is_the_source_tree_with_onnxruntime_web(built: dict[str, Path]) -> None:
    import tarfile

    with tarfile.open(built["sdist"]) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"setup.py", "pyproject.toml", "MANIFEST.in", "package.json", "package-lock.json",
            "CHANGELOG.md", "tests/conftest.py", "docs/deployment.md"} <= names
    assert {path.relative_to(ROOT).as_posix() for path in wheel_files().values()} <= names
    assert {n for n in names if n.startswith("node_modules/")} == {
        "node_modules/onnxruntime-web", "node_modules/onnxruntime-web/dist",
        "node_modules/onnxruntime-web/package.json",
        *(f"node_modules/onnxruntime-web/dist/{name}" for name in ORT_FILES)}
    assert not [n for n in names if n.endswith((".pyc", ".pyo")) or "__pycache__" in n]


def test_the_wheel_holds_the_packages_their_data_and_onnxruntime_web(
        built: dict[str, Path]) -> None:
    with zipfile.ZipFile(built["wheel"]) as whl:
        names = set(whl.namelist())
        shipped = {name: whl.read(name) for name in names if name.startswith(SHIPPED)}
    dist_info = f"layerzoo-{VERSION}.dist-info/"
    assert {n for n in names if not n.startswith(dist_info)} == set(wheel_files()) | set(shipped)
    for name in ORT_FILES:  # the files npm ci installed, byte for byte
        assert shipped.pop(SHIPPED + name) == (ORT_SOURCE / name).read_bytes(), name
    assert json.loads(shipped.pop(SHIPPED + "package.json"))["version"] == ORT_VERSION
    assert not shipped
    assert {"zoo/bundled/names.txt", "zoo/plugins/presets/mlp-bn.toml",
            "zoo/plugin_template/pyproject.toml.tmpl",
            *(f"zoo/webpage/{name}" for name in PAGE_FILES)} <= names
    with zipfile.ZipFile(built["bare"]) as whl:
        bare = {n for n in whl.namelist() if not n.startswith(dist_info)}
    assert bare == set(wheel_files())  # no node_modules at build time: no onnxruntime-web


def test_the_wheel_runs_its_own_code_not_the_checkouts(
        installed: tuple[Path, dict[str, str], Path], zoo: Zoo) -> None:
    bin_dir, env, work = installed
    where = json.loads(run(bin_dir / "python", "-c", (
        "import json, sys, zoo, zoo.export.web as web\n"
        "from importlib.metadata import distribution\n"
        "print(json.dumps({'zoo': zoo.__file__, 'web': web.__file__,\n"
        "  'dist': str(distribution('layerzoo')._path), 'path': sys.path,\n"
        "  'editable': [m for m in sys.modules if '__editable__' in m]}))"),
        cwd=work, env=env).stdout)
    venv = bin_dir.parent.resolve()
    for key in ("zoo", "web", "dist"):
        assert Path(where[key]).resolve().is_relative_to(venv), where[key]
    assert where["editable"] == []
    assert not [p for p in where["path"] if p and Path(p).resolve().is_relative_to(ROOT)]
    assert zoo("--version").stdout.strip() == f"zoo, version {VERSION}"


def test_zoo_from_the_wheel_samples_and_checks_what_it_trained(zoo: Zoo, model: Path) -> None:
    words = zoo("sample", model, "-n", "8", "--seed", "0").stdout.splitlines()
    assert len(words) == 8 and all(words)
    checked = zoo("check", "run", model).stdout
    assert "logits: max |onnxruntime - torch|" in checked and ": ok" in checked
    assert "identical" in checked


def test_zoo_from_the_wheel_writes_and_checks_a_plugin(
        installed: tuple[Path, dict[str, str], Path], zoo: Zoo) -> None:
    bin_dir, env, work = installed
    zoo("new-plugin", "wheel_check")
    run(bin_dir / "python", "-m", "pip", "install", "--no-deps", "--no-index",
        "--no-build-isolation", "-q", "-e", work / "layerzoo-wheel-check", cwd=work, env=env)
    tested = zoo("test-plugin", "wheel_check", "--steps", "5").stdout
    assert "preset 'wheel_check:wheel_check-mlp'" in tested
    assert "plugin 'wheel_check': " in tested and " 0 failed" in tested


def test_zoo_web_from_the_wheel_writes_and_serves_a_page_with_its_onnxruntime_web(
        installed: tuple[Path, dict[str, str], Path], zoo: Zoo, model: Path) -> None:
    bin_dir, env, work = installed
    assert zoo("web", model, "-o", "page").stdout.startswith("wrote page/")
    node = shutil.which("node")
    assert node, "node is not installed: the page's Node sampler needs Node.js"
    words = zoo("sample", model, "-n", "8", "--seed", "0").stdout.splitlines()
    assert run(node, "page/sample.mjs", "-n", "8", "--seed", "0", cwd=work,
               env=env).stdout.splitlines() == words
    with subprocess.Popen([bin_dir / "zoo", "web", "--serve", "-o", "page", "--port", "0"],
                          cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as server:
        try:
            url = server.stdout.readline().split(" at ")[1].split()[0]
            fetched = {}
            for name in ("", "model.json", *ORT_FILES):
                with urllib.request.urlopen(url + name, timeout=30) as response:
                    fetched[name] = response.read()
        finally:
            server.terminate()
    assert b"<html" in fetched[""].lower()
    for name in ORT_FILES:
        assert fetched[name] == (ORT_SOURCE / name).read_bytes(), name
    assert json.loads(fetched["model.json"])["onnxruntime_web"] == ORT_VERSION


def test_a_wheel_without_onnxruntime_web_names_what_to_install(
        built: dict[str, Path], model: Path, tmp_path: Path) -> None:
    bin_dir, env = fresh_venv(tmp_path / "venv", built["bare"])
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(model, work / "model.onnx")
    zoo = zoo_in(bin_dir, env, work)
    refused = zoo("web", "model.onnx", "-o", "page", expect=2)
    (line,) = refused.stderr.splitlines()
    assert f"`npm install onnxruntime-web@{ORT_VERSION}` in the current folder" in line
    assert "--ort-dir" in line and "checkout" not in line
    assert sorted(p.name for p in work.iterdir()) == ["model.onnx"]
    zoo("web", "model.onnx", "-o", "page", "--ort-dir", ORT_SOURCE)
    assert all((work / "page" / name).is_file() for name in ORT_FILES)
