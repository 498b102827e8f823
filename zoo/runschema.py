"""The fields of a run's ``meta.json`` and ``metrics.jsonl`` rows: each with a type and bounds.

    check_meta(meta, "runs/a/meta.json")        # ArtifactError naming the file and the field
    check_row(row, "runs/a/metrics.jsonl:12")   # one evaluation's row

A field a reader relies on is checked before anything is read further or written, so a hand-
edited or damaged file is one line naming the file and the field ("field 'seed': expected an
integer in [0, 2**64), got '42'"), never an internal error half-way or a silently different
answer (a seed of another type would rebuild another split). Fields this version does not know
(written by a newer one) are kept as they are; a field may be absent where older runs lacked
it (the reader then uses its documented default). torch-free.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from zoo import files
from zoo.errors import ArtifactError
from zoo.recipe import MAX_SEED

__all__ = ["read_meta", "check_meta", "check_row", "STATUSES", "KINDS"]

STATUSES = ("running", "interrupted", "failed", "finished")
KINDS = ("window", "sequence")
_SHA256 = re.compile(r"[0-9a-f]{64}")

Check = Callable[[Any], "Problem | None"]
Problem = tuple[str, str]  # (where inside the field: "", ".path", "[2].at"; what is wrong)


def _bad(expected: str, value: Any) -> Problem:
    return "", f"expected {expected}, got {_short(value)}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def integer(low: int, high: int | None = None) -> Check:
    bounds = f"in [{low}, 2**64)" if high == MAX_SEED else (
        f">= {low}" if high is None else f"in [{low}, {high}]")

    def check(value: Any) -> Problem | None:
        ok = _is_int(value) and value >= low and (high is None or value <= high)
        return None if ok else _bad(f"an integer {bounds}", value)
    return check


def number(low: float = -math.inf) -> Check:
    def check(value: Any) -> Problem | None:
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
              and math.isfinite(value) and value >= low)
        return None if ok else _bad("a finite number" if low == -math.inf
                                    else f"a finite number >= {low:g}", value)
    return check


def text(value: Any) -> Problem | None:
    return None if isinstance(value, str) and value else _bad("a non-empty string", value)


def flag(value: Any) -> Problem | None:
    return None if isinstance(value, bool) else _bad("true or false", value)


def one_of(*choices: str) -> Check:
    def check(value: Any) -> Problem | None:
        return None if value in choices else _bad("one of " + ", ".join(map(repr, choices)),
                                                  value)
    return check


def sha256(value: Any) -> Problem | None:
    ok = isinstance(value, str) and _SHA256.fullmatch(value)
    return None if ok else _bad("a sha256 (64 lowercase hex digits)", value)


def table(fields: Mapping[str, Check], required: tuple[str, ...] = ()) -> Check:
    """An object whose known keys hold what ``fields`` says (unknown keys are kept)."""
    def check(value: Any) -> Problem | None:
        if not isinstance(value, dict):
            return _bad("a JSON object", value)
        for key in required:
            if key not in value:
                return "", f"{key!r} is missing"
        for key, field in fields.items():
            if key in value and (problem := field(value[key])) is not None:
                return f".{key}{problem[0]}", problem[1]
        return None
    return check


def each(values: Check) -> Check:
    """An object of any keys, every value as ``values`` says."""
    def check(value: Any) -> Problem | None:
        if not isinstance(value, dict):
            return _bad("a JSON object", value)
        for key, item in value.items():
            if (problem := values(item)) is not None:
                return f".{key}{problem[0]}", problem[1]
        return None
    return check


def items(of: Check) -> Check:
    def check(value: Any) -> Problem | None:
        if not isinstance(value, list):
            return _bad("a list", value)
        for i, item in enumerate(value):
            if (problem := of(item)) is not None:
                return f"[{i}]{problem[0]}", problem[1]
        return None
    return check


def nullable(inner: Check) -> Check:
    return lambda value: None if value is None else inner(value)


COUNTS = each(integer(0))
META: dict[str, Check] = {
    "spec": text,
    "seed": integer(0, MAX_SEED),
    "recipe": table({"steps": integer(1), "seed": integer(0, MAX_SEED),
                     "batch_size": integer(1), "eval_every": integer(1)}),
    "eval_every_auto": flag,
    "versions": each(text),
    "data": table({"path": text, "sha256": sha256, "words": COUNTS, "windows": COUNTS},
                  required=("path",)),
    "kind": one_of(*KINDS),
    "parameters": integer(0),
    "processes": integer(1),
    "status": one_of(*STATUSES),
    "step": integer(0),
    "seconds": number(0.0),
    "threads": integer(1),
    "thread_choice": table({"reason": text, "now": integer(1), "steps": COUNTS,
                            "moves": integer(0)}),
    "metrics": nullable(each(number())),
    "extended": items(table({"at": integer(0), "from": integer(1), "to": integer(1)},
                            required=("at", "from", "to"))),
    "error": text,
    "diagnose_every": integer(1),
}
ROW: dict[str, Check] = {
    "step": integer(1),
    "lr": number(0.0),
    "train_loss": number(0.0),
    "val_loss": number(0.0),
    "seconds": number(0.0),
    "losses": items(number()),
}
ROW_REQUIRED = ("step", "lr", "train_loss", "val_loss")
CURVES_HINT = "restore the file, or move it away to resume without the earlier curves"


def read_meta(run: Path) -> dict[str, Any]:
    """``run``'s meta.json, read bounded (zoo.files) and checked field by field."""
    path = run / "meta.json"
    return check_meta(files.load_json(path, files.RUN_JSON, ArtifactError), str(path))


def check_meta(meta: Any, where: str) -> dict[str, Any]:
    """``meta`` if it is a valid meta.json object; ArtifactError naming ``where`` and the field."""
    if not isinstance(meta, dict):
        raise ArtifactError(f"{where} is corrupted: expected a JSON object, got "
                            f"{type(meta).__name__}")
    _fields(meta, META, where, "restore the file, or train the run again")
    return meta


def check_row(row: Any, where: str) -> dict[str, Any]:
    """``row`` if it is a valid metrics.jsonl row: an object with ``ROW_REQUIRED``, every field
    as ``ROW`` says."""
    if not isinstance(row, dict):
        raise ArtifactError(f"{where}: expected an object with an integer 'step'")
    missing = [key for key in ROW_REQUIRED if key not in row]
    if missing:
        raise ArtifactError(f"{where} is corrupted: field {missing[0]!r} is missing "
                            f"({CURVES_HINT})")
    _fields(row, ROW, where, CURVES_HINT)
    return row


def _fields(value: dict[str, Any], fields: Mapping[str, Check], where: str, hint: str) -> None:
    for key, check in fields.items():
        if key in value and (problem := check(value[key])) is not None:
            raise ArtifactError(f"{where} is corrupted: field '{key}{problem[0]}': "
                                f"{problem[1]} ({hint})")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"
