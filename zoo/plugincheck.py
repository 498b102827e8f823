"""What ``zoo test-plugin NAME`` runs on an installed plugin, in the author's own environment.

    for outcome in check_plugin("extra"):
        print(outcome.line())

- every layer the plugin registers goes through the conformance kit (``zoo.testing``) with each
  parameter set its ``LayerType.examples`` gives (its defaults when it gives none), on several
  inputs: sequences ``[B, T, C]`` of ``SEQUENCES`` and features ``[B, C]`` of ``FEATURES`` (a
  layer that takes tokens: contexts ``CONTEXTS``). A shape no model can be built around (the
  layer's ``ShapeError``: attention's heads must divide C) is noted, not failed, but some shape
  must build; ``strict`` fails a check no shape could run (causality on features only, say).
- every preset it registers is built, trained a few steps on the first words of the bundled
  corpus, exported, and compared with its ONNX file as ``zoo check`` compares them (logits at
  every validation position, the same seeded words through torch and onnxruntime).

Nothing is written outside a temporary folder, removed at the end.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import PluginError, one_line
from zoo.layer import LayerType
from zoo.names import qualified
from zoo.registry import Registry, get_registry

__all__ = ["check_plugin", "Outcome", "SEQUENCES", "FEATURES", "CONTEXTS", "PRESET_STEPS"]

SEQUENCES = ((4, 8), (1, 8), (7, 12))  # (T, C): a short context, one position, odd sizes
FEATURES = ((8,), (12,))  # (C,)
CONTEXTS = (1, 4, 7)  # for a layer that takes tokens
PRESET_STEPS = 20
WORDS = 2000  # of the bundled corpus, for the presets' few steps


@dataclass
class Outcome:
    """One thing checked: what, whether it passed, and the kit's or the cycle's words."""

    what: str  # "layer 'swish' {'beta': 2.0} on [B, T, C] = (4, 8)", "preset 'extra-mlp'"
    status: str  # "passed", "failed", or "n/a" (the layer refused that input shape)
    detail: str = ""

    def line(self) -> str:
        return f"{self.status:>6}  {self.what}" + (f": {self.detail}" if self.detail else "")


def check_plugin(name: str, *, registry: Registry | None = None, strict: bool = False,
                 steps: int = PRESET_STEPS) -> Iterator[Outcome]:
    """Check plugin ``name``'s layers and presets; yields an Outcome as each is done.

    PluginError if no plugin of that name is installed (or it failed to load)."""
    registry = registry or get_registry()
    info = registry.plugins.get(name)
    if info is None:
        from zoo.errors import did_you_mean

        raise PluginError(f"no plugin {name!r} is installed"
                          f"{did_you_mean(name, registry.plugins)}; `zoo plugins` lists them")
    if info.error:
        raise PluginError(f"{info.source()} failed to load: {info.error}")
    if info.skipped:
        raise PluginError(f"{info.source()} is not loaded (not in LAYERZOO_LOAD_PLUGINS); "
                          "add it there to check it")
    for layer_name in info.layers:
        yield from _layer(registry.layer(qualified(name, layer_name)), registry, strict)
    if info.presets:
        with tempfile.TemporaryDirectory(prefix="layerzoo-test-plugin-") as tmp:
            words = _words(Path(tmp))
            for preset in info.presets:
                yield _preset(qualified(name, preset), registry, words, Path(tmp), steps)


def _layer(layer: LayerType, registry: Registry, strict: bool) -> Iterator[Outcome]:
    from zoo.testing import ConformanceError, ConformanceWarning, check_layer

    label = f"layer {qualified(layer.plugin, layer.name)!r}"
    shapes: list[tuple[str, dict[str, Any]]] = (
        [(f"context {t}", {"context": t}) for t in CONTEXTS] if layer.takes_tokens else
        [(f"[B, T, C] = {s}", {"in_shape": s}) for s in SEQUENCES]
        + [(f"[B, C] = {s}", {"in_shape": s}) for s in FEATURES])
    for params in layer.examples or ({},):
        built, skipped_everywhere = 0, None
        shown = f" {dict(params)}" if params else ""
        for where, options in shapes:
            what = f"{label}{shown} on {where}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConformanceWarning)
                    report = check_layer(layer, params=dict(params), registry=registry,
                                         **options)
            except ConformanceError as e:
                reason = _build_reason(layer, str(e))
                if reason is not None and "raised" not in reason:  # refused this input
                    yield Outcome(what, "n/a", one_line(reason))
                    continue
                built += 1
                yield Outcome(what, "failed", one_line(reason or e))
                continue
            except Exception as e:  # the plugin's own code raised: a failure, named
                built += 1
                yield Outcome(what, "failed", one_line(e, named=True))
                continue
            built += 1
            skipped = set(report.skipped)
            skipped_everywhere = skipped if skipped_everywhere is None else \
                skipped_everywhere & skipped
            note = f"; skipped {', '.join(sorted(skipped))}" if skipped else ""
            yield Outcome(what, "passed", ", ".join(report.passed) + note)
        if not built:
            yield Outcome(f"{label}{shown}", "failed", "no input shape could be built: give "
                          "examples= parameters that fit, or check the shape function")
        elif strict and skipped_everywhere:
            yield Outcome(f"{label}{shown}", "failed", "strict: never run on any shape: "
                          + ", ".join(sorted(skipped_everywhere)))


def _build_reason(layer: LayerType, message: str) -> str | None:
    """From a failed build check, the reason that names the layer's own entry (the kit tries
    several surrounding models, ' | ' between their errors); None for another failure."""
    if "fails the build check" not in message:
        return None
    reasons = [part.rsplit("<python>: ", 1)[-1] for part in message.split(" | ")]
    own = [r for r in reasons if f"({layer.name}): " in r]
    return (own or reasons)[0]


def _preset(name: str, registry: Registry, words: Path, tmp: Path, steps: int) -> Outcome:
    from zoo.export.check import check
    from zoo.export.onnx import export_run
    from zoo.train import train

    what = f"preset {name!r}"
    out = tmp / name.replace(":", "-")
    try:
        train(name, data=words, out=out, progress=False, log=lambda line: None,
              overrides={"steps": steps, "eval_every": steps}, registry=registry,
              device="cpu")
        result = check(out, export_run(out, registry=registry), registry=registry)
    except Exception as e:  # a ZooError, or the plugin's own code raising
        return Outcome(what, "failed", one_line(e, named=True))
    detail = (f"trained {steps} steps, exported; {result.contexts:,} {result.compared}, "
              f"largest difference {result.max_abs_diff:.2e}; {result.samples} words "
              f"{'identical' if result.samples_match else 'differ'}")
    return Outcome(what, "passed" if result.ok else "failed", detail)


def _words(folder: Path) -> Path:
    from zoo.data import default_words_file

    words = default_words_file().read_text(encoding="utf-8").split()[:WORDS]
    path = folder / "words.txt"
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path
