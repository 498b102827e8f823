"""Runs side by side: ``zoo compare RUN RUN ...``, from the run files alone (no torch).

One row per run (its spec or preset, parameters, steps, training seconds, train/val/test
loss, status) and, with ``plot``, the runs' validation curves on one PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from zoo import atomic, curves, runpaths, runschema
from zoo.errors import ArtifactError

__all__ = ["summarise", "table", "plot_png"]

COLUMNS = ("run", "spec", "parameters", "steps", "seconds", "train", "val", "test", "status")


def summarise(run: Path) -> dict[str, Any]:
    """A run's row, read from its meta.json (checked field by field) and metrics.jsonl."""
    if not run.is_dir() or not runpaths.is_run(run):
        raise ArtifactError(f"{run} is not a run directory (made by zoo train): no spec.json")
    if not (run / "meta.json").exists():
        raise ArtifactError(f"{run} is missing meta.json; was it made by zoo train?")
    meta = runschema.read_meta(run)
    metrics = meta.get("metrics") or {}
    rows = curves.read_rows(run / "metrics.jsonl")
    return {"run": str(run), "spec": meta.get("spec"), "parameters": meta.get("parameters"),
            "steps": meta.get("step"), "seconds": meta.get("seconds"),
            "train": metrics.get("train_loss"), "val": metrics.get("val_loss"),
            "test": metrics.get("test_loss"), "status": meta.get("status"),
            "curve": [[r["step"], r["val_loss"]] for r in rows]}


def table(rows: list[dict[str, Any]]) -> str:
    def cell(key: str, value: Any) -> str:
        if value is None:
            return "-"
        if key in ("train", "val", "test"):
            return f"{value:.4f}"
        if key in ("parameters", "steps"):
            return f"{value:,}"
        if key == "seconds":
            return f"{value:.1f}"
        return str(value)

    grid = [list(COLUMNS)] + [[cell(k, r[k]) for k in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 or i == 8 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(line, widths, strict=True)))
                     .rstrip() for line in grid)


def plot_png(rows: list[dict[str, Any]], path: Path) -> None:
    """The runs' validation curves on one figure, written atomically to ``path``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.96)
    ax = fig.add_subplot()
    for row in rows:
        if row["curve"]:
            steps, losses = zip(*row["curve"], strict=True)
            ax.plot(steps, losses, marker=".", label=Path(row["run"]).name)
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic.write_bytes(path, buf.getvalue())
