"""A disk that fills while a checkpoint or a synthetic volume is written: one line that
says so and what to do, no temporaries left, earlier checkpoints intact, and the run
resumes to its end once space is freed."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import safetensors.torch
import torch
from safetensors import SafetensorError

from napari_medgan.cli import main
from napari_medgan.io.atomic import DiskFullError
from napari_medgan.training.checkpoint import load_checkpoint, save_checkpoint
from napari_medgan.training.lock import LOCK_FILE

# What safetensors 0.8 raised writing to a full filesystem (a 64 KiB tmpfs).
SAFETENSORS_FULL = "Error while serializing: I/O error: No space left on device (os error 28)"


def _fill_the_disk_at_save(monkeypatch, n: int) -> None:
    """From the ``n``-th weights file on, write part of it and raise as safetensors does."""
    real, calls = safetensors.torch.save_file, []

    def save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) < n:
            return real(tensors, filename, metadata=metadata)
        Path(filename).write_bytes(b"\0" * 4096)
        raise SafetensorError(SAFETENSORS_FULL)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def test_a_full_disk_keeps_the_checkpoint_it_was_replacing(tmp_path, monkeypatch):
    old, new = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    target = save_checkpoint(tmp_path / "ckpt", modules={"net": old})
    _fill_the_disk_at_save(monkeypatch, 1)
    with pytest.raises(DiskFullError) as info:
        save_checkpoint(target, modules={"net": new})
    text = str(info.value)
    assert text.startswith(f"{target}: not written, the disk is full") and "\n" not in text
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert os.listdir(tmp_path) == ["ckpt"]  # the temporary folder went
    torch.testing.assert_close(load_checkpoint(target).tensors["net.weight"], old.weight.data)


def test_a_full_disk_ends_training_with_one_line_and_the_run_resumes(
        tmp_path, tiny_run, monkeypatch, capsys):
    run, config = tmp_path / "run", tmp_path / "tiny.yaml"
    tiny_run(run, steps=6, checkpoint_every=3).to_yaml(config)
    train = ["train", "--config", str(config), "--out", str(run)]
    _fill_the_disk_at_save(monkeypatch, 2)  # step 3 is written; the final step 6 is not
    assert main(train) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"napari-medgan: error: {run / 'checkpoints' / 'step-000006'}: not written, the disk "
        "is full (No space left on device); the checkpoints saved before are intact; free "
        f"space, then resume the run: napari-medgan train --resume --out {run} (Train GAN: "
        "Start from 'resume run folder')")
    assert not any("Traceback" in line for line in err)
    checkpoints = run / "checkpoints"
    assert sorted(os.listdir(checkpoints)) == ["best", "latest.json", "step-000003"]
    assert load_checkpoint(run).step == 3 and load_checkpoint(checkpoints / "best").step == 3
    assert not (run / LOCK_FILE).exists()

    monkeypatch.undo()  # space freed
    assert main([*train, "--resume"]) == 0
    assert load_checkpoint(run).step == 6 and load_checkpoint(checkpoints / "final").step == 6
    assert not [name for name in os.listdir(checkpoints) if name.startswith(".")]


def test_a_full_disk_while_generating_is_one_line_and_leaves_no_file(
        tmp_path, tiny_run, monkeypatch, capsys):
    from napari_medgan.training.trainer import Trainer

    list(Trainer(tiny_run(tmp_path / "run", steps=1)).run())
    import nibabel

    def save(image, filename):
        Path(filename).write_bytes(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nibabel, "save", save)
    out = tmp_path / "gen"
    assert main(["generate", str(tmp_path / "run"), "--n", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"napari-medgan: error: {out / 'synthetic_000.nii.gz'}: not written, the "
                   "disk is full (No space left on device); free some space there and try again")
    assert os.listdir(out) == []
