"""The project's error hierarchy: every failure a user can cause is a ZooError.

A message names the thing, the place (file:line, spec entry, plugin), what was expected and,
where it can, the fix. The CLI prints ``str(error)`` on one line and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

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
]


MAX_SHOWN = 10  # problems a message lists before "and N more"


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
