"""Write files so that a crash never leaves half a file where a good one was."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


_UMASK_LOCK = threading.Lock()
_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# How libraries that do not raise OSError report it (safetensors: "I/O error: No space left
# on device (os error 28)"; Rust's io::ErrorKind is StorageFull/QuotaExceeded).
_FULL_TEXTS = ("No space left", "StorageFull", "os error 28", "Disk quota exceeded",
               "QuotaExceeded")


_LEFTOVER = re.compile(r"^\..+\.[A-Za-z0-9_]+\.part(\.[A-Za-z0-9]+)*$")  # see atomic_path
_NEARLY_FULL = 1 << 20  # bytes free below which a failed write is put down to a full disk


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; the temporary file was
    removed and what was there before is untouched. The message names the path and says
    what to do."""

    def __init__(self, path: str | Path, advice: str = "free some space there and try again"):
        super().__init__(f"{path}: not written, the disk is full "
                         f"({os.strerror(errno.ENOSPC)}); {advice}")
        self.errno, self.path = errno.ENOSPC, Path(path)
        self._advice = advice

    def __reduce__(self):  # whole across processes (the Train dock's training process)
        return type(self), (self.path, self._advice)


def is_disk_full(exc: BaseException, where: str | Path | None = None) -> bool:
    """Whether ``exc`` says the disk or quota is full (ENOSPC/EDQUOT, or such text from a
    library with its own exception type, e.g. safetensors' SafetensorError). With ``where``,
    a write that failed any other way while that filesystem has under 1 MiB free counts
    too: SimpleITK reports a full disk as a RuntimeError with neither errno nor reason."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    if not isinstance(exc, OSError) and any(text in str(exc) for text in _FULL_TEXTS):
        return True
    if where is None or isinstance(exc, (OSError, ValueError)):
        return False
    try:
        return shutil.disk_usage(where).free < _NEARLY_FULL
    except OSError:
        return False


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open()`` / ``mkdir()`` would give under the process umask (e.g.
    0o644 / 0o755 under 022). Temporary files and folders are created 0600 / 0700 for
    safety while they are written; they get this mode before they take their final name,
    so a colleague can read an exported dataset exactly as the user's umask allows."""
    with _UMASK_LOCK:  # the umask can only be read by setting it
        mask = os.umask(0o077)
        os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name keeps the final suffixes (``.nii.gz``, ``.nrrd``) so
    writers that pick a format from the extension still work. On any error the
    temporary file is removed and ``path`` is untouched. The file ends with the
    umask's mode (:func:`default_mode`), not the temporary file's 0600. A full disk
    raises :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, default_mode())
        os.replace(tmp_path, path)
    except Exception as exc:
        if not isinstance(exc, DiskFullError) and is_disk_full(exc, path.parent):
            raise DiskFullError(path) from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` when its process was
    killed mid-write (``.<name>.<random>.part<suffix>``); only for a folder this process
    owns (a locked run folder). Returns what was removed."""
    removed = []
    for entry in Path(folder).glob(".*.part*"):
        if entry.is_file() and _LEFTOVER.match(entry.name):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then move the result onto ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))
