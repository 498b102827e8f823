"""Numbers on the command line, read strictly: decimal notation and nothing else.

Python's ``int`` and ``float`` also take ``1_000``, ``+5``, `` 7 ``, other scripts' digits,
``inf`` and ``nan``; the JavaScript sampler (``web/sample.mjs``) reads the same options with the
same rules, so both refuse the same inputs in the same words. A value out of range is named as
such ("got \"-1\"" for ``-n -1``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

__all__ = ["Whole", "Decimal"]

_WHOLE = re.compile(r"-?[0-9]+")
_DECIMAL = re.compile(r"-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class Whole(click.ParamType):
    """A whole number in decimal digits, at least ``min``."""

    name = "integer"

    def __init__(self, min: int = 0) -> None:
        self.min = min

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and _WHOLE.fullmatch(value):
            number = int(value)
        else:
            number = None
        if number is None or number < self.min:
            self.fail(f"expected a whole number >= {self.min}, got {_quoted(value)}", param, ctx)
        return number


class Decimal(click.ParamType):
    """A number in decimal notation (``0.7``, ``2``, ``1e-3``): no hex, inf or nan."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        if not (isinstance(value, str) and _DECIMAL.fullmatch(value)):
            self.fail(f"expected a decimal number, got {_quoted(value)}", param, ctx)
        return float(value)


def _quoted(value: Any) -> str:
    """The value as the JavaScript sampler quotes it (JSON.stringify)."""
    return json.dumps(str(value), ensure_ascii=False)
