"""layerzoo-compat-api1: written against plugin API 1 (layerzoo 0.1.0); frozen, never edited.

Layers: ``scaled_tokens`` (takes tokens), ``gated`` (a parameter called ``residual``),
``leaky_sum`` (a running state), ``final_position`` (a reduction) and ``softsign_act`` (its
own ONNX translation table, empty). Presets: ``compat1-seq`` (a sequence model) and
``compat1-window`` (a window model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from zoo import LayerType, NoParams, ShapeError, hookimpl, param


@dataclass(frozen=True)
class TokenParams:
    dim: int = param(8, "features per token", min=1, max=4096)
    scale: float = param(1.0, "multiplies every vector", min=0.0)


class ScaledTokens(nn.Module):
    def __init__(self, vocab: int, dim: int, scale: float) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, dim)
        self.scale = scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids) * self.scale  # (B, T) -> (B, T, C), or (B,) -> (B, C)


@dataclass(frozen=True)
class GatedParams:
    width: int = param(16, "hidden features of the gate", min=1)
    residual: bool = param(True, "add the input back to the gated output")


class Gated(nn.Module):
    def __init__(self, features: int, width: int, residual: bool, gain: float) -> None:
        super().__init__()
        self.up = nn.Linear(features, width)
        self.down = nn.Linear(width, features)
        self.residual = residual
        nn.init.normal_(self.up.weight, 0.0, gain / math.sqrt(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(torch.tanh(self.up(x)))
        return x + y if self.residual else y


class LeakySum(nn.Module):
    """h_t = a * h_{t-1} + x_t over time, a in (0, 1) learned per feature."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        state = self.initial_state(x.shape[0])
        out = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state, torch.tensor(t))
            out.append(y)
        return torch.stack(out, dim=1)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {"h": self.logit.new_zeros(batch, self.logit.shape[0])}

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor],
             position: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h = torch.sigmoid(self.logit) * state["h"] + x
        return h, {"h": h}


class FinalPosition(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]  # (B, T, C) -> (B, C)


class Softsign(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (1 + x.abs())


def _features(in_shape, params, place):
    if len(in_shape) not in (1, 2):
        raise ShapeError(f"{place.label}: expects [B, C] or [B, T, C], got {in_shape}")
    return in_shape


def _sequence(in_shape, params, place):
    if len(in_shape) != 2:
        raise ShapeError(f"expects a sequence [B, T, C], got {in_shape}")
    return in_shape


def _tokens(in_shape, params, place):
    assert place.index >= 0 and place.context >= 1 and place.vocab_size >= 2
    assert isinstance(place.last_of_type, bool) and place.next_gain > 0
    return (*in_shape, params.dim)  # (T,) -> (T, C); (,) -> (C,)


SCALED_TOKENS = LayerType(
    name="scaled_tokens", doc="A token embedding times a constant.", params=TokenParams,
    shape=_tokens, build=lambda s, p, pl: ScaledTokens(pl.vocab_size, p.dim, p.scale),
    takes_tokens=True, causal=True, incremental="position")

GATED = LayerType(
    name="gated", doc="down(tanh(up(x))), plus x when residual.", params=GatedParams,
    shape=_features, build=lambda s, p, pl: Gated(s[-1], p.width, p.residual, pl.next_gain),
    gain=1.0, causal=True, incremental="position")

LEAKY_SUM = LayerType(
    name="leaky_sum", doc="A leaky running sum over time: [B, T, C] -> [B, T, C].",
    params=NoParams, shape=_sequence, build=lambda s, p, pl: LeakySum(s[-1]), causal=True,
    incremental="state")

FINAL_POSITION = LayerType(
    name="final_position", doc="The last position: [B, T, C] -> [B, C].", params=NoParams,
    shape=lambda s, p, pl: _sequence(s, p, pl)[1:], build=lambda s, p, pl: FinalPosition(),
    reduction=True)

SOFTSIGN_ACT = LayerType(
    name="softsign_act", doc="x / (1 + |x|).", shape=lambda s, p, pl: s,
    build=lambda s, p, pl: Softsign(), gain=1.0, causal=True, incremental="position",
    onnx_translation=lambda: {})

SEQUENCE = {
    "description": "compat1: tokens, gated (residual), leaky sum, softsign, linear",
    "model": {"context": "auto", "layers": [
        {"type": "scaled_tokens", "dim": 12, "scale": 0.5},
        {"type": "gated", "width": 24, "residual": True}, "leaky_sum", "softsign_act",
        "linear"]},
    "train": {"steps": 300, "batch_size": 32, "lr": 0.01},
}

WINDOW = {
    "description": "compat1: tokens, gated (no residual), final position, linear (context 4)",
    "model": {"context": 4, "layers": [
        {"type": "scaled_tokens", "dim": 8}, {"type": "gated", "residual": False},
        "final_position", "linear"]},
    "train": {"steps": 300, "batch_size": 32},
}


@hookimpl
def layerzoo_register_layers(register):
    for layer in (SCALED_TOKENS, GATED, LEAKY_SUM, FINAL_POSITION, SOFTSIGN_ACT):
        register(layer)


@hookimpl
def layerzoo_register_presets(register):
    register("compat1-seq", SEQUENCE, SEQUENCE["description"])
    register("compat1-window", WINDOW, "a window model of compat1's layers")
