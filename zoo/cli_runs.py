"""Commands that read runs: ``zoo diagnose`` and ``zoo compare`` (parse and print; the work
is in zoo.findings and zoo.compare, neither of which imports torch)."""

from __future__ import annotations

import json
from pathlib import Path

import click

__all__ = ["diagnose_cmd", "compare_cmd", "print_findings"]


def _thresholds(items: tuple[str, ...]) -> dict[str, str]:
    given = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            from zoo.errors import SpecError

            raise SpecError(f"--threshold {item[:40]!r}: expected NAME=VALUE")
        given[name.strip()] = value.strip()
    return given


def _report(run: Path, given: dict[str, str]) -> tuple[list, list, int, dict[str, float]]:
    """(rows, findings, vocabulary size, thresholds) of ``run``'s diagnostics."""
    from zoo import findings, rundir

    limits = findings.thresholds(given)  # the options first, then the files
    rows = findings.read_rows(run / findings.DIAGNOSTICS)
    vocab = rundir.read_vocab(run)
    return rows, findings.findings(rows, vocab.size, limits), vocab.size, limits


def print_findings(run: Path, rows: list | None = None, found: list | None = None) -> None:
    """One line per finding (or that there is none); reads ``run``'s rows unless given."""
    if rows is None or found is None:
        rows, found, _, _ = _report(run, {})
    if not found:
        click.echo(f"diagnose: nothing found in {len(rows)} recorded steps (`zoo diagnose "
                   f"{run}` shows the table)")
    for finding in found:
        click.echo(f"finding: {finding['text']}")


@click.command("diagnose")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for tools.")
@click.option("--threshold", "given", multiple=True, metavar="NAME=VALUE",
              help="Change a finding's threshold (repeatable; see `zoo.findings`).")
@click.option("--step", type=click.IntRange(min=1), default=None,
              help="Draw the plots at this recorded step [default: the last].")
def diagnose_cmd(run: Path, as_json: bool, given: tuple[str, ...], step: int | None) -> None:
    """Print the layer statistics a `zoo train --diagnose` run recorded and what they say, and
    redraw RUN/diagnostics.png (the lecture's four plots)."""
    from zoo import atomic, diagplot, findings, runpaths

    rows, found, vocab, limits = _report(run, _thresholds(given))
    if rows:
        diagplot.pick(rows, step)  # refused before anything is written
        runpaths.check_target(run / diagplot.PLOT, "the plot", allowed=(diagplot.PLOT,))
        if atomic.holder(run) is None:  # a run being trained redraws it itself at its end
            diagplot.write_png(rows, run / diagplot.PLOT, step)
    if as_json:
        click.echo(json.dumps({"run": str(run), "recorded_steps": [r["step"] for r in rows],
                               "vocab_size": vocab,
                               "thresholds": limits,
                               "findings": found}, indent=2))
        return
    click.echo(findings.table(rows))
    print_findings(run, rows, found)


@click.command("compare")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for tools.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, metavar="FILE.png",
              help="Draw the runs' validation curves on one PNG.")
def compare_cmd(runs: tuple[Path, ...], as_json: bool, plot: Path | None) -> None:
    """Print RUN... side by side: spec, parameters, steps, seconds, train/val/test, status."""
    from zoo import compare, runpaths

    rows = [compare.summarise(run) for run in runs]
    if plot is not None:
        runpaths.check_target(plot, "the plot")
        compare.plot_png(rows, plot)
    if as_json:
        click.echo(json.dumps({"runs": rows}, indent=2))
    else:
        click.echo(compare.table(rows))
