"""The two test lanes: ``pytest -m "not slow"`` (make test-fast) and ``pytest -m slow``.

A test marked ``slow`` starts several processes, kills one, drives a browser or runs long;
``make test`` runs the fast lane, then the slow one. A test over every preset runs one preset
in the fast lane and the others in the slow one: ``slow_but(presets, "mlp-bn")``.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest


def slow_but(values: Iterable[object], *fast: object) -> list[object]:
    """Parameters for ``parametrize``: ``fast`` ones as they are, every other one marked slow
    (a tuple holds the values of several argument names, as in ``parametrize``)."""
    def slow(value: object) -> object:
        args = value if isinstance(value, tuple) else (value,)
        return pytest.param(*args, marks=pytest.mark.slow)

    return [value if value in fast else slow(value) for value in values]
