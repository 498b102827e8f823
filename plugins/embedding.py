"""The ``embedding`` layer: token ids [B, T] -> vectors [B, T, C]. Every model starts here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from zoo import LayerType, hookimpl, kernels, param


@dataclass(frozen=True)
class EmbeddingParams:
    dim: int | None = param(None, "vector size per token; default the vocabulary size (with "
                                  "context 1 and zero init, a bigram table)", min=1)
    init: Literal["normal", "zeros"] = param("normal", "N(0, 1) as torch does, or all zeros")


class Embedding(nn.Embedding):
    """nn.Embedding whose weight gradient, trained on the CPU, is zoo.kernels' (faster, and
    thread-stable); evaluation, and so the exported graph (one Gather node), is torch's own."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return kernels.embedding(ids, self.weight, training=self.training)  # (B, T, C)


def _build(in_shape, params: EmbeddingParams, place) -> nn.Embedding:
    layer = Embedding(place.vocab_size, params.dim or place.vocab_size)
    if params.init == "zeros":
        nn.init.zeros_(layer.weight)
    return layer


EMBEDDING = LayerType(
    name="embedding",
    doc="Lookup table from token id to a learned vector: [B, T] -> [B, T, dim].",
    params=EmbeddingParams,
    shape=lambda s, p, pl: (*s, p.dim or pl.vocab_size),
    build=_build,
    takes_tokens=True,
    causal=True, incremental="position",  # each id alone
)


@hookimpl
def layerzoo_register_layers(register):
    register(EMBEDDING)
