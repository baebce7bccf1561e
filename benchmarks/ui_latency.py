"""How responsive napari stays while the "Train GAN" widget trains.

A 10 ms ``QTimer`` on the main (GUI) thread records the time between its ticks,
first with nothing running (baseline), then during a training started from the
widget (phantom heads, 32^3 patches, a few dozen steps, previews every 10).
A gap is time during which napari could not repaint or react to input. The
target is a worst gap of at most 50 ms on a 2-core machine, as the worst of several
runs (``--repeats``); the load average before each run is recorded, since other work
on a shared CPU lengthens the gaps.

Needs a display; on a headless machine run it under a virtual one::

    xvfb-run -a .venv/bin/python benchmarks/ui_latency.py

Writes ``benchmarks/results/ui_latency-<host>-<date>.json`` (with the hardware)
and prints the worst gap during training, in ms, as the last line. The JSON also
says, for the longest gaps, whether they fell in the run's setup or its steps, which
GUI-thread work overlapped them (event handlers, plot draws, full garbage
collections); "none" means no plugin work ran on the GUI thread (CPU or lock
contention). The run trains in a child process (``training/process.py``); the
thread that passes its events to the dock is the only plugin thread in napari's
process. Under Xvfb, napari draws with software OpenGL, so every repaint costs CPU too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


class TickRecorder:
    """Timestamps of a 10 ms precise timer on the GUI thread."""

    def __init__(self, interval_ms: int = 10) -> None:
        from qtpy.QtCore import Qt, QTimer

        self.ticks: list[float] = []
        self.sched: list[tuple[int, int]] = []  # GUI thread's (on-CPU ns, runqueue ns) per tick
        self.gui_at: dict[float, str] = {}  # tick starting a long gap -> GUI code stuck there
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())
        self.sched.append(gui_thread_schedstat())

    def record_until(self, done, timeout: float) -> dict:
        from qtpy.QtWidgets import QApplication

        self.ticks = [time.perf_counter()]
        self.sched = [gui_thread_schedstat()]
        self.gui_at = {}
        watching = threading.Event()
        watchdog = threading.Thread(target=self._watch, args=(watching,), daemon=True)
        watching.set()
        watchdog.start()
        self.timer.start()
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.001)
        self.timer.stop()
        watching.clear()
        watchdog.join()
        return summarize(np.diff(self.ticks) * 1000.0)

    def _watch(self, watching: threading.Event) -> None:
        """Where the GUI thread is once it has missed ticks for 40 ms: sampled from another
        thread, which gets to run only when the GIL is free, so a sample means the GUI
        thread was waiting for something else (an import lock, I/O, a Qt call)."""
        gui = threading.main_thread().ident
        sampled = None
        while watching.is_set():
            time.sleep(0.005)
            last = self.ticks[-1]
            if time.perf_counter() - last > 0.04 and sampled != last:
                sampled = last
                frame = sys._current_frames().get(gui)
                if frame is not None:
                    self.gui_at[last] = innermost(frame, 4)


def gui_thread_schedstat() -> tuple[int, int]:
    """The calling thread's time on a CPU and waiting for one (ns, Linux schedstat): over a
    gap, the first says the GUI thread was working, the second that it was runnable but
    had no core; the rest it was blocked (a lock, the GIL) or idle."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu), int(waiting)
    except (OSError, ValueError):
        return 0, 0


def innermost(frame, n: int) -> str:
    import traceback

    return " < ".join(f"{Path(s.filename).name}:{s.lineno} {s.name}"
                      for s in traceback.extract_stack(frame)[::-1][:n])


def summarize(gaps_ms: np.ndarray) -> dict:
    return {
        "ticks": int(gaps_ms.size),
        "worst_gap_ms": round(float(gaps_ms.max()), 1),
        "p99_gap_ms": round(float(np.percentile(gaps_ms, 99)), 1),
        "median_gap_ms": round(float(np.median(gaps_ms)), 1),
        "gaps_over_50ms": int((gaps_ms > 50).sum()),
        "gaps_over_100ms": int((gaps_ms > 100).sum()),
    }


def timed(fn, store: dict, marks: list, label=None):
    """Wrap a GUI-thread callable: its duration goes to ``store`` (per event type) and
    ``(start, end, what)`` to ``marks``, to say what the longest gaps contained."""

    def wrapper(*args):
        t0 = time.perf_counter()
        out = fn(*args)
        t1 = time.perf_counter()
        what = label or type(args[0]).__name__
        store.setdefault(what, []).append((t1 - t0) * 1000)
        marks.append((t0, t1, what))
        return out

    return wrapper


