"""Write files so that a crash never leaves half a file where a good one was."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


_UMASK_LOCK = threading.Lock()


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
    umask's mode (:func:`default_mode`), not the temporary file's 0600.
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
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then move the result onto ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))
