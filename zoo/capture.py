"""Warnings raised while plugin code runs inside a third-party tool (torch.onnx, onnxscript).

    with layer_warnings(model, "ONNX export"):
        torch.onnx.export(model, ...)

Torch and onnxscript warn about a layer's module in their own words, from their own files, and
often several times per export. Inside ``layer_warnings`` each warning is caught, attributed to
the model entry whose module was running when it was raised (found on the call stack), and
reported on leaving: one ``LayerWarning`` line per entry, naming it and its plugin and listing
each distinct warning once. Warnings that never concern the user (deprecations inside the
exporter, notes on its own progress) are dropped.
"""

from __future__ import annotations

import contextlib
import re
import sys
import warnings
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from zoo.errors import one_line

if TYPE_CHECKING:
    from zoo.build import Model

__all__ = ["LayerWarning", "layer_warnings", "HARMLESS"]

# categories that describe the tools, not the model: nothing for a layer author to act on
HARMLESS_CATEGORIES = (DeprecationWarning, PendingDeprecationWarning, FutureWarning,
                       ImportWarning, ResourceWarning)
HARMLESS = re.compile(r"training mode|is deprecated|will be removed|onnxscript.*version|"
                      r"torch\.onnx\.export.*dynamo|"
                      # two inputs' batch axes share one name: the exporter merges them
                      r"shares the same shape constraints with another axis", re.IGNORECASE)


class LayerWarning(UserWarning):
    """A tool warned while running a layer's module; the message names the entry and plugin."""


def _owner(frame: FrameType | None, owners: dict[int, int]) -> int | None:
    """The index of the model entry whose module (or submodule) is running in this stack."""
    while frame is not None:
        index = owners.get(id(frame.f_locals.get("self")))
        if index is not None:
            return index
        frame = frame.f_back
    return None


@contextlib.contextmanager
def layer_warnings(model: Model, what: str = "ONNX export") -> Iterator[dict[str, list[str]]]:
    """Catch the warnings raised inside; on leaving, warn once per entry (LayerWarning).

    The line names the entry and its plugin and lists each distinct warning once; warnings
    raised outside any entry's module get one line of their own. Yields the collected
    warnings (where -> messages), filled as they arrive.
    """
    owners = {id(sub): i for i, layer in enumerate(model.layers) for sub in layer.modules()}
    found: dict[str, list[str]] = {}

    def catch(message: Any, category: type[Warning], filename: str, lineno: int,
              file: Any = None, line: str | None = None) -> None:
        if issubclass(category, HARMLESS_CATEGORIES) or HARMLESS.search(str(message)):
            return
        index = _owner(sys._getframe(1), owners)
        if index is None:
            where = what
        else:
            entry = model.entries[index]
            where = f"{what}: {entry.label} of plugin {entry.layer.plugin!r}"
        text = f"{category.__name__}: {one_line(message)}"
        if text not in found.setdefault(where, []):
            found[where].append(text)

    with warnings.catch_warnings():
        warnings.simplefilter("always")  # see each one here; report each once below
        warnings.showwarning = catch
        yield found
    for where, texts in found.items():
        warnings.warn(f"{where} warned: " + "; ".join(texts), LayerWarning, stacklevel=3)
