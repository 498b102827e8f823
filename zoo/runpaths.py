"""What may be written into a run directory, without torch: only the run's exports.

A run directory is a folder holding ``spec.json`` (``zoo.rundir`` writes it whole). Its files
are the run's own (spec, vocabulary, weights, checkpoint, metadata, curves) except its exports,
``model.onnx`` and ``model.int8.onnx``, which ``zoo export RUN`` writes there by default and
replaces (atomically) when run again. Every command that writes a file or a folder the user
names (``zoo export -o``, ``--int8``, ``zoo web -o``) asks ``check_target`` first.
"""

from __future__ import annotations

from pathlib import Path

from zoo.errors import ArtifactError

__all__ = ["EXPORTS", "check_target", "is_run"]

RUN_MARK = "spec.json"
EXPORTS = ("model.onnx", "model.int8.onnx")  # what an export may replace inside a run


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
