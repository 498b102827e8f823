"""Recurrent layers, ``rnn`` and ``gru``: makemore.py's RNNCell and GRUCell run over a sequence.

``[B, T, C] -> [B, T, H]``. The hidden state starts from a learned vector (``start``, zeros at
first); position t's state is the cell of position t's input and the state before it, so the
output at t depends on the inputs up to t only (causal). The step form carries the state.

The cells are written out as linear maps with tanh and sigmoid, the equations of makemore.py,
rather than ``torch.nn.GRU``: the exported step graph is then plain Gemm/Tanh/Sigmoid ops, with
no reliance on how an exporter translates a fused recurrent op. Their linear maps keep
``nn.Linear``'s own initialisation (uniform in +-1/sqrt(fan in)), as makemore.py's do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from zoo import LayerType, Place, Shape, ShapeError, hookimpl, kernels, param


class Affine(nn.Linear):
    """nn.Linear whose training gradients do not depend on the thread count (zoo.kernels):
    a cell's weight gradient is a sum over the whole batch at every position."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.linear(x, self.weight, self.bias, training=self.training)


class RNNCell(nn.Module):
    """h_t = tanh(W [x_t, h_{t-1}] + b)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.xh_to_h = Affine(dim + hidden, hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.xh_to_h(torch.cat([x, h], dim=1)))  # (B, H)


class GRUCell(nn.Module):
    """r = sigmoid(W_r [x, h]), z = sigmoid(W_z [x, h]), hbar = tanh(W_h [x, r * h]),
    h_t = (1 - z) * h + z * hbar."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.xh_to_z = Affine(dim + hidden, hidden)
        self.xh_to_r = Affine(dim + hidden, hidden)
        self.xh_to_hbar = Affine(dim + hidden, hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        xh = torch.cat([x, h], dim=1)  # (B, C + H)
        r = torch.sigmoid(self.xh_to_r(xh))  # (B, H) how much of the past the candidate sees
        hbar = torch.tanh(self.xh_to_hbar(torch.cat([x, r * h], dim=1)))  # (B, H) candidate
        z = torch.sigmoid(self.xh_to_z(xh))  # (B, H) how far to move to the candidate
        return (1 - z) * h + z * hbar  # (B, H)


class Recurrent(nn.Module):
    """A cell run over every position from a learned start state."""

    def __init__(self, cell: nn.Module, hidden: int) -> None:
        super().__init__()
        self.cell = cell
        self.start = nn.Parameter(torch.zeros(1, hidden))  # (1, H) the state before position 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.start.expand(x.shape[0], -1)  # (B, H)
        states = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)  # (B, H)
            states.append(h)
        return torch.stack(states, dim=1)  # (B, T, H)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        return {"hidden": self.start.new_zeros(batch, self.start.shape[1])}  # (B, H)

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor],
             position: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # every state starts at zeros; the learned start takes its place at position 0
        h = torch.where(position == 0, self.start, state["hidden"])  # (B, H)
        h = self.cell(x, h)  # (B, H)
        return h, {"hidden": h}


@dataclass(frozen=True)
class RecurrentParams:
    hidden: int | None = param(None, "hidden state size H; default the input's feature size C",
                               min=1, max=65536)


def _shape(in_shape: Shape, params: RecurrentParams, place: Place) -> Shape:
    if len(in_shape) != 2:
        raise ShapeError(f"expects a sequence [B, T, C], got features of shape {in_shape}")
    return (in_shape[0], params.hidden or in_shape[1])


def _recurrent(name: str, cell: type[nn.Module], doc: str) -> LayerType:
    def build(in_shape: Shape, params: RecurrentParams, place: Place) -> Recurrent:
        hidden = params.hidden or in_shape[1]
        return Recurrent(cell(in_shape[1], hidden), hidden)

    return LayerType(name=name, doc=doc, params=RecurrentParams, shape=_shape, build=build,
                     gain=1.0, causal=True, incremental="state")


RNN = _recurrent("rnn", RNNCell, "Recurrent layer, h_t = tanh(W [x_t, h_{t-1}] + b) from a "
                                 "learned start state: [B, T, C] -> [B, T, hidden].")
GRU = _recurrent("gru", GRUCell, "Gated recurrent layer (makemore.py's GRU cell) from a learned "
                                 "start state: [B, T, C] -> [B, T, hidden].")


@hookimpl
def layerzoo_register_layers(register):
    register(RNN)
    register(GRU)
