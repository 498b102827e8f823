"""What a practitioner would say about a run's ``diagnostics.jsonl`` (written by
``zoo train --diagnose``, zoo.diagnostics): a table of the layers' statistics and findings in
plain language, each naming the layer, the figure and the threshold. torch-free.

    rows = read_rows(run / DIAGNOSTICS)
    for finding in findings(rows, vocab_size=27):
        print(finding["text"])

The rules and their thresholds (``THRESHOLDS``, each settable with ``zoo diagnose --threshold
NAME=VALUE``):

- ``init_excess`` (1.0 nats): the loss of the first step above ``ln(V)``, the loss of a uniform
  guess, by more than this: an overconfident initialisation (the last layer not scaled down).
- ``saturated`` (0.05): a layer with more than this fraction of its units saturated (as its
  ``LayerType.saturated`` says: tanh ``|y| > 0.97``) at the first step, the initialisation
  (a trained layer saturates more as it grows confident).
- ``shrink`` (0.5) and ``grow`` (2.0): at the first step, three or more layers of one type
  (the output layer left out) whose output std falls (vanishing) or rises (exploding) from
  the first to the last of them by more than this factor.
- ``update_low`` (-4) and ``update_high`` (-2): a weight whose median ``log10(update:data)``
  over the recorded steps is below or above these: its learning rate is too low or too high.
  The output layer's weights, scaled down at initialisation, start high by design: only the
  low limit applies to them.
- ``dead`` (0.05): a layer with more than this fraction of dead units (zero for the whole
  batch) at any recorded step (layers that declare ``dead_units``).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from zoo import files
from zoo.errors import ArtifactError, SpecError

__all__ = ["DIAGNOSTICS", "THRESHOLDS", "read_rows", "findings", "table", "thresholds",
           "centres", "HIST_BINS", "HIST_RANGE"]

DIAGNOSTICS = "diagnostics.jsonl"
HIST_BINS, HIST_RANGE = 40, 4.0
THRESHOLDS: dict[str, float] = {"init_excess": 1.0, "saturated": 0.05, "shrink": 0.5,
                                "grow": 2.0, "update_low": -4.0, "update_high": -2.0,
                                "dead": 0.05}


def centres(reach: float) -> list[float]:
    """The centres of the HIST_BINS bins of a histogram over [-reach, reach]."""
    width = 2 * reach / HIST_BINS
    return [-reach + width * (i + 0.5) for i in range(HIST_BINS)]


def read_rows(path: Path, *, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The rows of a diagnostics.jsonl; ArtifactError (one line, naming the file and line) if
    it is missing (unless ``missing_ok``), cut short or of the wrong shape."""
    if not path.exists():
        if missing_ok:
            return []
        raise ArtifactError(f"{path.parent} has no {DIAGNOSTICS}: record one with `zoo train "
                            "SPEC --diagnose` (or --diagnose-every N)")
    lines, ended = files.read_lines(path, files.METRICS)
    rows: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            cut = number == len(lines) and not ended
            raise ArtifactError(f"{path}:{number}: " + ("the last line was cut short" if cut
                                else "corrupted line (not JSON)") + "; the file is damaged "
                                "(train again with --diagnose, or resume the run)") from None
        if not (isinstance(row, dict) and isinstance(row.get("step"), int)
                and isinstance(row.get("layers"), list) and isinstance(row.get("weights"), list)
                and all(isinstance(x, dict) and isinstance(x.get("entry"), str)
                        for x in row["layers"])
                and all(isinstance(x, dict) and isinstance(x.get("name"), str)
                        for x in row["weights"])):
            raise ArtifactError(f"{path}:{number}: expected a row with an integer 'step', "
                                "'layers' and 'weights'")
        rows.append(row)
    return rows


