"""``zoo train --tensorboard DIR``: the run's curves, and with ``--diagnose`` its layer
statistics and histograms, as TensorBoard event files (``tensorboard --logdir DIR``), as
makemore.py writes them.

Written through ``torch.utils.tensorboard``, which needs the ``tensorboard`` package, an
optional extra (``pip install 'layerzoo[tensorboard]'``). Tags: ``loss/step`` (every step's
training loss), ``loss/train`` (the 100-step mean at each evaluation), ``loss/val``, ``lr``;
with ``--diagnose``: ``activations/ENTRY/std``, ``.../saturated``, ``.../dead``,
``grad_data/WEIGHT``, ``update_data/WEIGHT`` (log10) and the histograms ``activations/ENTRY``
and ``weight_grads/WEIGHT``. Rank 0 writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from zoo.errors import ArtifactError, SpecError
from zoo.findings import HIST_BINS, HIST_RANGE, centres

__all__ = ["Board", "check"]


def check(folder: str | Path) -> Path:
    """``folder`` if TensorBoard events can be written there: one line (SpecError,
    ArtifactError) for a missing package or a folder that cannot be made or written. Changes
    nothing, so it runs before the run directory is created."""
    try:
        import torch.utils.tensorboard  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        raise SpecError("--tensorboard needs the tensorboard package: pip install "
                        "'layerzoo[tensorboard]'") from None
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ArtifactError(f"--tensorboard {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ArtifactError(f"--tensorboard {folder}: {existing} is not writable by this "
                            "process")
    return folder


class Board:
    """One run's TensorBoard writer (``check`` its folder first)."""

    def __init__(self, folder: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = check(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ArtifactError(f"--tensorboard {folder}: cannot create it: "
                                f"{e.strerror or e}") from None
        self.writer = SummaryWriter(log_dir=str(self.folder))

    def curves(self, row: dict[str, Any]) -> None:
        """An evaluation's row of metrics.jsonl: its per-step losses, the means and the lr."""
        step, losses = row["step"], row.get("losses", [])
        for i, loss in enumerate(losses):
            self.writer.add_scalar("loss/step", loss, step - len(losses) + 1 + i)
        self.writer.add_scalar("loss/train", row["train_loss"], step)
        self.writer.add_scalar("loss/val", row["val_loss"], step)
        self.writer.add_scalar("lr", row["lr"], step)
        self.writer.flush()

    def diagnostics(self, row: dict[str, Any]) -> None:
        """A diagnostics.jsonl row: scalars per layer and weight, and their histograms."""
        step = row["step"]
        for layer in row["layers"]:
            tag = layer["entry"].replace(" ", "_")
            for key in ("std", "saturated", "dead", "grad_std"):
                if layer.get(key) is not None:
                    self.writer.add_scalar(f"activations/{tag}/{key}", layer[key], step)
            self._histogram(f"activations/{tag}", layer["hist"], HIST_RANGE, step)
        for weight in row["weights"]:
            for key in ("grad_data", "update_data"):
                if weight.get(key) is not None:
                    self.writer.add_scalar(f"{key}/{weight['name']}", weight[key], step)
            if weight.get("grad_hist"):
                self._histogram(f"weight_grads/{weight['name']}", weight["grad_hist"],
                                weight["grad_range"], step)
        self.writer.flush()

    def _histogram(self, tag: str, counts: list[int], reach: float, step: int) -> None:
        width, middles = 2 * reach / HIST_BINS, centres(reach)
        total = sum(counts)
        if not total:
            return
        self.writer.add_histogram_raw(
            tag, min=-reach, max=reach, num=total,
            sum=sum(c * x for c, x in zip(counts, middles, strict=True)),
            sum_squares=sum(c * x * x for c, x in zip(counts, middles, strict=True)),
            bucket_limits=[-reach + width * (i + 1) for i in range(HIST_BINS)],
            bucket_counts=counts, global_step=step)

    def close(self) -> None:
        self.writer.close()
