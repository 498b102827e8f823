"""The ``causal_self_attention`` layer: multi-head self-attention where a position sees only the
past, as in GPT. Input and output are sequences ``[B, T, C]``.

Written out (a fused query/key/value projection, ``scaled_dot_product_attention`` with
``is_causal=True``, an output projection) rather than ``nn.MultiheadAttention``, so the module
exports to plain ONNX ops and its weights are two ordinary linear maps.

Its step form keeps the keys and values of the positions so far in a cache of fixed size,
``[B, H, T, D]`` for the model's context T: position t writes slot t and attends to slots <= t.
Every shape in the step graph is then static but the batch, and no position is recomputed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from zoo import LayerType, Place, Shape, ShapeError, hookimpl, param


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over [B, T, C] with ``heads`` heads of size C/heads."""

    def __init__(self, dim: int, heads: int, dropout: float, bias: bool, length: int) -> None:
        super().__init__()
        self.heads, self.dropout, self.length = heads, dropout, length
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.drop = nn.Dropout(dropout)
        # N(0, 1/C): unit-variance inputs give unit-variance queries, keys and values, so the
        # 1/sqrt(head size) in the attention logits keeps them O(1) at the start
        for linear in (self.qkv, self.proj):
            nn.init.normal_(linear.weight, 0.0, 1.0 / math.sqrt(dim))
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)  # 3 x (B, T, C)
        q = q.view(b, t, self.heads, c // self.heads).transpose(1, 2)  # (B, H, T, D)
        k = k.view(b, t, self.heads, c // self.heads).transpose(1, 2)  # (B, H, T, D)
        v = v.view(b, t, self.heads, c // self.heads).transpose(1, 2)  # (B, H, T, D)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)  # (B, H, T, D)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, T, C)
        return self.drop(self.proj(y))  # (B, T, C)

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        """Empty key and value caches, one slot per position of the context."""
        c = self.proj.in_features
        w = self.qkv.weight
        shape = (batch, self.heads, self.length, c // self.heads)  # (B, H, T, D)
        return {"key": w.new_zeros(shape), "value": w.new_zeros(shape)}

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor],
             position: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Position ``position`` of every sequence: x (B, C) -> (B, C), caches updated."""
        b, c = x.shape
        h, d = self.heads, c // self.heads
        q, k, v = self.qkv(x).split(c, dim=1)  # 3 x (B, C)
        slots = torch.arange(self.length, device=x.device)  # (T,)
        here = (slots == position)[:, None]  # (T, 1) the slot this position writes
        keys = torch.where(here, k.view(b, h, 1, d), state["key"])  # (B, H, T, D)
        values = torch.where(here, v.view(b, h, 1, d), state["value"])  # (B, H, T, D)
        att = (q.view(b, h, 1, d) @ keys.transpose(2, 3)) * (1.0 / math.sqrt(d))  # (B, H, 1, T)
        att = att.masked_fill(slots > position, float("-inf")).softmax(dim=-1)  # (B, H, 1, T)
        y = (att @ values).reshape(b, c)  # (B, H, 1, D) -> (B, C)
        return self.proj(y), {"key": keys, "value": values}  # (B, C)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, dropout={self.dropout}"


@dataclass(frozen=True)
class AttentionParams:
    heads: int = param(4, "attention heads; must divide the feature size C", min=1, max=1024)
    dropout: float = param(0.0, "dropout on the attention weights and the output while "
                                "training", min=0.0, max=0.9)
    bias: bool = param(True, "learn biases in the query/key/value and output projections")


def _shape(in_shape: Shape, params: AttentionParams, place: Place) -> Shape:
    if len(in_shape) != 2:
        raise ShapeError(f"expects a sequence [B, T, C], got features of shape {in_shape}")
    c = in_shape[1]
    if c % params.heads:
        fits = [h for h in range(1, min(c, 16) + 1) if c % h == 0]
        raise ShapeError(f"key 'heads': {params.heads} heads do not divide the feature size "
                         f"{c}; choose heads from {', '.join(map(str, fits))} or change the "
                         "feature size")
    return in_shape


CAUSAL_SELF_ATTENTION = LayerType(
    name="causal_self_attention",
    doc="Multi-head self-attention in which each position sees itself and earlier ones: "
        "[B, T, C] -> [B, T, C].",
    params=AttentionParams,
    shape=_shape,
    build=lambda s, p, pl: CausalSelfAttention(s[1], p.heads, p.dropout, p.bias, s[0]),
    causal=True,
    incremental="state",  # a key/value cache of the context's positions
)


@hookimpl
def layerzoo_register_layers(register):
    register(CAUSAL_SELF_ATTENTION)
