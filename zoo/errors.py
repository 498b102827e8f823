"""The project's error hierarchy: every failure a user can cause is a ZooError.

A message names the thing, the place (file:line, spec entry, plugin), what was expected and,
where it can, the fix. The CLI prints ``str(error)`` on one line and exits with status 2.
The helpers below write the parts every message shares: another library's error quoted in one
line (``one_line``), a value that was not expected (``typed_repr``), close names
(``did_you_mean``).
"""

from __future__ import annotations

import difflib
import math
import unicodedata
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ZooError",
    "SpecError",
    "ShapeError",
    "PluginError",
    "DataError",
    "ArtifactError",
    "TrainingError",
    "RunWarning",
    "did_you_mean",
    "one_line",
    "typed_repr",
]


MAX_SHOWN = 10  # problems a message lists before "and N more"
QUOTED = 300  # characters of another library's error quoted in a message
BIG_INT_BITS = 256  # a larger integer is named by its digits (repr refuses > 4,300 of them)


class ZooError(Exception):
    """Base class: bad input or a broken artifact, reported without a traceback."""

    exit_code: int = 2  # the CLI's exit status for it (2: the input was bad)


class SpecError(ZooError):
    """A spec that cannot be built. Carries every problem found, not only the first."""

    def __init__(self, problems: list[str] | str, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = f"{where}{self.problems[0]}"
        else:  # all are kept in .problems; a message of 80,000 of them helps no one
            more = len(self.problems) - MAX_SHOWN
            text = (f"{where}{len(self.problems):,} problems: "
                    + "; ".join(self.problems[:MAX_SHOWN])
                    + (f"; and {more:,} more" if more > 0 else ""))
        super().__init__(text)


class ShapeError(ZooError):
    """Raised by a layer's shape function when it cannot take the input shape it is given.

    Layer authors raise it with a short reason; the core adds which entries disagree.
    """


class PluginError(ZooError):
    """A plugin that failed to import or register, or two plugins claiming one name."""


class DataError(ZooError):
    """A words file that cannot be read or used (names the file and line)."""


class ArtifactError(ZooError):
    """A run directory, weights file or ONNX file that is missing, corrupted or foreign."""


class TrainingError(ZooError):
    """Training stopped: a non-finite loss or an unusable recipe."""


class RunWarning(UserWarning):
    """Something a run could not do that does not stop it (its loss curve not drawn)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' naming the close matches of ``name``, or '' if none is close."""
    close = difflib.get_close_matches(name, [str(c) for c in choices], n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def one_line(error: BaseException | str, limit: int = QUOTED, *, first: bool = False,
             named: bool = False) -> str:
    """``error`` as one line of a message: an exception quoted, or a message made safe to print.

    An exception's text is quoted with every run of whitespace (line breaks too) as one space;
    ``first`` keeps its first line only (for errors that append a C++ stack or a graph dump);
    ``named`` puts its class name first (``ValueError: ...``), and an exception with no text
    is named by its class alone. A string keeps its spacing. Either way, control characters
    and line breaks left are escaped (a path may hold an escape sequence or a newline), and a
    line of over ``limit`` characters is cut, saying how many more there were.
    """
    if isinstance(error, BaseException):
        text = str(error).strip()
        if first:
            text = text.splitlines()[0] if text else ""
        text = " ".join(text.split())
        name = type(error).__name__
        text = f"{name}: {text}" if named and text else text or name
    else:
        text = error
    out = "".join(c.encode("unicode_escape").decode("ascii")
                  if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    if len(out) > limit:
        out = out[:limit] + f"... ({len(out) - limit:,} more characters)"
    return out


def typed_repr(value: Any) -> str:
    """How a message names a value it did not expect: its type and a short repr
    (``int 5``, ``string 'abc'``), or the digits of a huge integer."""
    if isinstance(value, int) and value.bit_length() > BIG_INT_BITS:
        size = abs(value)
        digits = int(math.log10(size)) + 1  # exact after the two float-rounding corrections
        digits += (size >= 10 ** digits) - (size < 10 ** (digits - 1))
        return f"an integer of {digits:,} digits"
    text = repr(value)
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{type(value).__name__} {text}" if not isinstance(value, str) else f"string {text}"
