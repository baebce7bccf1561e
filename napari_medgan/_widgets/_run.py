"""The training thread of "Train GAN": the trainer's own event iterator in a napari worker,
stopped gracefully (final checkpoint, thread joined) however the run ends."""

from __future__ import annotations

import gc
import sys
import threading

from superqt.utils import GeneratorWorker

# how long the training thread waits for the viewer to catch up before it goes on
HANDOVER_S = 0.5
# how often, while a run trains, a thread waiting for the GIL gets it (see _WhileTraining)
SWITCH_INTERVAL_S = 0.001


def shown_by_the_viewer(event) -> bool:
    """Events the dock turns into viewer work (preview layers, a notification): after each,
    and after Start, the training thread waits until the viewer has drawn it."""
    from napari_medgan.training import events as ev

    return (isinstance(event, ev.PreviewEvent) and bool(event.volumes)) or \
        (isinstance(event, ev.MessageEvent) and event.level != "progress")


class TrainingRun:
    """One training run: the trainer, its worker, and a flag set when the thread leaves it."""

    def __init__(self, trainer, total: int) -> None:
        self.trainer, self.total, self.worker = trainer, total, None
        self.started, self.finished = threading.Event(), threading.Event()
        self.slots: list = []
        self.threads: int | None = None  # torch threads of the training thread
        self.error: Exception | None = None  # what the trainer raised, if it did
        # set by the dock once the viewer has drawn what Start or an event asked of it
        # (shown_by_the_viewer): until then, for at most HANDOVER_S, the training thread
        # leaves the GIL and the cores to the viewer, whose layer updates, notifications
        # and repaints otherwise wait on it (10-30 ms more per stall)
        self.viewer_caught_up = threading.Event()
        self.handover = True  # off once no viewer follows the run (shutdown)

    def events(self):
        """The worker's generator: the trainer's own event iterator, passed through."""
        import torch

        from napari_medgan.training import events as ev

        self.started.set()
        previous = _leave_a_core_for_the_gui(self.trainer.config.train.device)
        self.threads = torch.get_num_threads()
        _WhileTraining.begin()
        events, setting_up = self.trainer.run(), True
        self.viewer_caught_up.wait(HANDOVER_S)  # the Start click's layers and repaint
        try:
            for event in events:
                handover = self.handover and shown_by_the_viewer(event)
                if handover:
                    self.viewer_caught_up.clear()
                yield event
                if handover:
                    self.viewer_caught_up.wait(HANDOVER_S)
                if setting_up and isinstance(event, ev.StepEvent):
                    setting_up = False
                    _WhileTraining.set_up()
                elif isinstance(event, ev.CheckpointEvent):
                    gc.freeze()  # the first save imports SciPy: long-lived too
        except Exception as exc:
            self.error = exc
            raise
        finally:
            events.close()
            _WhileTraining.end(setting_up)
            if previous is not None:
                torch.set_num_threads(previous)  # per thread (OpenMP): this pool thread only
            self.finished.set()

    def shutdown(self, timeout: float = 120.0) -> bool:
        """Stop gracefully (the trainer writes a final checkpoint) and wait for the thread."""
        for signal, slot in self.slots:  # the widget may be gone: deliver nothing more
            try:
                signal.disconnect(slot)
            except (TypeError, RuntimeError):
                pass
        self.slots.clear()
        self.handover = False  # no viewer is drawing for it any more
        self.viewer_caught_up.set()
        self.trainer.stop()
        if not self.started.is_set():  # queued but never ran: nothing to save
            GeneratorWorker.quit(self.worker)
            return True
        return self.finished.wait(timeout)

    def release(self) -> None:
        """Drop this run's references to its trainer once the thread has left it (napari's
        activity dock keeps the worker, and the worker this run), so that the networks'
        memory can go back."""
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


class _WhileTraining:
    """Process-wide settings that keep the viewer smooth while any run trains, given back
    when the last run ends. Measured in benchmarks/ui_latency.py.

    - Python's cyclic garbage collector: a full (generation 2) collection in a napari
      process scans ~400 000 objects and holds the GIL for 150-250 ms; the training loop
      allocates enough to trigger several per run, and its setup imports MONAI, SciPy and
      torch submodules (more objects). So: freeze what exists (``gc.freeze`` is O(1) and
      only exempts existing objects), pause automatic collection during setup, freeze
      again once set up.
    - The GIL's switch interval, ``SWITCH_INTERVAL_S`` instead of Python's 5 ms: between
      its torch calls the training thread runs Python, and each time napari's GUI thread
      needs the GIL back (after a Qt or OpenGL call that released it) it waited up to the
      interval: 30-40 ms of a draw's gap. The step time is unchanged (torch releases the
      GIL inside its operators).
    """

    lock = threading.Lock()
    runs = setting_up = 0
    was_enabled = True
    switch_interval = 0.005  # the user's, while a run trains

    @classmethod
    def begin(cls) -> None:
        with cls.lock:
            if cls.runs == 0:
                cls.was_enabled = gc.isenabled()
                cls.switch_interval = sys.getswitchinterval()
                sys.setswitchinterval(min(cls.switch_interval, SWITCH_INTERVAL_S))
            cls.runs += 1
            cls.setting_up += 1
            gc.freeze()
            gc.disable()

    @classmethod
    def set_up(cls) -> None:
        with cls.lock:
            cls.setting_up -= 1
            gc.freeze()
            if cls.setting_up == 0 and cls.was_enabled:
                gc.enable()

    @classmethod
    def end(cls, setting_up: bool) -> None:
        with cls.lock:
            cls.runs -= 1
            cls.setting_up -= int(setting_up)
            if cls.setting_up == 0 and cls.was_enabled:
                gc.enable()
            if cls.runs == 0:
                gc.unfreeze()
                sys.setswitchinterval(cls.switch_interval)


def usable_cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def cpu_training_threads() -> int:
    """Torch threads for CPU training in the viewer: one fewer than the cores, so the GUI
    thread keeps one (on 2 cores, 2 torch threads made napari stall for 300 ms; see
    benchmarks/ui_latency.py)."""
    import torch

    return max(1, min(torch.get_num_threads(), usable_cores() - 1))


def _leave_a_core_for_the_gui(device: str) -> int | None:
    """Apply :func:`cpu_training_threads` to this thread for CPU runs; return the previous
    count to restore (OpenMP thread counts are per thread), or None."""
    import torch

    from napari_medgan.training.device import resolve_device

    try:
        if resolve_device(device).type != "cpu":
            return None
    except ValueError:
        return None  # the trainer reports the bad device itself
    previous = torch.get_num_threads()
    torch.set_num_threads(cpu_training_threads())
    return previous


def drop_frame_locals(exc: BaseException) -> None:
    """Clear the local variables of the frames in ``exc``'s traceback (and its causes'):
    they hold the trainer and its networks, and a notification keeps ``exc`` for as long
    as the viewer lives. Files, lines and function names stay for the traceback view."""
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


def shutdown_on_destroy(live: dict, *_) -> None:
    """The widget is being destroyed (viewer closed): stop training, let the thread end."""
    run = live.pop("run", None)
    if run is not None and not run.finished.is_set():
        run.shutdown()
