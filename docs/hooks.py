"""mkdocs hooks: the reference pages, generated from the code each time the site is built.

``mkdocs.yml`` names this file under ``hooks:``. These pages are added to the site at build
time and never written into ``docs/``, so none can drift from the code:

- ``reference/cli.md``: every command of the ``zoo`` click group with its ``--help`` text;
- ``reference/layers.md``: every built-in layer type from the registry (what ``zoo layers``
  shows, with each parameter's accepted values, default and doc, and the declared properties);
- ``reference/recipe.md``: ``zoo recipe``'s listing of the recipe fields and named recipes;
- ``reference/modules.md``: every module of ``zoo/``, ``export/`` and ``plugins/`` with the
  first paragraph of its docstring;
- ``changelog.md``: the repository's ``CHANGELOG.md``, its links made relative to the site.

Run ``python docs/hooks.py DIR`` to write the pages into DIR for reading them as text.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 100  # columns of the --help text, as a wide terminal shows it


def cli_page() -> str:
    """Every ``zoo`` command: its one-line summary and its whole ``--help`` text."""
    import click

    from zoo.cli import main

    top = click.Context(main, info_name="zoo", terminal_width=WIDTH, max_content_width=WIDTH)
    out = ["# Command reference", "",
           "Generated from the `zoo` command's own definitions when the site is built: each "
           "section is what `zoo COMMAND --help` prints.", "",
           "## zoo", "", "```text", main.get_help(top), "```", ""]
    for name in main.list_commands(top):
        command = main.get_command(top, name)
        ctx = click.Context(command, info_name=name, parent=top, terminal_width=WIDTH,
                            max_content_width=WIDTH)
        out += [f"## zoo {name}", "", command.get_short_help_str(limit=300), "",
                "```text", command.get_help(ctx), "```", ""]
    return "\n".join(out)


def _cell(text: Any) -> str:
    """Text safe inside Markdown (a table cell too): outside its code spans no emphasis and no
    HTML; nowhere a column break."""
    parts = re.split(r"(`+[^`]*`+)", str(text).replace("\n", " "))
    for i in range(0, len(parts), 2):  # the even parts are outside code spans
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace("*", "\\*")
    return "".join(parts).replace("|", "\\|")


def _properties(layer: Any) -> list[str]:
    gain = "none declared" if layer.gain is None else f"{layer.gain:.6g}"
    incremental = {None: "no", "position": "`position` (each position alone)",
                   "state": "`state` (carries a state from position to position)"}
    out = [f"- input: {'token ids `[B, T]`' if layer.takes_tokens else 'features'}",
           f"- causal: {'yes' if layer.causal else 'no'}",
           f"- steps one position at a time: {incremental[layer.incremental]}",
           f"- reduction (ends the time axis): {'yes' if layer.reduction else 'no'}",
           f"- init gain it declares: {gain}"]
    counted = [what for what, on in (("saturated units", layer.saturated is not None),
                                     ("dead units", layer.dead_units)) if on]
    if counted:
        out.append(f"- `--diagnose` counts: {', '.join(counted)}")
    if layer.examples:
        shown = "; ".join(f"`{dict(e)}`" for e in layer.examples)
        out.append(f"- parameter sets `zoo test-plugin` checks: {shown}")
    return out


def layers_page() -> str:
    """Every built-in layer type, as the registry holds it."""
    from zoo.registry import Registry

    registry = Registry.load(strict=True, allow=[])  # the built-in plugins only
    out = ["# Layer reference", "",
           "Generated from the layer registry when the site is built: every built-in layer "
           "type, its plugin, its parameters and what it declares. `zoo layers` lists the same "
           "for the layers installed with it, third-party plugins' included. A spec names a "
           "layer by its bare name or as `PLUGIN:NAME`.", "",
           "| layer | plugin | what it does |", "|---|---|---|"]
    names = sorted(registry.layers)
    out += [f"| [`{n}`](#{n}) | `{registry.layers[n].plugin}` | "
            f"{_cell(registry.layers[n].doc)} |" for n in names]
    out.append("")
    for name in names:
        layer = registry.layers[name]
        qualified = f"{layer.plugin}:{name}"
        out += [f"## {name}", "", _cell(layer.doc), "",
                f"Plugin `{layer.plugin}` (built-in, {layer.version}): also `{qualified}`.", "",
                *_properties(layer), ""]
        params = layer.parameters()
        if not params:
            out += ["No parameters: written as the bare name, `\"" + name + "\"`.", ""]
            continue
        out += ["| parameter | accepts | default | meaning |", "|---|---|---|---|"]
        for p in params:
            default = "required" if p.required else f"`{p.default!r}`"
            out.append(f"| `{p.name}` | {_cell(p.expected())} | {default} | {_cell(p.doc)} |")
        out.append("")
    return "\n".join(out)


def recipe_page() -> str:
    """``zoo recipe``'s listing."""
    from zoo.recipe import describe

    return "\n".join([
        "# Recipe reference", "",
        "Generated from the recipe's declared fields when the site is built: what `zoo recipe` "
        "prints. A spec's `[train]` table sets these; `zoo train --set train.KEY=VALUE` "
        "overrides one, `--recipe NAME` lays a named recipe over the table. See "
        "[Training](../training.md).", "",
        "```text", describe(), "```", ""])


PACKAGES = (("zoo", "zoo", "the core: specs, building, training, the CLI, the sampler"),
            ("export", "zoo.export", "ONNX export and the onnxruntime side"),
            ("plugins", "zoo.plugins", "the built-in layer plugins and the presets"))


def _summary(path: Path) -> str:
    """The first paragraph of a module's docstring, on one line."""
    import ast

    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n")[0].split())


def modules_page() -> str:
    """Every module of the three packages, with what its docstring says it is."""
    out = ["# Module reference", "",
           "Generated from the modules' docstrings when the site is built: one concept per "
           "module. How they fit together: [architecture](../architecture.md).", ""]
    for folder, package, what in PACKAGES:
        out += [f"## `{folder}/`", "", f"Installed as `{package}`: {what}.", "",
                "| module | what it is |", "|---|---|"]
        for path in sorted((ROOT / folder).glob("*.py")):
            out.append(f"| `{folder}/{path.name}` | {_cell(_summary(path))} |")
        out.append("")
    return "\n".join(out)


def changelog_page() -> str:
    """CHANGELOG.md, its links to ``docs/`` pages made relative to the site's root."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    return text.replace("](docs/", "](")


PAGES = {"reference/cli.md": cli_page, "reference/layers.md": layers_page,
         "reference/recipe.md": recipe_page, "reference/modules.md": modules_page,
         "changelog.md": changelog_page}


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the site's files (mkdocs hook)."""
    from mkdocs.structure.files import File

    for uri, page in PAGES.items():
        files.append(File.generated(config, uri, content=page()))
    return files


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "site-pages")
    for uri, page in PAGES.items():
        path = target / uri
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page(), encoding="utf-8")
        print(f"wrote {path}")
