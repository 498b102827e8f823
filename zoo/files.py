"""Bounded reads of regular files: every file the package reads goes through here.

    data = files.read_bytes(path, files.WORDS, DataError)     # at most WORDS.limit bytes
    spec = files.load_json(path, files.SPEC, SpecError)       # parsed, duplicate keys refused

A path that is not a regular file (a directory, a FIFO, a device, a socket) is refused by name
before it is opened for reading, and FIFOs are opened non-blocking so that nothing here can hang.
The size bound does not trust ``st_size`` (0 for ``/dev/zero``, and a file may grow while it is
read): at most ``limit + 1`` bytes are read, and one byte over the limit refuses the file. Each
kind of file has its own documented limit (docs/errors.md).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import ArtifactError, ZooError

__all__ = ["read_lines",
           "Kind", "SPEC", "WORDS", "ONNX", "WEIGHTS", "CHECKPOINT", "RUN_JSON", "METRICS",
           "KINDS", "read_bytes", "read_text", "decode", "load_json", "parse_json", "file_type"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
CHUNK = 8 * MiB
MAX_INT_DIGITS = 100  # an integer written with more digits is no size, step or seed


@dataclass(frozen=True)
class Kind:
    """A kind of file the package reads: what a message calls it, and its size limit."""

    what: str  # "a words file (one word per line)": completes "expected ..."
    limit: int  # bytes; one more and the file is refused
    missing: str  # the message when the path does not exist; "{path}" is filled in


SPEC = Kind("a spec file (.toml or .json)", 1 * MiB, "{path}: no such spec file")
WORDS = Kind("a words file (one word per line)", 256 * MiB, "{path}: no such words file")
# protobuf cannot serialise a model of 2 GiB or more, so no real ONNX file is larger
ONNX = Kind("an .onnx file", 2 * GiB, "{path}: no such ONNX file")
# MAX_PARAMS (50M float32) weights are 200 MB; ten times that leaves room for raised limits
WEIGHTS = Kind("a safetensors weights file", 2 * GiB, "{path} is missing")
CHECKPOINT = Kind("a safetensors checkpoint", 6 * GiB, "{path} is missing")  # weights + AdamW x2
RUN_JSON = Kind("a JSON file of a run directory", 16 * MiB, "{path} is missing")
METRICS = Kind("a metrics file (JSON lines)", 64 * MiB, "{path} is missing")
KINDS = {"spec": SPEC, "words": WORDS, "onnx": ONNX, "weights": WEIGHTS,
         "checkpoint": CHECKPOINT, "run-json": RUN_JSON, "metrics": METRICS}


def file_type(mode: int) -> str:
    """What a stat mode is, as a message says it: 'directory', 'FIFO (named pipe)', ..."""
    for test, name in ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISLNK, "symbolic link")):
        if test(mode):
            return name
    return "special file"


def _size(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} bytes"


def _refuse_unless_regular(path: Path, mode: int, kind: Kind,
                           error: type[ZooError]) -> None:
    if not stat.S_ISREG(mode):
        raise error(f"{path} is a {file_type(mode)}; expected {kind.what}")


def read_bytes(path: str | Path, kind: Kind, error: type[ZooError] = ArtifactError) -> bytes:
    """The bytes of regular file ``path``, at most ``kind.limit``; ``error`` (one line) if not."""
    path = Path(path)
    try:
        # the type is checked before the open: opening a FIFO for reading would wait for a
        # writer, and opening a device can have effects of its own
        _refuse_unless_regular(path, os.stat(path).st_mode, kind, error)
        # O_NONBLOCK: a FIFO swapped in after the check still cannot block the open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(kind.missing.format(path=path)) from None
    except NotADirectoryError:
        raise error(f"{path}: a part of the path is not a directory") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        _refuse_unless_regular(path, info.st_mode, kind, error)  # what was opened is checked
        if info.st_size > kind.limit:  # a cheap early refusal; the loop below is the bound
            raise error(f"{path} is {info.st_size:,} bytes; {kind.what} is refused above "
                        f"{_size(kind.limit)}")
        os.set_blocking(fd, True)
        parts, total = [], 0
        while total <= kind.limit:
            part = os.read(fd, min(CHUNK, kind.limit + 1 - total))
            if not part:
                break
            parts.append(part)
            total += len(part)
        if total > kind.limit:
            raise error(f"{path} is larger than {_size(kind.limit)}; {kind.what} is refused "
                        "above that")
        return b"".join(parts)
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)


def read_text(path: str | Path, kind: Kind, error: type[ZooError] = ArtifactError) -> str:
    """``read_bytes`` decoded as UTF-8; a decoding error names the line and the byte."""
    return decode(read_bytes(path, kind, error), path, error)


def decode(data: bytes, path: str | Path, error: type[ZooError]) -> str:
    """UTF-8 text of ``data`` read from ``path``; the error names the line and the byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: not UTF-8 (byte {data[e.start]:#04x}); save the file as "
                    "UTF-8") from None


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:  # json keeps the last silently; a spec edited twice must not
            raise _Duplicate(key)
        out[key] = value
    return out


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-')):,} digits (at most "
                         f"{MAX_INT_DIGITS} are read)")
    return int(text)


def parse_json(text: str, where: str | Path, error: type[ZooError]) -> Any:
    """Parse JSON text read from ``where``; duplicate keys, huge integers, deep nesting refused.

    The error is one line naming the file and, where JSON says it, the line and column.
    """
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_int=_parse_int)
    except _Duplicate as e:
        raise error(f"{where}: invalid JSON: key {e.args[0]!r} appears twice in one "
                    "object") from None
    except json.JSONDecodeError as e:
        raise error(f"{where}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:
        raise error(f"{where}: invalid JSON: nested too deeply") from None
    except ValueError as e:  # _parse_int
        raise error(f"{where}: invalid JSON: {e}") from None


def load_json(path: str | Path, kind: Kind, error: type[ZooError] = ArtifactError) -> Any:
    """Read (bounded) and parse a JSON file; ``error`` (one line) on any problem."""
    return parse_json(read_text(path, kind, error), path, error)


def read_lines(path: str | Path, kind: Kind, hint: str = "",
               error: type[ZooError] = ArtifactError) -> tuple[list[str], bool]:
    """A JSON-lines file's lines and whether its last one ended with '\\n' (bounded as
    ``read_bytes``; lines end at '\\n' only); ``error`` for text that is not UTF-8, ``hint``
    appended to it."""
    try:
        lines = read_bytes(path, kind, error).decode("utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise error(f"{path} is corrupted: not UTF-8 text (byte {e.start}){hint}") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    ended = bool(lines) and not lines[-1]
    return (lines[:-1] if ended else lines), ended
