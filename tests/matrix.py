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
