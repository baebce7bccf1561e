"""A training run in a process of its own, as the Train dock runs it.

In napari's process, a training thread shares the interpreter lock and the cores with the
viewer: each draw waited for the training thread's Python between torch calls, and nothing
kept a crash in training (a segfault in a library, the kernel's out-of-memory killer) from
taking the viewer and the user's unsaved layers with it. :class:`TrainingProcess` runs the
same :class:`~napari_medgan.training.trainer.Trainer` in a child process instead:

- its events come back through a pipe, and it is paused, resumed and stopped through
  another, so the dock drives it exactly as it drove the trainer;
- it runs at the lowest priority (Linux's idle scheduling class, elsewhere ``NICENESS``),
  so the viewer gets a core as soon as it needs one, without sharing a lock the child
  could hold while it waits;
- after an event the viewer draws (a preview, a notification), it can wait until the viewer
  says it has drawn it (:meth:`TrainingProcess.drawn`), at most ``HANDOVER_S``: a layer
  update and its repaint under software OpenGL need both cores of a small machine for
  10-30 ms (``benchmarks/ui_latency.py``: the worst stall 38.5 ms against 44.9 ms without,
  the median of nine runs each);
- its memory, a GPU's included, goes back to the system when it ends;
- if napari goes away, the child sees its pipe close and stops after the current step
  with a final checkpoint; a child that dies is reported in one line, and the checkpoints
  it saved before are intact.

Nothing the child receives or sends is read from a file: the pipes carry the run's own
configuration, volumes and events between two processes of the same user.
"""

from __future__ import annotations

import atexit
import copy
import importlib
import multiprocessing as mp
import os
import pickle
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from napari_medgan.training import events as ev
from napari_medgan.training.trainer import TrainingError

# what the child builds and runs (``module:name``); tests point it at a trainer that fails
TRAINER = "napari_medgan.training.trainer:Trainer"
# the child's niceness where Linux's idle scheduling class is not available (0-19)
NICENESS = 10
# how long the child waits for the viewer to draw an event before it goes on
HANDOVER_S = 0.5
# how the child is started: a fresh interpreter where file descriptors can be passed to it
LAUNCH = "exec" if os.name == "posix" else "spawn"
# how long closing the event stream waits for the child to save and end, then kills it
STOP_WAIT_S = 300.0


class TrainingProcess:
    """A :class:`~napari_medgan.training.trainer.Trainer` in a child process, with
    the part of its interface a viewer uses: :meth:`run` yields its events;
    :meth:`pause`, :meth:`resume`, :meth:`stop`; ``paused``, ``step``, ``out``, ``config``.

    ``threads`` sets the child's torch threads (None: torch's default); with ``handover``
    (a viewer follows the run), the child waits for :meth:`drawn` after each event a viewer
    draws. Errors the trainer raises are raised again by :meth:`run`, with the child's
    traceback as their cause.
    """

    def __init__(self, run, images=None, labels=None, targets=None, *,
                 threads: int | None = None, niceness: int = NICENESS,
                 handover: bool = False) -> None:
        self.config = copy.deepcopy(run)
        self.out = Path(self.config.out)
        self.step = 0  # the last step the child reported
        self.threads, self.niceness, self.handover = threads, niceness, handover
        self.exitcode: int | None = None  # the child's, once it has ended
        self.priority = ""  # the child's scheduling, in words, once it runs
        self.pid: int | None = None
        self._inputs = (images, labels, targets)
        self._lock = threading.Lock()
        self._control = None  # the pipe end commands go through, once the child runs
        self._paused = self._stopped = False

    # ------------------------------------------------------------ run control
    def pause(self) -> None:
        self._command("pause")

    def resume(self) -> None:
        self._command("resume")

    def stop(self) -> None:
        """Ask the run to stop after the current step (a final checkpoint is written)."""
        self._command("stop")

    def drawn(self) -> None:
        """Say that the viewer has drawn the last event it draws (:func:`drawn_by_a_viewer`):
        the child goes on."""
        self._command("drawn")

    @property
    def paused(self) -> bool:
        return self._paused

    def _command(self, name: str) -> None:
        with self._lock:
            if name == "stop":
                self._stopped, self._paused = True, False  # stopping wakes a paused run
            elif name != "drawn" and not self._stopped:
                self._paused = name == "pause"
            if self._control is not None:
                try:
                    self._control.send(name)
                except OSError:  # the child has ended: nothing left to tell it
                    pass

    # -------------------------------------------------------------------- run
    def run(self) -> Iterator[ev.Event]:
        """Start the child and yield the trainer's events as they arrive; returns once the
        child has ended. Closing the iterator early stops the run (final checkpoint)."""
        events, events_in = mp.Pipe(duplex=False)
        control_out, control = mp.Pipe(duplex=False)
        child = (_Exec if LAUNCH == "exec" else _Spawn)(events_in, control_out)
        self.pid = child.pid
        self.priority = _lower_priority(child.pid, self.niceness)  # before torch's import
        events_in.close()  # the child holds the other ends: they close when it ends
        control_out.close()
        job, self._inputs = (TRAINER, self.config, self._inputs, self.threads, self.niceness,
                             self.handover, list(sys.path)), None
        try:
            _send_job(control, job)  # read once the child has started: not under the lock
        except OSError:  # it has died already: said below, from its exit code
            pass
        del job  # napari's process keeps no volumes for the run's length
        with self._lock:  # then what was asked meanwhile, and from now on, at once
            self._control = control
            for name, asked in (("pause", self._paused), ("stop", self._stopped)):
                try:
                    if asked:
                        control.send(name)
                except OSError:
                    pass
        # a parent that exits mid-run stops it first, so that the child saves and ends
        # (an exec'd child also stops when its pipe closes; Python joins spawned ones)
        atexit.register(self.stop)
        done = False
        try:
            while True:
                try:
                    message = events.recv()
                except EOFError:  # the child has ended
                    break
                if isinstance(message, _Failure):
                    raise message.exception()
                if isinstance(message, ev.StepEvent):
                    self.step = message.step
                done = done or isinstance(message, ev.DoneEvent)
                yield message
        finally:
            atexit.unregister(self.stop)
            self._end(child, events)
        if not done:
            raise ChildDied(self.exitcode, self.out)

    def _end(self, child, events) -> None:
        """Let the child end (asking it to stop if it still runs), then close the pipes."""
        if child.alive():
            self.stop()
            while child.alive() and events.poll(STOP_WAIT_S):  # drain: it never blocks
                try:
                    events.recv()
                except EOFError:
                    break
            if not child.join(STOP_WAIT_S):
                child.kill()
        child.join(None)
        self.exitcode = child.exitcode()
        with self._lock:
            self._control.close()
            self._control = None
        events.close()


