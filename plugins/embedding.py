"""The ``embedding`` layer: token ids [B, T] -> vectors [B, T, C]. Every model starts here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from zoo import LayerType, hookimpl, param


@dataclass(frozen=True)
class EmbeddingParams:
    dim: int | None = param(None, "vector size per token; default the vocabulary size (with "
                                  "context 1 and zero init, a bigram table)", min=1)
    init: Literal["normal", "zeros"] = param("normal", "N(0, 1) as torch does, or all zeros")


def _build(in_shape, params: EmbeddingParams, place) -> nn.Embedding:
    layer = nn.Embedding(place.vocab_size, params.dim or place.vocab_size)
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
)


@hookimpl
def layerzoo_register_layers(register):
    register(EMBEDDING)
