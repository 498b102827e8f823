"""Shared fixtures: a fresh registry, plugin packages "installed" into a temp dir, the CLI;
and the Hypothesis profiles."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, settings

from zoo.registry import ALLOW_ENV, STRICT_ENV, reset_registry

TESTS = Path(__file__).parent
BROKEN = TESTS / "thirdparty" / "broken"
EXTRA = TESTS / "thirdparty" / "extra"
VENV_BIN = Path(sys.executable).parent

# Hypothesis profiles: "ci", the default, is bounded and derandomized (the same examples on every
# run, no example database); HYPOTHESIS_PROFILE=thorough tries 5,000 examples per property.
settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=5000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Only the built-in plugins load (``LAYERZOO_LOAD_PLUGINS=""``), strict mode off, and the
    default registry reloaded before and after the test.

    Tests of exact messages and outputs use it (the ``cli`` and ``zoo_subprocess`` fixtures
    do), so they hold whatever else is installed; ``allow_plugins("extra")`` and
    ``fake_install`` let named third-party plugins in.
    """
    monkeypatch.setenv(ALLOW_ENV, "")
    monkeypatch.delenv(STRICT_ENV, raising=False)
    reset_registry()
    yield
    reset_registry()


@pytest.fixture
def allow_plugins(monkeypatch: pytest.MonkeyPatch,
                  fresh_registry: None) -> Callable[..., None]:
    """``allow_plugins("extra")``: also load these installed third-party plugins."""

    def allow(*names: str) -> None:
        current = [n for n in os.environ.get(ALLOW_ENV, "").split(",") if n]
        monkeypatch.setenv(ALLOW_ENV, ",".join([*current, *names]))
        reset_registry()

    return allow


def _write_dist(site: Path, package: Path) -> list[str]:
    """Install a plugin package's modules and a .dist-info (METADATA, entry_points.txt) into site.

    Returns the top-level module names. Needs no build and no pip: importlib.metadata reads the
    dist-info the same way it reads one pip wrote.
    """
    project = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))
    meta, tool = project["project"], project.get("tool", {}).get("setuptools", {})
    modules = list(tool.get("py-modules", [])) + list(tool.get("packages", []))
    for name in modules:
        if (package / f"{name}.py").exists():
            shutil.copy(package / f"{name}.py", site / f"{name}.py")
        else:
            shutil.copytree(package / name, site / name)
    dist = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\n"
                                   f"Version: {meta['version']}\n", encoding="utf-8")
    groups = meta.get("entry-points", {})
    (dist / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                for group, eps in groups.items()), encoding="utf-8")
    return modules


def entry_points_of(package: Path) -> list[str]:
    """The layerzoo entry-point names a plugin package declares."""
    project = tomllib.loads((package / "pyproject.toml").read_text(encoding="utf-8"))
    return list(project["project"].get("entry-points", {}).get("layerzoo", {}))


@pytest.fixture
def fake_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                 allow_plugins: Callable[..., None]) -> Iterator[Callable[..., Path]]:
    """``fake_install("hook_raises", ...)``: put plugin packages on sys.path as if pip-installed.

    Names are folders of tests/thirdparty/broken (or paths to any plugin package); their entry
    points are added to LAYERZOO_LOAD_PLUGINS. Returns the site folder, for PYTHONPATH in a
    subprocess. Their modules are unloaded afterwards.
    """
    site = tmp_path / "site"
    site.mkdir()
    loaded: list[str] = []

    def install(*packages: str | Path) -> Path:
        names = []
        for package in packages:
            path = Path(package) if Path(package).is_absolute() else BROKEN / package
            loaded.extend(_write_dist(site, path))
            names += entry_points_of(path)
        monkeypatch.syspath_prepend(str(site))  # also invalidates the import caches
        importlib.invalidate_caches()
        allow_plugins(*names)
        return site

    yield install
    for name in loaded:
        sys.modules.pop(name, None)


@pytest.fixture
def cli(fresh_registry: None) -> Callable[..., Result]:
    """Run the ``zoo`` CLI in-process: ``cli("summary", "mlp-bn")`` -> click Result.

    Only the built-in plugins load unless the test allows more (see ``fresh_registry``).
    """
    from zoo.cli import main

    def run(*args: str, env: dict[str, str] | None = None) -> Result:
        reset_registry()
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        reset_registry()
        return result

    return run


@pytest.fixture
def zoo_subprocess(tmp_path: Path,
                   fresh_registry: None) -> Callable[..., subprocess.CompletedProcess]:
    """Run the installed ``zoo`` script in a subprocess (cwd tmp_path), extra env on top.

    Its plugins are the test's (see ``fresh_registry``): the built-ins unless it allows more.
    """

    def run(*args: str, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess:
        full = {**os.environ, **(env or {})}
        return subprocess.run([str(VENV_BIN / "zoo"), *args], capture_output=True, text=True,
                              env=full, cwd=cwd or tmp_path, timeout=120)

    return run


# -- ONNX export and runtime (tests/test_export.py, tests/test_runtime.py) --------------------
# One tiny run per preset, trained and exported once per session and shared by both files.

TINY_WORDS = 1500  # words of the bundled corpus: enough for every letter, quick to window


@pytest.fixture(scope="session")
def tiny_words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first TINY_WORDS words of the bundled corpus, as a words file."""
    from zoo.data import default_words_file

    words = default_words_file().read_text(encoding="utf-8").split()[:TINY_WORDS]
    path = tmp_path_factory.mktemp("words") / "tiny.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory,
             tiny_words: Path) -> Callable[[str], tuple[Path, Path]]:
    """``exported("mlp-bn")`` -> (run dir, its model.onnx): 50 steps, exported on first use."""
    from zoo.export.onnx import export_run
    from zoo.train import train

    cache: dict[str, tuple[Path, Path]] = {}

    def get(preset: str) -> tuple[Path, Path]:
        if preset not in cache:
            out = tmp_path_factory.mktemp("runs") / preset
            train(preset, data=tiny_words, out=out, overrides={"steps": 50, "eval_every": 25},
                  progress=False, log=lambda line: None)
            cache[preset] = (out, export_run(out))
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def no_torch_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for a subprocess in which any ``import torch`` (or onnx) raises ImportError."""
    site = tmp_path_factory.mktemp("notorch")
    (site / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript'):\n"
        "            raise ImportError(f'{name} is blocked in this test')\n"
        "sys.meta_path.insert(0, _Block())\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in (ALLOW_ENV, STRICT_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return env
