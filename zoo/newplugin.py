"""``zoo new-plugin NAME``: a plugin package that works as written, from the files in
``zoo/plugin_template`` (``string.Template``: ``$name``, ``$dist``, ``$module``,
``$layerzoo``).

    write_plugin("mylayers", Path("."))   # -> ./layerzoo-mylayers/

The package: ``pyproject.toml`` with the ``layerzoo`` entry point, a module with one layer
type (``scaled_tanh``) and one preset (``NAME-mlp``), ``tests/`` running the conformance kit
and ``zoo test-plugin``'s checks, a README, a GitHub Actions workflow that runs them, and a
``.gitignore``. Six files and four names do not need a template engine: the standard library's
``string.Template`` fills them, and layerzoo's suite generates a package, installs it, runs
its tests and trains its preset, so the template cannot rot. Nothing existing is overwritten.
"""

from __future__ import annotations

import re
import string
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from zoo import atomic
from zoo.errors import SpecError

__all__ = ["write_plugin", "FILES", "NAME"]

NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
TEMPLATES = Path(__file__).with_name("plugin_template")
# file written -> its template
FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    ".gitignore": "gitignore.tmpl",
    "{module}/__init__.py": "module.py.tmpl",
    "tests/test_{module}.py": "test_plugin.py.tmpl",
    ".github/workflows/test.yml": "workflow.yml.tmpl",
}


def write_plugin(name: str, parent: Path) -> Path:
    """Write plugin package ``layerzoo-NAME`` into folder ``parent``; returns its folder.

    SpecError (one line) for a name that is not snake_case or a folder that already exists."""
    if not isinstance(name, str) or not NAME.match(name):
        raise SpecError(f"plugin name {str(name)[:40]!r} must be snake_case: a-z first, then "
                        "a-z, 0-9 or _ (at most 40); it becomes the entry point, PLUGIN in "
                        "PLUGIN:NAME and the module layerzoo_NAME")
    parent = Path(parent)
    if not parent.is_dir():
        raise SpecError(f"-o {parent}: no such folder")
    dist, module = f"layerzoo-{name.replace('_', '-')}", f"layerzoo_{name}"
    root = parent / dist
    if root.exists():
        raise SpecError(f"{root} already exists; nothing was written (choose another -o or "
                        "name)")
    values = {"name": name, "dist": dist, "module": module, "layerzoo": _minor()}

    def fill(tmp: Path) -> None:
        for target, template in FILES.items():
            path = tmp / target.format(module=module)
            path.parent.mkdir(parents=True, exist_ok=True)
            text = string.Template((TEMPLATES / template).read_text(encoding="utf-8"))
            atomic.write_text(path, text.substitute(values))

    atomic.create_dir(root, fill).release()  # whole or not at all
    return root


def _minor() -> str:
    """This layerzoo's MAJOR.MINOR: what the plugin was written against."""
    try:
        return ".".join(version("layerzoo").split(".")[:2])
    except PackageNotFoundError:
        return "0"
