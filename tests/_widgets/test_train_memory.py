"""After a Train dock run ends (finished, stopped, failed) nothing holds its trainer or
networks, so their memory goes back (on a GPU, to the driver)."""

from __future__ import annotations

import gc
import weakref

import pytest
from _widget_helpers import configure_tiny

from napari_medgan.training import events as ev
from napari_medgan.training.trainer import Trainer, TrainingError

HOW = ["finished", "stopped", "failed", "crashed"]


def _train_and_let_go(viewer, qtbot, out, how, monkeypatch, device="cpu",
                      channels=8) -> weakref.ref:
    """Run the Train dock to its end the way ``how`` says; a weakref to its generator."""
    widget = viewer.window.add_plugin_dock_widget("napari-medgan", "Train GAN")[1]
    configure_tiny(widget, out, steps=400 if how == "stopped" else 3, preview_every=1000)
    widget.device.setCurrentText(device)
    widget.channels.setValue(channels)
    real_step = Trainer._train_step

    def fail_at_step_2(trainer):
        if trainer.step >= 1:
            raise (TrainingError if how == "failed" else RuntimeError)("a test failure")
        return real_step(trainer)

    if how in ("failed", "crashed"):
        monkeypatch.setattr(Trainer, "_train_step", fail_at_step_2)
    widget._on_start()
    generator: list[weakref.ref] = []

    def on_event(event):  # connected after the widget's own slot: widget.run is still set
        if isinstance(event, ev.StepEvent) and not generator:
            generator.append(weakref.ref(widget.run.trainer.G))

    widget.run.worker.yielded.connect(on_event)
    if how == "stopped":
        qtbot.waitUntil(lambda: bool(generator), timeout=60_000)
        widget._on_stop()
    qtbot.waitUntil(lambda: widget.run is None, timeout=60_000)
    if how in ("failed", "crashed"):  # RuntimeErrors reach the dock (superqt drops them)
        assert "Training failed: a test failure" in widget.status.text()
    qtbot.wait(50)  # the worker's last queued signals
    gc.collect()
    return generator[0]


@pytest.mark.parametrize("how", HOW)
def test_no_reference_to_the_trainer_remains_after_the_run(
        make_napari_viewer, qtbot, tmp_path, monkeypatch, how):
    generator = _train_and_let_go(make_napari_viewer(), qtbot, tmp_path / "run", how,
                                  monkeypatch)
    assert generator() is None, "something still holds the trainer's generator"


@pytest.mark.gpu
@pytest.mark.parametrize("how", HOW)
def test_gpu_memory_returns_to_its_level_before_the_run(
        make_napari_viewer, qtbot, tmp_path, monkeypatch, how):
    import torch

    viewer = make_napari_viewer()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    emptied: list[int] = []  # memory allocated at each empty_cache() call
    real_empty_cache = torch.cuda.empty_cache

    def empty_cache():
        emptied.append(torch.cuda.memory_allocated())
        real_empty_cache()

    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    # width 256: networks, EMA and Adam state take ~400 MiB, well above cuBLAS workspaces
    generator = _train_and_let_go(viewer, qtbot, tmp_path / "run", how, monkeypatch,
                                  device="cuda:0", channels=256)
    assert generator() is None
    # the cache was emptied once the trainer was gone, not only while it held its memory
    assert max(emptied) > before + 300 * 2**20 and emptied[-1] < before + 100 * 2**20
    # cuBLAS keeps a workspace per thread and stream for reuse: not the run's memory
    getattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: None)()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
