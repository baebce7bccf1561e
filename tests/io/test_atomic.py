"""Atomic writes: a crash leaves the old file, and the new one gets the umask's mode (a
colleague can read an exported dataset), not the temporary file's 0600."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from napari_medgan.io import Volume, save_volume
from napari_medgan.io.atomic import atomic_write, atomic_write_text, default_mode


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_checkpoint_folders_follow_the_umask(tmp_path, umask_022, tiny_run):
    assert default_mode() == 0o644 and default_mode(directory=True) == 0o755
    assert _mode(atomic_write_text(tmp_path / "a.json", "{}")) == 0o644
    vol = save_volume(Volume(np.zeros((4, 4, 4), np.float32)), tmp_path / "v.nii.gz")
    assert _mode(vol) == 0o644
    from napari_medgan.training.trainer import Trainer

    events = list(Trainer(tiny_run(tmp_path / "run", steps=1)).run())
    ckpt = events[-1].checkpoint
    assert _mode(ckpt) == 0o755
    assert all(_mode(p) == 0o644 for p in os.scandir(ckpt))
    os.umask(0o077)
    assert _mode(atomic_write_text(tmp_path / "private.json", "{}")) == 0o600


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = atomic_write_text(tmp_path / "keep.txt", "old")

    def boom(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, boom)
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_a_full_disk_while_writing_a_volume_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    import nibabel

    from napari_medgan.io.atomic import DiskFullError

    target = save_volume(Volume(np.zeros((4, 4, 4), np.float32)), tmp_path / "v.nii.gz")
    before = target.read_bytes()

    def save(image, filename):  # part of the file, then the disk is full
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    monkeypatch.setattr(nibabel, "save", save)
    with pytest.raises(DiskFullError, match=rf"^{target}: not written, the disk is full"):
        save_volume(Volume(np.ones((4, 4, 4), np.float32)), target)
    assert target.read_bytes() == before and os.listdir(tmp_path) == ["v.nii.gz"]


@pytest.mark.parametrize(("free", "raised"), [(0, "DiskFullError"), (10**12, "RuntimeError")])
def test_simpleitk_write_failure_on_a_nearly_full_disk_is_a_full_disk(tmp_path, monkeypatch,
                                                                      free, raised):
    """SimpleITK reports ENOSPC as a bare RuntimeError: the free space decides."""
    import shutil
    from collections import namedtuple

    import SimpleITK as sitk

    from napari_medgan.io.atomic import DiskFullError

    def write(image, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"NRRD0004\n")
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: ITK ERROR")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(sitk, "WriteImage", write)
    monkeypatch.setattr(shutil, "disk_usage", lambda where: usage(10**12, 10**12 - free, free))
    expected = DiskFullError if raised == "DiskFullError" else RuntimeError
    with pytest.raises(expected) as info:
        save_volume(Volume(np.ones((4, 4, 4), np.float32)), tmp_path / "v.nrrd")
    assert type(info.value).__name__ == raised and os.listdir(tmp_path) == []
