"""Atomic file writes: a temporary file in the same folder, fsync, then rename over the target.

A crash at any moment leaves either the old file or the new one, never half of either. A new
file gets the mode the umask gives (as ``open`` would; ``mkstemp`` alone makes it 0600) and a
replaced file keeps its mode. A write that fails (a full disk, a read-only folder) removes its
temporary file and raises ArtifactError saying the file there is unchanged.

Folders (run directories) are created whole by ``create_dir`` (built in a temporary sibling,
then renamed) and locked while a process writes them (``lock_dir``: a second writer fails at
once, and the message names the holder's pid).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from zoo.errors import ArtifactError

__all__ = ["write_bytes", "write_text", "new_file_mode", "DirLock", "lock_dir", "is_locked",
           "create_dir", "holder", "LOCK_NAME"]

_UMASK_LOCK = threading.Lock()


def new_file_mode() -> int:
    """The mode ``open(path, 'w')`` would give a new file: 0o666 less the process umask."""
    with _UMASK_LOCK:  # the umask can only be read by setting it
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically; ArtifactError (file unchanged) if it fails."""
    path = Path(path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:  # no file to replace (or none we may look at): a new file's mode
        mode = new_file_mode()
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        state = "the file there is unchanged" if path.exists() else "nothing was written"
        raise ArtifactError(f"cannot write {path}: {e.strerror or e}; {state}") from e
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """Replace ``path`` with UTF-8 ``text`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def _fsync_dir(folder: Path) -> None:
    # make the rename itself durable; not every platform lets a directory be opened
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- folders: locked while written, created whole ------------------------------------------

LOCK_NAME = ".lock"


class DirLock:
    """An exclusive ``flock`` on ``folder/.lock`` held by this process until released.

    The kernel drops it when the process dies, however it dies, so a lock is never stale.
    """

    def __init__(self, fd: int, folder: Path) -> None:
        self.fd: int | None = fd
        self.folder = folder

    def release(self) -> None:
        if self.fd is not None:
            # removed while still held: a finished run holds only its own files, and a process
            # that opened the old file meanwhile sees that it was replaced (lock_dir retries)
            with contextlib.suppress(OSError):
                os.unlink(self.folder / LOCK_NAME)
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_lock(folder: Path) -> int:
    file = folder / LOCK_NAME
    try:
        return os.open(file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, new_file_mode())
    except PermissionError:  # a read-only folder can still be locked against other readers
        try:
            return os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise ArtifactError(f"cannot lock {folder}: {e.strerror}; nothing in it was "
                                "changed") from None
    except OSError as e:
        raise ArtifactError(f"cannot lock {folder}: {e.strerror}; nothing in it was "
                            "changed") from None


def lock_dir(folder: str | Path) -> DirLock:
    """Lock ``folder`` for writing, at once or not at all: ArtifactError naming the holder."""
    import fcntl

    folder = Path(folder)
    while True:
        fd = _open_lock(folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise ArtifactError(f"{folder} is being written by another process (pid {pid}); "
                                "wait for it to finish, or use another folder") from None
        try:  # the file locked must still be the one in the folder (its holder removes it)
            if os.stat(folder / LOCK_NAME).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:  # the holder's pid, for the message another process gets
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass
    return DirLock(fd, folder)


def holder(folder: str | Path) -> str | None:
    """The pid (as written in the lock file) of the process holding ``folder``'s lock now, or
    None if no process holds it. Changes nothing: a stale lock file is left where it is."""
    import fcntl

    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:  # a shared lock conflicts only with the writer's exclusive one
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def is_locked(folder: str | Path) -> bool:
    """Whether another process holds ``folder``'s lock now."""
    return holder(folder) is not None


def create_dir(target: str | Path, fill: Callable[[Path], None], *,
               replace: bool = False) -> DirLock:
    """Make folder ``target`` whole or not at all; return its lock, held.

    ``fill(tmp)`` writes the contents into a locked temporary sibling, which is then renamed to
    ``target`` (an empty folder there is replaced; with ``replace``, any folder there is). A
    process killed before the rename leaves only the sibling, which the next call removes.
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.partial"):
        if stale.is_dir() and not is_locked(stale):  # its writer was killed
            shutil.rmtree(stale, ignore_errors=True)
    tmp = target.parent / f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial"
    os.mkdir(tmp)  # the umask applies, as to any folder
    lock = lock_dir(tmp)
    try:
        fill(tmp)
        if replace and target.is_dir():
            old = tmp.with_suffix(".old.partial")
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException as e:
        lock.release()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and target.exists():
            raise ArtifactError(f"{target} was created by another process meanwhile; nothing "
                                "was written to it") from None
        if isinstance(e, OSError):
            raise ArtifactError(f"cannot create {target}: {e.strerror or e}; nothing was "
                                "written") from None
        raise
    lock.folder = target
    _fsync_dir(target.parent)
    return lock