class _Exec:
    """The child as a fresh interpreter (POSIX): ``python -c`` with the two pipe ends as
    inherited file descriptors. Unlike multiprocessing's spawn, it never runs the parent's
    ``__main__`` again (a napari script without a ``__main__`` guard would open a second
    viewer in it); it gets the parent's ``sys.path`` with its job."""

    def __init__(self, events, control) -> None:
        fds = (events.fileno(), control.fileno())
        code = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "from napari_medgan.training.process import child_main; child_main()")
        self.popen = subprocess.Popen([sys.executable, "-c", code, *map(str, fds)],
                                      pass_fds=fds, stdin=subprocess.DEVNULL)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def join(self, timeout: float | None) -> bool:
        try:
            self.popen.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill(self) -> None:
        self.popen.kill()

    def exitcode(self) -> int | None:
        return self.popen.returncode


class _Spawn:
    """The child as multiprocessing's spawned process (Windows: where a script must guard
    its ``__main__``, which spawn runs again in the child)."""

    def __init__(self, events, control) -> None:
        ctx = mp.get_context("spawn")  # never fork a process that holds threads and a GPU
        self.process = ctx.Process(target=_child, args=(events, control), daemon=False,
                                   name="napari-medgan training")
        self.process.start()
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def join(self, timeout: float | None) -> bool:
        self.process.join(timeout)
        return not self.process.is_alive()

    def kill(self) -> None:
        self.process.kill()

    def exitcode(self) -> int | None:
        return self.process.exitcode


class ChildDied(TrainingError):
    """The training process ended without finishing its run (killed, crashed)."""

    def __init__(self, exitcode: int | None, out: Path) -> None:
        how = f"exit code {exitcode}"
        if exitcode is not None and exitcode < 0:
            try:
                how = f"killed by {signal.Signals(-exitcode).name}"
            except ValueError:
                how = f"killed by signal {-exitcode}"
        if exitcode == -getattr(signal, "SIGKILL", 9):  # the out-of-memory killer's
            how += ", perhaps for want of memory"
        super().__init__(f"the training process ended unexpectedly ({how}); the checkpoints "
                         f"saved before are intact: resume the run from {out}")


