"""Looking inside the layers while they train: per-layer statistics at chosen steps.

    zoo train deep.toml --diagnose                  # about 20 recorded steps, and the first
    zoo train deep.toml --diagnose --diagnose-every 100

At a recorded step (``Recorder.due``) forward hooks keep each layer's output and its gradient
(``retain_grad``), and an optimizer pre-step hook keeps every weight matrix's gradient and
data, so the step actually taken can be measured (for AdamW its real update, not ``lr *
grad``). The hooks are attached for that step only and removed after it: other steps run the
model unchanged, and the recorded step's arithmetic is the same (the weights, and so resume,
stay bit for bit those of a run without ``--diagnose``). One row per recorded step goes to the
run's ``diagnostics.jsonl``::

    {"step": 1, "loss": 3.31,
     "layers": [{"entry": "layers.4 tanh", "mean": 0.01, "std": 0.63, "saturated": 0.04,
                 "dead": null, "grad_mean": 0.0, "grad_std": 3.1e-4, "hist": [...]}],
     "weights": [{"name": "layers.2.weight", "shape": [200, 30], "grad_std": 1e-3,
                  "grad_data": 0.004, "update_data": -2.9}]}

``saturated`` is the fraction of units a layer's ``LayerType.saturated`` marks (null for a
layer that declares none), ``dead`` the fraction of its units zero for the whole batch (layers
that declare ``dead_units``), ``update_data`` is ``log10(update.std() / data.std())``.
``hist`` holds ``HIST_BINS`` counts of the outputs over ``[-HIST_RANGE, HIST_RANGE]`` (clamped
into the end bins), ``grad_hist`` those of a layer's output gradient or a weight's gradient over
``[-grad_range, grad_range]`` (4 of its std). Under DDP rank 0 records its own slice of the
batch. ``zoo.diagplot`` draws the lecture's four plots from the rows.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from zoo.build import Model
from zoo.findings import DIAGNOSTICS, HIST_BINS, HIST_RANGE

__all__ = ["Recorder", "default_every", "DIAGNOSTICS", "HIST_BINS", "HIST_RANGE"]

ROWS = 20  # recorded steps over a run by default (and the first)


def default_every(steps: int) -> int:
    return max(1, steps // ROWS)


class Recorder:
    """Records the statistics of ``model`` at every ``every``-th step (and the first)."""

    def __init__(self, model: Model, optimizer: torch.optim.Optimizer, every: int) -> None:
        self.model, self.optimizer, self.every = model, optimizer, every
        self._outputs: dict[int, torch.Tensor] = {}
        self._before: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles: list[Any] = []

    def due(self, step: int) -> bool:
        """Whether the step taken from ``step`` steps done is recorded (1-based: the first,
        then every ``every``-th)."""
        return step == 0 or (step + 1) % self.every == 0

    def attach(self) -> None:
        """Hooks for the next step only: the layers' outputs, the weights before the update."""
        for entry, module in zip(self.model.entries, self.model.layers, strict=True):
            self._handles.append(module.register_forward_hook(self._keep(entry.index)))
        self._handles.append(self.optimizer.register_step_pre_hook(self._weights))

    def _keep(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor) and output.is_floating_point():
                if output.requires_grad:
                    output.retain_grad()
                self._outputs[index] = output
        return hook

    def _weights(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        for name, p in self.model.named_parameters():
            if p.dim() >= 2 and p.grad is not None:  # weight matrices (and tables)
                self._before[name] = (p.detach().clone(), p.grad.detach().clone())

    def record(self, step: int, loss: float) -> dict[str, Any]:
        """The row of the step just taken (``step`` steps done before it); removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        layers = []
        with torch.no_grad():
            for entry in self.model.entries:
                out = self._outputs.get(entry.index)
                if out is not None:
                    layers.append(_layer_row(entry, out))
            params = dict(self.model.named_parameters())
            weights = [_weight_row(name, params[name], data, grad)
                       for name, (data, grad) in self._before.items()]
        self._outputs.clear()
        self._before.clear()
        return {"step": step + 1, "loss": round(float(loss), 6), "layers": layers,
                "weights": weights}


def _layer_row(entry: Any, out: torch.Tensor) -> dict[str, Any]:
    y = out.detach().double()
    layer = entry.layer
    saturated = (float(layer.saturated(out.detach(), entry.params).double().mean())
                 if layer.saturated is not None else None)
    dead = None
    if layer.dead_units:
        units = y.reshape(-1, y.shape[-1])  # (B * T, C): a unit is a feature
        dead = float((units == 0).all(dim=0).double().mean())
    grad = out.grad.double() if out.grad is not None else None
    return {"entry": f"layers.{entry.index} {layer.name}", "mean": _num(y.mean()),
            "std": _num(y.std()), "saturated": saturated, "dead": dead,
            "grad_mean": None if grad is None else _num(grad.mean()),
            "grad_std": None if grad is None else _num(grad.std()),
            "hist": _hist(y, HIST_RANGE), **_spread_hist(grad)}


def _hist(values: torch.Tensor, reach: float) -> list[int]:
    """HIST_BINS counts over [-reach, reach], values beyond it in the end bins."""
    return [int(c) for c in torch.histc(values.clamp(-reach, reach), HIST_BINS, -reach,
                                        reach).tolist()]


def _spread_hist(values: torch.Tensor | None) -> dict[str, Any]:
    """A gradient's histogram over +-4 of its std (its scale varies by orders of magnitude)."""
    if values is None or not values.numel():
        return {"grad_hist": None, "grad_range": None}
    reach = float(4 * values.std()) if values.numel() > 1 else 0.0
    if not (math.isfinite(reach) and reach > 0):
        return {"grad_hist": None, "grad_range": None}
    return {"grad_hist": _hist(values, reach), "grad_range": float(f"{reach:.6g}")}


def _weight_row(name: str, p: torch.Tensor, data: torch.Tensor,
                grad: torch.Tensor) -> dict[str, Any]:
    data, grad = data.double(), grad.double()
    spread = data.std()
    update = (p.detach().double() - data).std()
    ratio = float(update / spread) if spread > 0 else math.nan
    return {"name": name, "shape": list(p.shape), "grad_std": _num(grad.std()),
            "grad_data": _num(grad.std() / spread) if spread > 0 else None,
            "update_data": round(math.log10(ratio), 4) if ratio > 0 else None,
            **_spread_hist(grad)}


def _num(value: torch.Tensor) -> float | None:
    number = float(value)
    return float(f"{number:.6g}") if math.isfinite(number) else None
