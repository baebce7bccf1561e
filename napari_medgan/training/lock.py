"""One trainer per run folder: a lock on a hidden file that the kernel drops when its
holder dies (``kill -9`` included), so a stale lock is simply taken over.

POSIX uses ``fcntl.flock``; Windows ``msvcrt.locking`` on one byte far past the holder
record (a locked byte range cannot be read there). The file holds the holder's pid,
host name and start time as JSON, so a refusal can name them.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK_FILE = ".medgan.lock"
_WINDOWS_LOCK_OFFSET = 2**20


class RunFolderInUse(RuntimeError):
    """Another process holds the run folder's lock; the message names it."""


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing holder unlinks it)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except OSError:
        return False


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        holder = json.loads(os.read(fd, 4096).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict) -> str:
    """``"pid 1234 on host h, since 2026-11-26 01:50"`` (what is known of it)."""
    parts = [f"pid {holder['pid']}" if "pid" in holder else "",
             f"on host {holder['host']}" if "host" in holder else ""]
    text = " ".join(p for p in parts if p)
    since = f"since {holder['since']}" if "since" in holder else ""
    return ", ".join(t for t in (text, since) if t)


class RunFolderLock:
    """Exclusive lock of a run folder, held from :meth:`acquire` to :meth:`release`.

    Parameters
    ----------
    folder : str or Path
        The run folder; created if missing (and removed again on release when the lock
        was all it held).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.stale: dict | None = None  # the record of a holder that died holding it
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> RunFolderLock:
        """Take the lock, or raise :class:`RunFolderInUse` naming the holder."""
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                holder = _read_holder(fd)
                os.close(fd)
                self._remove_created_folder()
                raise RunFolderInUse(
                    f"{self.folder}: run folder is in use by another training process"
                    f"{f' ({describe_holder(holder)})' if holder else ''}; wait for it to "
                    "finish or stop it")
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its holder had just unlinked: try the new one
        self.stale = _read_holder(fd) or None  # a clean release leaves no file behind
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "since": time.strftime("%Y-%m-%d %H:%M")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(record).encode("utf-8"))
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock and its file (safe to call twice)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if fcntl is not None:
            self.path.unlink(missing_ok=True)  # unlinked while held: see _same_file
            os.close(fd)
        else:
            os.close(fd)  # Windows cannot delete an open file; a waiting process may win
            try:
                self.path.unlink()
            except OSError:
                pass
        self._remove_created_folder()

    def _remove_created_folder(self) -> None:
        if self._created:
            try:
                self.folder.rmdir()  # only if empty: the run never wrote anything
            except OSError:
                pass

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
