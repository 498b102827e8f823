"""The plugin author's commands: ``zoo new-plugin`` and ``zoo test-plugin`` (parse and print;
the work is in zoo.newplugin and zoo.plugincheck)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["new_plugin_cmd", "test_plugin_cmd"]


@click.command("new-plugin")
@click.argument("name")
@click.option("-o", "--out", "parent", type=click.Path(path_type=Path), default=Path("."),
              show_default=True, help="Folder to write the package folder into.")
def new_plugin_cmd(name: str, parent: Path) -> None:
    """Write a plugin package NAME (layerzoo-NAME/): pyproject.toml with the entry point, a
    module with one layer and one preset, tests, a README and a CI workflow."""
    from zoo.newplugin import FILES, write_plugin

    root = write_plugin(name, parent)
    module = f"layerzoo_{name}"
    for target in FILES:
        click.echo(root / target.format(module=module))
    click.echo(f"next: pip install -e '{root}[test]' && zoo test-plugin {name}", err=True)


@click.command("test-plugin")
@click.argument("name")
@click.option("--strict", is_flag=True,
              help="Fail a check that no input shape could run (it would be skipped).")
@click.option("--steps", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Training steps of each preset's cycle.")
@click.pass_context
def test_plugin_cmd(ctx: click.Context, name: str, strict: bool, steps: int) -> None:
    """Check installed plugin NAME: the conformance kit on each of its layers (its examples,
    several input shapes each), and a build / train / export / parity / same-words cycle on
    each of its presets. Exit 1 if anything fails."""
    from zoo.cli import registry
    from zoo.plugincheck import check_plugin

    counts = {"passed": 0, "failed": 0, "n/a": 0}
    for outcome in check_plugin(name, registry=registry(ctx), strict=strict, steps=steps):
        counts[outcome.status] += 1
        click.echo(outcome.line())
    click.echo(f"plugin {name!r}: {counts['passed']} passed, {counts['failed']} failed, "
               f"{counts['n/a']} input shapes refused by the layer")
    if counts["failed"] or not counts["passed"]:
        ctx.exit(1)
