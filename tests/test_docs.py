"""The documentation: the site builds in strict mode, its generated references name every
command, layer and recipe field, the README stays short, every relative link in the README and
the pages resolves, and no page tells the project's history (that is CHANGELOG.md's job)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, *sorted(DOCS.rglob("*.md"))]  # the hand-written pages
README_MAX_LINES = 250

# Words that date a text: what happened in a session or round of work, or a tracker's issue
# number. Measurements in rounds ("5 rounds", "in one round of four") are content, not history.
HISTORY = [
    r"\b(this|last|previous|earlier|next) session\b",
    r"\bsessions? ago\b",
    r"\b(this|last|previous|earlier|next) round\b",
    r"\bround [0-9]+\b",
    r"\bissue #?[0-9]{1,3}\b",
    r"\bbefore this change\b",
    r"\bno longer\b",
]


def _hooks():
    """docs/hooks.py, the module mkdocs loads to generate the reference pages."""
    spec = importlib.util.spec_from_file_location("layerzoo_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built from this checkout with `mkdocs build --strict`."""
    out = tmp_path_factory.mktemp("site")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
         str(ROOT / "mkdocs.yml"), "--site-dir", str(out)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-4000:]}"
    return out


def test_site_builds_every_page(site: Path) -> None:
    built = {p.relative_to(site).with_suffix("").as_posix() for p in site.rglob("*.html")}
    written = {p.relative_to(DOCS).with_suffix("").as_posix() for p in DOCS.rglob("*.md")}
    generated = {uri.removesuffix(".md") for uri in _hooks().PAGES}
    assert written | generated <= built


def test_cli_reference_names_every_command(site: Path) -> None:
    from zoo.cli import main

    html = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    assert main.commands
    for name, command in main.commands.items():
        assert f'id="zoo-{name}"' in html, f"no section for zoo {name}"
        assert f"Usage: zoo {name}" in html, f"no --help text for zoo {name}"
        for option in command.params:
            for flag in option.opts if option.opts[0].startswith("-") else ():
                assert flag in html, f"zoo {name}: option {flag} missing"


def test_layer_reference_names_every_layer(site: Path) -> None:
    from zoo.registry import Registry

    html = (site / "reference" / "layers.html").read_text(encoding="utf-8")
    registry = Registry.load(allow=[])
    assert registry.layers
    for name, layer in registry.layers.items():
        section = html.split(f'id="{name}"', 1)
        assert len(section) == 2, f"no section for layer {name!r}"
        body = section[1].split("<h2", 1)[0]
        for param in layer.parameters():
            assert f"<code>{param.name}</code>" in body, f"{name}: parameter {param.name}"


def test_recipe_reference_names_every_field(site: Path) -> None:
    from zoo.recipe import NAMED, Recipe

    text = (site / "reference" / "recipe.html").read_text(encoding="utf-8")
    for name in [*Recipe.fields(), *NAMED]:
        assert name in text, f"recipe field or named recipe {name!r} missing"


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; move detail into docs/ (at most {README_MAX_LINES})")


# -- links -----------------------------------------------------------------------------------

CODE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """Text outside fenced code blocks and code spans, where a link is a link."""
    return re.sub(r"`[^`\n]*`", "", CODE.sub("", text))


def _anchors(text: str) -> set[str]:
    """The heading ids Python-Markdown's toc gives a page."""
    from markdown.extensions.toc import slugify

    out = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", CODE.sub("", text), re.M):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        out.add(slugify(plain, "-"))
    return out


@pytest.fixture(scope="module")
def generated() -> dict[Path, str]:
    """The generated pages' text, by the path they would have under docs/."""
    return {DOCS / uri: page() for uri, page in _hooks().PAGES.items()}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path, generated: dict[Path, str]) -> None:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in LINK.findall(_prose(text)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not a file
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if resolved in generated:
            target_text = generated[resolved]
        elif resolved.is_file():
            target_text = resolved.read_text(encoding="utf-8") if resolved.suffix == ".md" else ""
        else:
            broken.append(f"{target}: no such file")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in _anchors(target_text):
            broken.append(f"{target}: no heading with id {anchor!r}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_link_checker_sees_a_broken_link(tmp_path: Path) -> None:
    """The checks above are not vacuous: a missing file and a missing anchor are both caught."""
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[a](missing.md) [b](#title) [c](#nope) `[d](code.md)`\n")
    targets = LINK.findall(_prose(page.read_text()))
    assert targets == ["missing.md", "#title", "#nope"]
    assert _anchors(page.read_text()) == {"title"}


# -- history ---------------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pages_describe_the_software_not_its_history(page: Path) -> None:
    found = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        for pattern in HISTORY:
            match = re.search(pattern, line, re.I)
            if match:
                found.append(f"line {number}: {match.group(0)!r}")
    assert not found, f"{page.relative_to(ROOT)} tells history (CHANGELOG.md's job): " + \
        "; ".join(found)


def test_history_words_are_caught_and_measurements_are_not() -> None:
    def flagged(line: str) -> bool:
        return any(re.search(p, line, re.I) for p in HISTORY)

    assert flagged("Tried this session: 1,500 steps")
    assert flagged("from 0.213x last session")
    assert flagged("measured in round 2")
    assert flagged("see issue 14")
    assert not flagged("median of 5 rounds; 3.12x in one round of four")
    assert not flagged("rounds 0.95-1.18: the machine's noise")
