"""However a Train dock run ends (finished, stopped, failed, crashed, its process killed),
its training process has ended, with its memory (a GPU's included), and the dock is ready
for the next run; napari goes on."""

from __future__ import annotations

import os

import pytest
from _widget_helpers import configure_tiny, error_messages

from napari_medgan.training import events as ev
from napari_medgan.training import process as proc

HOW = ["finished", "stopped", "failed", "crashed", "died"]
TRAINERS = {"failed": "FailsAtStep2", "crashed": "FailsAtStep2", "died": "DiesAtStep2"}


def _train_to_the_end(viewer, qtbot, out, how, monkeypatch, device="cpu", channels=8):
    """Run the Train dock to its end the way ``how`` says; the run's TrainingProcess."""
    widget = viewer.window.add_plugin_dock_widget("napari-medgan", "Train GAN")[1]
    configure_tiny(widget, out / how, steps=400 if how == "stopped" else 3,
                   preview_every=1000)
    widget.device.setCurrentText(device)
    widget.channels.setValue(channels)
    if how in TRAINERS:  # tests/ is on sys.path (its conftest), which the child inherits
        monkeypatch.setattr(proc, "TRAINER", f"_trainers_that_fail:{TRAINERS[how]}")
    widget._on_start()
    process, stepped = widget.run.trainer, []
    widget.run.worker.yielded.connect(
        lambda e: stepped.append(e) if isinstance(e, ev.StepEvent) else None)
    if how == "stopped":
        qtbot.waitUntil(lambda: bool(stepped), timeout=60_000)
        widget._on_stop()
    qtbot.waitUntil(lambda: widget.run is None, timeout=60_000)
    assert process.pid not in (None, os.getpid())  # trained in a process of its own
    assert process.exitcode is not None  # which has ended
    assert widget.start_btn.isEnabled() and widget.run is None  # ready for the next run
    return widget, process


@pytest.mark.parametrize("how", HOW)
def test_the_training_process_ends_with_the_run(make_napari_viewer, qtbot, tmp_path,
                                                monkeypatch, notifications, how):
    widget, process = _train_to_the_end(make_napari_viewer(), qtbot, tmp_path, how,
                                        monkeypatch)
    if how in ("failed", "crashed"):  # RuntimeErrors reach the dock too (superqt drops them)
        assert "Training failed: a test failure" in widget.status.text()
    elif how == "died":
        assert process.exitcode == 3
        errors = error_messages(notifications)
        assert len(errors) == 1 and "ended unexpectedly (exit code 3)" in errors[0]
        assert str(tmp_path / "died") in errors[0]  # the run to resume
    else:
        assert process.exitcode == 0 and widget.checkpoint is not None


@pytest.mark.gpu
@pytest.mark.parametrize("how", HOW)
def test_gpu_memory_returns_to_its_level_before_the_run(
        make_napari_viewer, qtbot, tmp_path, monkeypatch, how):
    import torch

    viewer = make_napari_viewer()
    free_before, _ = torch.cuda.mem_get_info()
    # width 256: networks, EMA and Adam state take ~400 MiB, well above what is left over
    _train_to_the_end(viewer, qtbot, tmp_path, how, monkeypatch, device="cuda:0",
                      channels=256)
    free_after, _ = torch.cuda.mem_get_info()  # the device's, all processes
    assert free_after >= free_before - 64 * 2**20
