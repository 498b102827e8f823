"""Training curves: the rows of ``metrics.jsonl`` and the ``loss.png`` drawn from them.

One row per evaluation::

    {"step": 1500, "lr": 0.0098, "train_loss": 2.21, "val_loss": 2.25, "seconds": 3.1,
     "losses": [2.27, 2.19, ...]}

``train_loss`` is the mean training loss over the last ``RECENT`` steps (a recent window, so it
is comparable with ``val_loss`` at that step); ``losses`` holds the loss of every step since the
previous row, so the rows together are the full per-step stream. A resumed run keeps the rows
up to its checkpoint and continues both. The plot is drawn on a ``matplotlib.figure.Figure``:
the global backend (a notebook's, say) is never touched. ``Drawing`` decides when to redraw:
at the first evaluation, at the end and on an interruption always, in between whenever
drawing keeps under a tenth of the training time (a plot costs ~0.1 s quiet, seconds on a
loaded machine — too much to pay 20 times in a 10-second run).
"""

from __future__ import annotations

import io
import json
import math
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zoo import atomic, files, runschema
from zoo.errors import ArtifactError, RunWarning

__all__ = ["RECENT", "read_rows", "write_rows", "stream", "plot_png", "Drawing"]

RECENT = 100  # steps in the train_loss window


def read_rows(file: Path, upto: float = math.inf) -> list[dict[str, Any]]:
    """The rows of a metrics file up to step ``upto``; ArtifactError if it is not UTF-8 JSON lines.

    Every row is checked (zoo.runschema) and steps must increase. A last line cut short by a
    crash is dropped with a ``RunWarning`` saying so (the file is written atomically, so only a
    file from an older version or an editor can hold one).
    """
    if not file.exists():
        return []
    # a regular file of at most 64 MiB (zoo.files)
    lines, _ = files.read_lines(file, files.METRICS,
                                "; move it away to resume without the earlier curves")
    rows: list[dict[str, Any]] = []
    previous = 0
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if number == len(lines):
                warnings.warn(f"{file}:{number}: the last line was cut short; dropped it (the "
                              f"evaluation after step {previous:,})", RunWarning, stacklevel=2)
                break
            raise ArtifactError(f"{file}:{number}: corrupted line (not JSON); move the file "
                                "away to resume without the earlier curves") from None
        runschema.check_row(row, f"{file}:{number}")
        if row["step"] <= previous:
            raise ArtifactError(f"{file}:{number} is corrupted: step {row['step']:,} comes "
                                f"after step {previous:,} (restore the file, or move it away "
                                "to resume without the earlier curves)")
        previous = row["step"]
        if row["step"] <= upto:
            rows.append(row)
    return rows


def write_rows(file: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Replace the metrics file with ``rows`` (atomically)."""
    atomic.write_text(file, "".join(json.dumps(r) + "\n" for r in rows))


def stream(rows: list[dict[str, Any]]) -> list[float]:
    """The per-step training losses the rows hold, in step order."""
    return [x for r in rows for x in r.get("losses", []) if isinstance(x, (int, float))]


def _per_step(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Each row's per-step losses at their own steps (the steps before the row's), with a NaN
    where steps are missing (a resumed run whose earlier rows were lost), so no line spans it."""
    at: list[float] = []
    losses: list[float] = []
    for row in rows:
        own = [x for x in row.get("losses", []) if isinstance(x, (int, float))]
        first = row["step"] - len(own) + 1
        if at and own and first != at[-1] + 1:
            at.append(math.nan)
            losses.append(math.nan)
        at.extend(range(first, row["step"] + 1))
        losses.extend(own)
    return at, losses


def plot_png(rows: list[dict[str, Any]]) -> bytes:
    """loss.png: per-step and recent-window train loss, validation loss (log scale), lr."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    fig = Figure(figsize=(7, 4))
    # fixed margins, not bbox_inches="tight": that draws the figure twice, and this runs at
    # every evaluation
    fig.subplots_adjust(left=0.1, right=0.87, bottom=0.12, top=0.96)
    ax = fig.add_subplot()
    at, losses = _per_step(rows)
    if losses:
        ax.plot(at, losses, color="tab:blue", alpha=0.2, linewidth=0.5, label="train (per step)")
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["train_loss"] for r in rows], color="tab:blue", marker=".",
            label=f"train (last {RECENT} steps)")
    ax.plot(steps, [r["val_loss"] for r in rows], color="tab:orange", marker=".",
            label="validation")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats, log scale)")
    ax.grid(alpha=0.3, which="both")
    lr_ax = ax.twinx()
    lr_ax.plot(steps, [r["lr"] for r in rows], color="tab:gray", linestyle="--",
               label="learning rate")
    lr_ax.set_ylabel("learning rate")
    handles = ax.get_legend_handles_labels()
    extra = lr_ax.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


class Drawing:
    """Redraws loss.png when asked, or when due: drawing takes at most ~1/50 of the time."""

    SHARE = 0.02  # a drawing costs ~0.1-0.2 s: about every 5-10 s of training

    def __init__(self, path: Path) -> None:
        self.path = path
        self.drawn_at = -math.inf  # perf_counter() at the end of the last drawing
        self.cost = 0.0  # seconds the last drawing took

    def __call__(self, rows: list[dict[str, Any]], *, force: bool = False) -> None:
        now = time.perf_counter()
        if not rows or not (force or now - self.drawn_at >= self.cost / self.SHARE):
            return
        atomic.write_bytes(self.path, plot_png(rows))
        self.drawn_at = time.perf_counter()
        self.cost = self.drawn_at - now
