"""Shared assertions of the bad-input matrix: exit 2, one line, the place named, no damage."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

from click.testing import Result


def snapshot(folder: Path) -> dict[str, bytes | tuple[int, int]]:
    """Every file under ``folder`` with its bytes (to prove nothing was changed)."""
    return {str(p.relative_to(folder)): _content(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _content(path: Path) -> bytes | tuple[int, int]:
    info = path.stat()
    # a sparse file of gigabytes (a size-limit case) is compared by size and time, not read
    return path.read_bytes() if info.st_size <= 64 << 20 else (info.st_size, info.st_mtime_ns)


def assert_clean_error(result: Result, *fragments: str) -> str:
    """Exit status 2, exactly one line on stderr, no traceback, and every fragment in it."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert err.count("\n") == 0, f"expected one line, got:\n{err}"
    assert err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


def special(kind: str, path: Path) -> Path:
    """Make ``path`` a FIFO, a socket, a link to /dev/zero or a directory; return it."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    return path


@contextlib.contextmanager
def no_hang(seconds: int = 60) -> Iterator[None]:
    """Fail a command that blocks (a FIFO opened for reading waits for a writer forever)."""
    def timeout(signum: int, frame: object) -> None:
        raise TimeoutError("the command blocked")
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# Sampling options that `zoo sample` and `node sample.mjs` both refuse, each with a fragment of
# the one line both print: tests/test_runtime.py runs the table against zoo sample,
# tests/test_web.py against node, so the two samplers refuse the same inputs in the same words.
SAMPLING_REFUSED = [
    (["-n", "-1"], 'expected a whole number >= 0, got "-1"'),
    (["-n", "1_000"], 'expected a whole number >= 0, got "1_000"'),
    (["-n", "+5"], 'expected a whole number >= 0, got "+5"'),
    (["-n", "1e3"], 'expected a whole number >= 0, got "1e3"'),
    (["-n", "\u0663"], 'expected a whole number >= 0, got "\u0663"'),  # an Arabic-Indic 3
    (["--seed", "-1"], 'expected a whole number >= 0, got "-1"'),
    (["--seed", str(2**64)], "must be an integer in [0, 2**64)"),
    (["--start", str(2**64 - 1), "-n", "3"], "start + n must be at most 2**64"),
    (["--start", "0x10"], 'expected a whole number >= 0, got "0x10"'),
    (["--temperature", "0x10"], 'expected a decimal number, got "0x10"'),
    (["--temperature", "inf"], 'expected a decimal number, got "inf"'),
    (["--temperature", "nan"], 'expected a decimal number, got "nan"'),
    (["--temperature", "1_0"], 'expected a decimal number, got "1_0"'),
    (["--temperature", "0"], "temperature must be a number > 0"),
    (["--temperature", "-2"], "temperature must be a number > 0"),
    (["--temperature", "1e400"], "temperature must be a number > 0"),
    (["--top-k", "0"], 'expected a whole number >= 1, got "0"'),
    (["--top-k", "1.5"], 'expected a whole number >= 1, got "1.5"'),
    (["--max-length", "0"], 'expected a whole number >= 1, got "0"'),
    (["--max-length", str(2**23 + 1)], "must be an integer >= 1 and <= 8,388,608"),
    (["--prefix", "Zé"], "has characters outside the model's vocabulary"),
    (["--colour", "red"], "--colour"),
]
