"""The lecture's four plots of a run's diagnostics, as one ``diagnostics.png`` (torch-free).

    write_png(rows, run / PLOT)               # the last recorded step
    write_png(rows, run / PLOT, step=1)       # the initialisation

1. activation histograms of the layers that declare saturation or dead units (tanh, relu...;
   every layer when none does), each legend entry with its std and saturated (or dead) share;
2. the same layers' output-gradient histograms;
3. each weight matrix's gradient histogram, with its grad:data ratio;
4. every weight's ``log10(update:data)`` over the recorded steps, with the lecture's guide line
   at 1e-3.

Legends name layers as the spec does (``layers.4 tanh``). Drawn on a
``matplotlib.figure.Figure``: the global backend is never touched.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from zoo import atomic
from zoo.errors import SpecError
from zoo.findings import HIST_RANGE, centres

__all__ = ["write_png", "PLOT", "GUIDE"]

PLOT = "diagnostics.png"
GUIDE = -3.0  # log10(update:data) of about 1e-3: the lecture's rule of thumb


def pick(rows: list[dict[str, Any]], step: int | None) -> dict[str, Any]:
    """The row of ``step`` (the last when None); SpecError naming the recorded steps if none."""
    if step is None:
        return rows[-1]
    for row in rows:
        if row["step"] == step:
            return row
    steps = [r["step"] for r in rows]
    shown = ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "")
    raise SpecError(f"--step {step}: not a recorded step; recorded: {shown}")


def _density(counts: list[int]) -> list[float]:
    total = sum(counts) or 1
    return [c / total for c in counts]


def png(rows: list[dict[str, Any]], step: int | None = None) -> bytes:
    from matplotlib.figure import Figure

    row = pick(rows, step)
    flagged = [x for x in row["layers"] if x.get("saturated") is not None
               or x.get("dead") is not None]
    layers = flagged or row["layers"]
    fig = Figure(figsize=(13, 8))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.94, hspace=0.32, wspace=0.18)
    acts, grads, weights, updates = (fig.add_subplot(2, 2, i) for i in range(1, 5))
    for layer in layers:
        share = layer.get("saturated")
        word = "saturated"
        if share is None and layer.get("dead") is not None:
            share, word = layer["dead"], "dead"
        extra = f", {word} {share:.1%}" if share is not None else ""
        acts.plot(centres(HIST_RANGE), _density(layer["hist"]),
                  label=f"{layer['entry']} (std {layer['std']:.2f}{extra})")
        if layer.get("grad_hist"):
            grads.plot(centres(layer["grad_range"]), _density(layer["grad_hist"]),
                       label=f"{layer['entry']} (std {layer['grad_std']:.2e})")
    for weight in row["weights"]:
        if weight.get("grad_hist"):
            ratio = weight.get("grad_data")
            weights.plot(centres(weight["grad_range"]), _density(weight["grad_hist"]),
                         label=f"{weight['name']} {'x'.join(map(str, weight['shape']))}"
                               + (f" (grad:data {ratio:.2e})" if ratio is not None else ""))
    names = [w["name"] for w in rows[0]["weights"]]
    for name in names:
        points = [(r["step"], w["update_data"]) for r in rows for w in r["weights"]
                  if w["name"] == name and w.get("update_data") is not None]
        if points:
            updates.plot(*zip(*points, strict=True), marker=".", label=name)
    updates.axhline(GUIDE, color="black", linestyle="--", linewidth=1, label="1e-3")
    for ax, title, xlabel in (
            (acts, f"activations at step {row['step']}", "output value"),
            (grads, f"activation gradients at step {row['step']}", "gradient"),
            (weights, f"weight gradients at step {row['step']}", "gradient"),
            (updates, "update:data per step", "step")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
    updates.set_ylabel("log10(update std / data std)", fontsize=8)
    acts.set_ylabel("share of values", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def write_png(rows: list[dict[str, Any]], path: Path, step: int | None = None) -> Path:
    """Draw the four plots of ``rows`` (at ``step``, default the last) to ``path``."""
    atomic.write_bytes(path, png(rows, step))
    return path