def gc_marks(marks: list):
    """Record Python's garbage collections (they hold the GIL, in whichever thread runs them)."""
    import gc

    started: dict[int, float] = {}

    def callback(phase, info):
        if phase == "start":
            started[threading.get_ident()] = time.perf_counter()
        else:
            t0 = started.pop(threading.get_ident(), None)
            if t0 is not None and info["generation"] == 2:
                marks.append((t0, time.perf_counter(), "gc gen2"))

    gc.callbacks.append(callback)
    return callback


def explain_gaps(ticks: list[float], marks: list, first_step: float | None,
                 sched: list, gui_at: dict, n: int = 8) -> list:
    """The ``n`` longest gaps, each with the GUI-thread work that overlapped it."""
    gaps = np.diff(ticks)
    rows = []
    for i in np.argsort(gaps)[::-1][:n]:
        t0, t1 = ticks[i], ticks[i + 1]
        inside = [f"{what} ({(b - a) * 1000:.0f} ms)" for a, b, what in sorted(marks)
                  if a < t1 and b > t0]
        phase = "setup" if first_step is None or t1 < first_step else "training"
        gap_ms = float(gaps[i]) * 1000
        on_cpu, waiting = ((b - a) / 1e6 for a, b in zip(sched[i], sched[i + 1])) \
            if len(sched) == len(ticks) else (float("nan"),) * 2
        rows.append({"gap_ms": round(gap_ms, 1), "phase": phase,
                     "gui_work": inside or ["none (thread contention)"],
                     "gui_thread_ms": {"on_cpu": round(on_cpu, 1),
                                       "waiting_for_a_core": round(waiting, 1),
                                       "blocked_or_idle": round(gap_ms - on_cpu - waiting, 1)},
                     "gui_thread_during": gui_at.get(t0, "")})
    return rows


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: other work on a shared CPU lengthens the gaps."""
    import os

    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def train_once(widget, recorder: TickRecorder, run_dir: str) -> dict:
    """One run started from the widget, timed on the GUI thread; its figures."""
    handler_ms: dict[str, list[float]] = {}
    marks: list = []
    marks_callback = gc_marks(marks)
    on_event_handler, on_finished = widget._on_event, widget._on_finished
    plot_draw = widget.plot.draw_now
    draws_before = widget.plot.draws
    widget._on_event = timed(on_event_handler, handler_ms, marks)
    widget._on_finished = timed(on_finished, handler_ms, marks, "finished")
    widget.plot.draw_now = timed(plot_draw, handler_ms, marks, "plot draw")
    widget.out.edit.setText(run_dir)
    steps: list[float] = []
    first_step: list[float] = []
    load_before = load_average()
    modules_before = set(sys.modules)
    t0 = time.perf_counter()
    widget._on_start()  # a click: its own latency is reported apart, as start_click_ms
    start_click_ms = (time.perf_counter() - t0) * 1000
    run = widget.run
    process = run.trainer  # the run's TrainingProcess (the run lets go of it when it ends)

    def on_event(event):
        if type(event).__name__ == "StepEvent":
            steps.append(event.seconds)
            first_step.append(time.perf_counter())

    run.worker.yielded.connect(on_event)
    training = recorder.record_until(lambda: widget.run is None, timeout=1800)
    wall = time.perf_counter() - t0
    del widget._on_event, widget._on_finished  # the class's methods again
    del widget.plot.draw_now
    import gc

    gc.callbacks.remove(marks_callback)
    return {
        "training": training,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "training_torch_threads": process.threads,
        "training_priority": process.priority,
        # imported in napari's process while the run set up (the child's are its own)
        "modules_imported": sorted({m.split(".")[0] for m in set(sys.modules) - modules_before}),
        "modules_imported_count": len(set(sys.modules) - modules_before),
        "modules_imported_names": sorted(set(sys.modules) - modules_before)[:60],
        "start_click_ms": round(start_click_ms, 1),
        # the child starts, imports torch and the plugin, builds the data and networks
        "start_to_first_step_s": round(first_step[0] - t0, 1) if first_step else None,
        "training_wall_s": round(wall, 1),
        "median_step_s": round(float(np.median(steps)), 3) if steps else None,
        "plot_redraws": widget.plot.draws - draws_before,
        "longest_gaps": explain_gaps(recorder.ticks, marks,
                                     first_step[0] if first_step else None,
                                     recorder.sched, recorder.gui_at),
        "handler_worst_ms": {k: round(max(v), 1) for k, v in handler_ms.items()},
        "handler_median_ms": {k: round(float(np.median(v)), 1) for k, v in handler_ms.items()},
        "preview_handler_ms": [round(v, 1) for v in handler_ms.get("PreviewEvent", [])],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3,
                        help="training runs in one viewer; the worst gap of all is reported")
    parser.add_argument("--baseline-seconds", type=float, default=3.0)
    parser.add_argument("--tag", default="", help="appended to the result file's name")
    parser.add_argument("--no-handover", action="store_true",
                        help="the training process does not wait for the viewer to draw "
                             "previews and notifications (an A/B of TrainingProcess.handover)")
    args = parser.parse_args()

    import os

    # napari's settings and the docks' remembered fields go to a temporary folder: the
    # benchmark's settings must not become the user's
    settings = tempfile.mkdtemp(prefix="medgan-ui-latency-settings-")
    os.environ["NAPARI_CONFIG"] = str(Path(settings) / "settings.yaml")
    import napari

    sys.path.insert(0, str(HERE))
    from _hardware import describe_hardware, hardware_slug

    viewer = napari.Viewer(show=True)
    from napari_medgan._widgets._common import add_volume_layer
    from napari_medgan.data.phantom import make_head_phantom

    image, _ = make_head_phantom((args.patch,) * 3, seed=3)
    add_volume_layer(viewer, image, "head")
    if args.no_handover:
        from napari_medgan.training import process as training_process

        class NoHandover(training_process.TrainingProcess):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "handover": False})

        training_process.TrainingProcess = NoHandover
    recorder = TickRecorder()
    t0 = time.perf_counter()
    _, widget = viewer.window.add_plugin_dock_widget("napari-medgan", "Train GAN")
    dock_open_ms = (time.perf_counter() - t0) * 1000
    d = widget.session.dataset
    d.source, d.phantom_count, d.phantom_size, d.patch_size = "phantom", 8, args.patch, args.patch
    widget.steps.setValue(args.steps)
    widget.preview_every.setValue(10)
    widget.device.setCurrentText("cpu")
    widget.start_from.setCurrentIndex(0)

    recorder.record_until(lambda: False, 1.0)  # warm-up: first paints, plugin imports
    from qtpy.QtWidgets import QScrollArea

    # the loss plot in view (once the dock is laid out): a plot scrolled out of the dock is
    # never painted, and its cost is what is measured
    widget.findChild(QScrollArea).ensureWidgetVisible(widget.plot)
    recorder.record_until(lambda: False, 0.5)
    if widget.plot.visibleRegion().isEmpty():
        print("warning: the loss plot is not in view; its painting is not measured")
    baseline = recorder.record_until(lambda: False, args.baseline_seconds)

    parent = tempfile.mkdtemp(prefix="medgan-ui-latency-")
    runs = [train_once(widget, recorder, str(Path(parent) / f"run{i}"))
            for i in range(args.repeats)]
    worst = max(r["training"]["worst_gap_ms"] for r in runs)

    info = describe_hardware("cpu")
    result = {
        "benchmark": "ui_latency",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": {"steps": args.steps, "patch": args.patch, "batch_size": widget.batch.value(),
                     "channels": widget.channels.value(), "preview_every": 10,
                     "timer_interval_ms": 10, "repeats": args.repeats,
                     "handover": not args.no_handover},
        "dock_open_ms": round(dock_open_ms, 1),
        "baseline": baseline,
        "worst_gap_ms_of_all_runs": worst,
        "worst_gap_ms_per_run": [r["training"]["worst_gap_ms"] for r in runs],
        "p99_gap_ms_per_run": [r["training"]["p99_gap_ms"] for r in runs],
        "load_average_per_run": [r["load_average_before"] for r in runs],
        "runs": runs,
        "hardware": info,
    }
    tag = f"-{args.tag}" if args.tag else ""
    name = f"ui_latency-{hardware_slug(info, 'cpu')}-{time.strftime('%Y%m%d')}{tag}.json"
    out = HERE / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    viewer.close()
    shutil.rmtree(parent, ignore_errors=True)
    shutil.rmtree(settings, ignore_errors=True)
    for i, r in enumerate(runs):
        print(json.dumps({"run": i, **{k: r[k] for k in (
            "training", "load_average_before", "handler_worst_ms", "longest_gaps",
            "median_step_s", "start_to_first_step_s")}}, indent=1))
    print(f"wrote {out}")
    print(f"dock opened in {dock_open_ms:.0f} ms")
    print(f"worst UI gap: baseline {baseline['worst_gap_ms']} ms, during training "
          f"{worst} ms, worst of {args.repeats} runs {result['worst_gap_ms_per_run']} "
          f"(target <= 50 ms); load average {result['load_average_per_run']}")
    print(worst)


if __name__ == "__main__":
    main()
