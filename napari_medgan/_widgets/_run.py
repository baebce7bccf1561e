"""The Train dock's run: a :class:`~napari_medgan.training.process.TrainingProcess` (the
trainer in a child process) whose events a napari worker thread passes to the dock, stopped
gracefully (final checkpoint, child ended, thread joined) however the run ends."""

from __future__ import annotations

import threading

from superqt.utils import GeneratorWorker


class TrainingRun:
    """One training run: the training process, its worker, and a flag set when the worker
    thread leaves it."""

    def __init__(self, trainer, total: int) -> None:
        self.trainer, self.total, self.worker = trainer, total, None
        self.started, self.finished = threading.Event(), threading.Event()
        self.slots: list = []
        self.error: Exception | None = None  # what the trainer raised, if it did

    def events(self):
        """The worker's generator: the training process's events, passed through."""
        self.started.set()
        events = self.trainer.run()
        try:
            yield from events
        except Exception as exc:
            self.error = exc
            raise
        finally:
            events.close()
            self.finished.set()

    def shutdown(self, timeout: float = 120.0) -> bool:
        """Stop gracefully (the trainer writes a final checkpoint) and wait for the thread."""
        for signal, slot in self.slots:  # the widget may be gone: deliver nothing more
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        self.slots.clear()
        self.trainer.stop()
        if not self.started.is_set():  # queued but never ran: nothing to save
            GeneratorWorker.quit(self.worker)
            return True
        return self.finished.wait(timeout)

    def release(self) -> None:
        """Drop this run's references once the thread has left it (napari's activity dock
        keeps the worker, and the worker this run)."""
        if self.worker is not None:
            self.worker.handle = None
        self.trainer = self.worker = self.error = None


class TrainWorker(GeneratorWorker):
    """napari calls ``quit()`` when its window closes (and ``await_workers`` at exit).
    Aborting would abandon the generator mid-run, so stop the trainer instead and wait."""

    handle: TrainingRun | None = None

    def work(self):
        result = super().work()
        # superqt returns a RuntimeError from the generator instead of raising it (taking it
        # for a deleted worker) and then emits neither errored nor finished. The trainer's
        # own (TrainingError, a torch error) must reach errored like any other error.
        if self.handle is not None and result is self.handle.error is not None:
            raise result
        return result

    def quit(self) -> None:
        if self.handle is not None:
            self.handle.shutdown()
        else:
            super().quit()


def usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def cpu_training_threads() -> int:
    """Torch threads for CPU training from the viewer: one fewer than the cores, so napari
    keeps one (see benchmarks/ui_latency.py)."""
    import torch

    return max(1, min(torch.get_num_threads(), usable_cores() - 1))


def drop_frame_locals(exc: BaseException) -> None:
    """Clear the local variables of the frames in ``exc``'s traceback (and its causes'):
    they hold the run (its process, the last event), and a notification keeps ``exc`` for
    as long as the viewer lives. Files, lines and function names stay for the traceback view."""
    while exc is not None:
        tb = exc.__traceback__
        while tb is not None:
            try:
                tb.tb_frame.clear()
            except RuntimeError:  # still running
                pass
            tb.tb_frame.f_locals  # noqa: B018 - refreshes a locals dict a formatter cached (3.11)
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__


def training_threads(device: str) -> int | None:
    """:func:`cpu_training_threads` for a run on the CPU, None (torch's default) otherwise."""
    from napari_medgan.training.device import resolve_device

    try:
        return cpu_training_threads() if resolve_device(device).type == "cpu" else None
    except ValueError:
        return None  # the trainer reports the bad device itself


def shutdown_on_destroy(live: dict, *_) -> None:
    """The widget is being destroyed (viewer closed): stop training, let the thread end."""
    run = live.pop("run", None)
    if run is not None and not run.finished.is_set():
        run.shutdown()