@dataclass
class _Failure:
    """An exception raised in the child, sent back whole when it survives pickling."""

    error: BaseException | None
    kind: str
    text: str
    trace: str

    @classmethod
    def of(cls, exc: BaseException) -> _Failure:
        try:  # a custom __init__ may not round-trip, or not to the same message
            error = pickle.loads(pickle.dumps(exc))
            if type(error) is not type(exc) or str(error) != str(exc):
                error = None
        except Exception:
            error = None
        return cls(error, type(exc).__name__, str(exc), "".join(traceback.format_exception(exc)))

    def exception(self) -> BaseException:
        error = self.error if self.error is not None else TrainingError(
            f"{self.kind}: {self.text}")
        error.__cause__ = _RemoteTraceback(self.trace)
        return error


class _RemoteTraceback(Exception):
    """The child's traceback, shown as the cause of the error raised again here."""

    def __str__(self) -> str:
        return "\n(in the training process)\n" + self.args[0]


def _send_job(control, job) -> None:
    """Send ``job`` with its arrays out of band: pickled whole, 1 GB of volumes is a copy
    made while holding the interpreter lock (~0.4 s per 268 MB on a slow machine: napari
    frozen at Start); their raw buffers are written as they are, the lock released."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(job, protocol=5, buffer_callback=buffers.append)
    raw = [buffer.raw() for buffer in buffers]
    control.send((head, [r.nbytes for r in raw]))
    for r in raw:
        control.send_bytes(r)


def _recv_job(control):
    """The job :func:`_send_job` sent, its arrays writable (each in a bytearray)."""
    head, sizes = control.recv()
    buffers = []
    for size in sizes:
        buffer = bytearray(size)
        control.recv_bytes_into(buffer)
        buffers.append(buffer)
    return pickle.loads(head, buffers=buffers)


def _lower_priority(pid: int, niceness: int) -> str:
    """Run process ``pid`` (0: this thread, whose new threads inherit it) in Linux's idle
    scheduling class, else at ``niceness``, where the system allows it. Under SCHED_IDLE a
    core that runs only the child counts as free when the kernel places a waking thread:
    napari's GUI thread then preempts the child at once instead of waiting, niced or not,
    behind it or the X server on the other core. Returns what was set, in words."""
    try:
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        return "idle scheduling class"
    except (AttributeError, OSError):  # not Linux
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
        return f"niceness {niceness}"
    except (AttributeError, OSError):  # Windows; a limit on priorities
        return "normal priority"


def child_main() -> None:
    """The entry point of an :class:`_Exec` child: its pipe ends are ``sys.argv[1:3]``."""
    from multiprocessing.connection import Connection

    events = Connection(int(sys.argv[1]), readable=False)
    control = Connection(int(sys.argv[2]), writable=False)
    _child(events, control)


def _child(events, control) -> None:
    """The child's body: read the job, build the trainer, obey commands, send every event
    back."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C in napari's terminal: napari stops it
    try:
        job = _recv_job(control)
    except (EOFError, OSError):  # the parent went before it sent the job
        return
    trainer_path, run, inputs, threads, niceness, handover, path = job
    sys.path[:] = path  # the parent's: what it imports, this process imports
    _lower_priority(0, niceness)  # this thread, whose threads inherit it (the parent did too)
    sending = True
    try:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        module, name = trainer_path.split(":")
        trainer = getattr(importlib.import_module(module), name)(run, *inputs)
        del inputs
        drawn = threading.Event()
        threading.Thread(target=_obey, args=(control, trainer, drawn), daemon=True).start()
        for event in trainer.run():
            if not sending:
                continue
            wait = handover and drawn_by_a_viewer(event)
            drawn.clear()
            try:
                events.send(event)
            except OSError:  # napari has gone: finish the step, save, end
                sending = False
                trainer.stop()
                continue
            if wait:  # the cores are the viewer's until it has drawn this
                drawn.wait(HANDOVER_S)
    except BaseException as exc:
        if sending:
            try:
                events.send(_Failure.of(exc))
            except OSError:
                pass
    finally:
        events.close()


def _obey(control, trainer, drawn: threading.Event) -> None:
    """Carry out the parent's commands; its end of the pipe closing (napari quit or
    crashed) stops the run with a final checkpoint."""
    while True:
        try:
            name = control.recv()
        except (EOFError, OSError):
            trainer.stop()
            drawn.set()
            return
        if name == "drawn":
            drawn.set()
        elif name in ("pause", "resume", "stop"):
            getattr(trainer, name)()
            drawn.set()  # no wait for a drawing once told something else


def drawn_by_a_viewer(event) -> bool:
    """Events a viewer turns into drawing (preview layers, a notification); after each, the
    child waits for :meth:`TrainingProcess.drawn`, at most ``HANDOVER_S``."""
    return (isinstance(event, ev.PreviewEvent) and bool(event.volumes)) or \
        (isinstance(event, ev.MessageEvent) and event.level != "progress")