def thresholds(given: dict[str, str] | None = None) -> dict[str, float]:
    """``THRESHOLDS`` with ``given`` (NAME -> number as text) laid over; SpecError if wrong."""
    out = dict(THRESHOLDS)
    for name, text in (given or {}).items():
        if name not in THRESHOLDS:
            raise SpecError(f"--threshold {name}: unknown; choose from {', '.join(THRESHOLDS)}")
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise SpecError(f"--threshold {name}={text[:40]}: expected a finite number")
        out[name] = value
    return out


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def findings(rows: list[dict[str, Any]], vocab_size: int,
             limits: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Each finding: ``{"kind", "layer", "value", "threshold", "step", "text"}``; [] if healthy."""
    t = {**THRESHOLDS, **(limits or {})}
    out: list[dict[str, Any]] = []
    if not rows:
        return out

    def say(kind: str, layer: str | None, value: float, threshold: float, step: int,
            text: str) -> None:
        out.append({"kind": kind, "layer": layer, "value": value, "threshold": threshold,
                    "step": step, "text": text})

    first = rows[0]
    uniform = math.log(vocab_size)
    loss = _number(first.get("loss"))
    if loss is not None and loss > uniform + t["init_excess"]:
        say("overconfident-init", None, loss, uniform + t["init_excess"], first["step"],
            f"loss at step {first['step']} is {loss:.2f}, {loss - uniform:.2f} nats above "
            f"ln({vocab_size}) = {uniform:.2f}, a uniform guess (threshold "
            f"{t['init_excess']:g}): the initialisation is overconfident; scale the last "
            "layer's weights down (linear's scale, 0.1 by default on the last)")
    for key, kind, what, advice, scope in (
            ("saturated", "saturated", "of its units saturated",
             "lower the init gain of the layer before it, or normalise before it", rows[:1]),
            ("dead", "dead-units", "of its units dead (zero for the whole batch)",
             "lower the learning rate or the init gain before it", rows)):
        worst: dict[str, tuple[float, int]] = {}
        for row in scope:
            for layer in row["layers"]:
                value = _number(layer.get(key))
                if value is not None and value > worst.get(layer["entry"], (-1.0, 0))[0]:
                    worst[layer["entry"]] = (value, row["step"])
        for entry, (value, step) in worst.items():
            if value > t[key]:
                say(kind, entry, value, t[key], step,
                    f"{entry}: {value:.1%} {what} at step {step} (threshold {t[key]:.0%}): "
                    f"{advice}")
    by_type: dict[str, list[dict[str, Any]]] = {}
    output = first["layers"][-1]["entry"] if first["layers"] else ""
    for layer in first["layers"][:-1]:  # the output layer's logits are not an activation
        by_type.setdefault(layer["entry"].split(" ", 1)[-1], []).append(layer)
    for name, layers in by_type.items():
        stds = [_number(x.get("std")) for x in layers]
        if len(layers) < 3 or None in stds or not stds[0]:
            continue
        ratio = stds[-1] / stds[0]
        for kind, bad, limit, word, advice in (
                ("vanishing", ratio < t["shrink"], t["shrink"], "shrinks",
                 "raise the init gain (5/3 before tanh) or add batchnorm"),
                ("exploding", ratio > t["grow"], t["grow"], "grows",
                 "lower the init gain or add batchnorm")):
            if bad:
                say(kind, layers[-1]["entry"], ratio, limit, first["step"],
                    f"{name} output std {word} layer over layer at step {first['step']}: "
                    f"{layers[0]['entry']} {stds[0]:.3g} -> {layers[-1]['entry']} "
                    f"{stds[-1]:.3g} (ratio {ratio:.2f}, threshold {limit:g}): {kind} "
                    f"activations; {advice}")
    # the output layer's weights are scaled down at initialisation (0.1), so their update:data
    # starts high by design (the lecture's own outlier): only "too low" applies to them
    head = output.split(" ", 1)[0] + "."
    for name, values in _updates(rows).items():
        median = statistics.median(values)
        for kind, bad, limit, word in (("lr-too-low", median < t["update_low"], t["update_low"],
                                        "below"),
                                       ("lr-too-high", median > t["update_high"]
                                        and not name.startswith(head), t["update_high"],
                                        "above")):
            if bad:
                say(kind, name, median, limit, rows[-1]["step"],
                    f"{name}: update:data 10^{median:.2f} (median of {len(values)} recorded "
                    f"steps), {word} 10^{limit:g}: the learning rate is too "
                    f"{'low' if kind == 'lr-too-low' else 'high'} for it")
    return out


def _updates(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row in rows:
        for weight in row["weights"]:
            value = _number(weight.get("update_data"))
            if value is not None:
                out.setdefault(weight["name"], []).append(value)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """The layers at the first and the last recorded step, and each weight's ratios."""
    if not rows:
        return "no recorded steps"
    first, last = rows[0], rows[-1]
    lines = [f"layers at step {first['step']} -> step {last['step']} ({len(rows)} recorded "
             "steps)",
             f"{'entry':<24} {'std':>15} {'saturated':>15} {'dead':>13} {'grad std':>19}"]
    before = {x["entry"]: x for x in first["layers"]}
    for layer in last["layers"]:
        old = before.get(layer["entry"], {})
        lines.append(f"{layer['entry']:<24} {_pair(old.get('std'), layer.get('std'), 'g'):>15} "
                     f"{_pair(old.get('saturated'), layer.get('saturated'), '%'):>15} "
                     f"{_pair(old.get('dead'), layer.get('dead'), '%'):>13} "
                     f"{_pair(old.get('grad_std'), layer.get('grad_std'), 'e'):>19}")
    lines.append(f"{'weight':<24} {'shape':>12} {'grad:data':>11} {'log10 update:data':>19}")
    updates = _updates(rows)
    for weight in last["weights"]:
        median = statistics.median(updates[weight["name"]]) if updates.get(weight["name"]) \
            else None
        ratio = _number(weight.get("grad_data"))
        lines.append(f"{weight['name']:<24} {'x'.join(map(str, weight.get('shape', []))):>12} "
                     f"{'-' if ratio is None else format(ratio, '.3g'):>11} "
                     f"{'-' if median is None else format(median, '.2f'):>19}")
    return "\n".join(lines)


def _pair(a: Any, b: Any, kind: str) -> str:
    def one(v: Any) -> str:
        v = _number(v)
        if v is None:
            return "-"
        return f"{v:.1%}" if kind == "%" else f"{v:.2e}" if kind == "e" else f"{v:.3g}"
    return f"{one(a)} -> {one(b)}"
