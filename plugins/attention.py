"""The ``causal_self_attention`` layer: multi-head self-attention where a position sees only the
past, as in GPT. Input and output are sequences ``[B, T, C]``.

Written out (a fused query/key/value projection, ``scaled_dot_product_attention`` with
``is_causal=True``, an output projection) rather than ``nn.MultiheadAttention``, so the module
exports to plain ONNX ops and its weights are two ordinary linear maps.

Its step form keeps the keys and values of the positions so far in two caches
(``state_caches``), one entry ``[B, C]`` per position, time first (head h in columns h*D to
(h+1)*D). Position t is given the t entries before it, attends to them and to its own key, and
returns only its own key and value, which the caller writes at entry t: nothing is recomputed
or copied, and only the positions so far are read. A step's attention is elementwise products
and sums over a head's D features (no matrix product with a batch of B * H tiny matrices,
which onnxruntime runs slowly); each head's weights are spread over its features by a product
with a 0/1 matrix, which the int8 quantiser leaves in fp32 (it routes, it is not learned).
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
        self.state_caches = ("key", "value")  # a step gets the entries so far, returns its own
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
        """Key and value caches with an entry for every position of the context."""
        w = self.qkv.weight
        shape = (self.length, batch, self.proj.in_features)  # (T, B, C)
        return {"key": w.new_zeros(shape), "value": w.new_zeros(shape)}

    def step(self, x: torch.Tensor, state: dict[str, torch.Tensor],
             position: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Position ``position`` of every sequence: x (B, C) and the caches' entries before it
        (P, B, C) -> (B, C), and this position's key and value (B, C)."""
        b, c = x.shape
        h, d = self.heads, c // self.heads
        # three products with row blocks of the fused weight (blocks of a constant are cut once,
        # when onnxruntime loads the file) rather than one product and a copy of its columns
        w, bias = self.qkv.weight, self.qkv.bias
        q, k, v = (F.linear(x, w[i * c:(i + 1) * c], None if bias is None else
                            bias[i * c:(i + 1) * c]) for i in range(3))  # 3 x (B, C)
        keys, values = state["key"], state["value"]  # (P, B, C) each
        past = (q * keys).view(-1, b, h, d).sum(dim=3)  # (P, B, H) each head's score per entry
        here = (q * k).view(1, b, h, d).sum(dim=3)  # (1, B, H)
        scores = torch.cat([past, here]) * (1.0 / math.sqrt(d))  # (P + 1, B, H)
        # softmax over the entries, written out: onnxruntime's Softmax on a leading axis
        # transposes and costs several times these five small ops
        att = (scores - scores.amax(dim=0)).exp()  # (P + 1, B, H)
        att = att / att.sum(dim=0)  # (P + 1, B, H)
        spread = _spread(h, d, x)  # (H, C): each head's weight over its D features
        weighted = ((att[:-1] @ spread) * values).reshape(-1, b * c)  # (P, B * C)
        # the sum over entries as a product with ones: onnxruntime's ReduceSum over a leading
        # axis runs several times slower than this one-row MatMul
        y = (x.new_ones(1, weighted.shape[0]) @ weighted).view(b, c)  # (B, C)
        y = y + (att[-1] @ spread) * v  # (B, C)
        return self.proj(y), {"key": k, "value": v}  # (B, C)

    def extra_repr(self) -> str:
        return f"heads={self.heads}, dropout={self.dropout}"


def _spread(heads: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """(H, H * D) zeros and ones: row h is one over head h's D features."""
    columns = torch.arange(heads * size, device=like.device) // size
    return (columns == torch.arange(heads, device=like.device)[:, None]).to(like.dtype)


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
