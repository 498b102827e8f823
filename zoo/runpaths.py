"""Paths of runs, without torch: where a new run goes, and what may be written into a run
directory (only the run's exports).

``zoo train`` without ``--out`` creates ``runs/NAME`` (NAME: the spec's file stem or preset
name), or ``runs/NAME-2``, ``-3`` ... when that exists (``fresh_run_dir``).

A run directory is a folder holding ``spec.json`` (``zoo.rundir`` writes it whole). Its files
are the run's own (spec, vocabulary, weights, checkpoint, metadata, curves) except its exports,
``model.onnx`` and ``model.int8.onnx``, which ``zoo export RUN`` writes there by default and
replaces (atomically) when run again. Every command that writes a file or a folder the user
names (``zoo export -o``, ``--int8``, ``zoo web -o``) asks ``check_target`` first.
"""

from __future__ import annotations

from pathlib import Path

from zoo.errors import ArtifactError

__all__ = ["EXPORTS", "check_target", "is_run", "fresh_run_dir", "RUNS"]

RUN_MARK = "spec.json"
EXPORTS = ("model.onnx", "model.int8.onnx")  # what an export may replace inside a run
RUNS = Path("runs")  # where runs go by default, in the current folder


def is_run(path: Path) -> bool:
    """Whether ``path`` is a run directory (a folder with ``spec.json``, even a broken one)."""
    mark = path / RUN_MARK
    return path.is_dir() and (mark.exists() or mark.is_symlink())


def check_target(out: str | Path, what: str, allowed: tuple[str, ...] = EXPORTS) -> None:
    """ArtifactError, naming the run, unless writing ``out`` leaves every run's own files as
    they are: ``out`` (followed through links) may be inside a run directory only as one of
    ``allowed``, and may not be a run directory itself."""
    out = Path(out)
    target = out.resolve()
    if is_run(target):
        inside = f", or name it {' or '.join(allowed)} inside the run" if allowed else ""
        raise ArtifactError(f"{out} is a directory (a run's); give {what} a file name outside "
                            f"it{inside}")
    run = target.parent
    if is_run(run) and target.name not in allowed:
        exports = " or ".join(str(run / name) for name in allowed)
        where = f"outside it, or as {exports}" if allowed else "outside it"
        link = f" ({out} leads to {target})" if target != out.absolute() else ""
        raise ArtifactError(f"{out} is inside run directory {run}{link}, whose files are the "
                            f"run's own; write {what} {where}")


def fresh_run_dir(spec: str | None) -> Path:
    """``runs/NAME`` for a new run of ``spec`` (a preset or spec file; None: the default
    preset), with ``-2``, ``-3`` ... appended while the path exists."""
    from zoo.spec import DEFAULT_PRESET

    base = RUNS / Path(spec or DEFAULT_PRESET).stem
    if not base.exists():
        return base
    n = 2
    while Path(f"{base}-{n}").exists():
        n += 1
    return Path(f"{base}-{n}")
