"""Training progress on a terminal: the event consumer of the CLI, the demo and the
benchmarks (the napari widgets consume the same events in a thread worker)."""

from __future__ import annotations

import sys


def consume(trainer, log_every: int, show: bool = True, stream=None) -> dict:
    """Drive the trainer's event iterator, printing progress; returns a summary."""
    from napari_medgan.training import events as ev

    stream = stream or sys.stderr
    bar = None
    last: dict = {}
    for event in trainer.run():
        if isinstance(event, ev.StepEvent):
            last = {"step": event.step, "losses": event.losses or last.get("losses", {}),
                    "seconds": event.seconds}
            if not show:
                continue
            if bar is None and stream.isatty():
                from tqdm import tqdm

                bar = tqdm(total=event.total, initial=event.step - 1, file=stream,
                           desc="train", unit="step")
            text = " ".join(f"{k}={v:.3f}" for k, v in event.losses.items())
            if bar is not None:
                bar.update(1)
                if text:  # losses are read at log intervals, not every step
                    bar.set_postfix_str(text)
            elif text and (event.step % log_every == 0 or event.step == event.total):
                print(f"step {event.step}/{event.total} {text} ({event.seconds:.3f} s/step)",
                      file=stream, flush=True)
        elif show and isinstance(event, ev.MessageEvent):
            (bar.write if bar else lambda s: print(s, file=stream, flush=True))(
                f"[{event.level}] {event.text}")
        elif show and isinstance(event, ev.CheckpointEvent) and event.kind != "best":
            (bar.write if bar else lambda s: print(s, file=stream, flush=True))(
                f"checkpoint ({event.kind}) step {event.step}: {event.path}")
        elif isinstance(event, ev.DoneEvent):
            last.update(done=event.reason, checkpoint=event.checkpoint, step=event.step)
    if bar is not None:
        bar.close()
    return last


class RemainingTime:
    """Time left in a run, from the wall time between the last steps (previews, checkpoints
    and validation included, since they are part of what is left). Intervals more than five
    times the median (a pause, a slow first step) are left out."""

    def __init__(self, window: int = 20) -> None:
        self.window = int(window)
        self._last: tuple[int, float] | None = None
        self._intervals: list[float] = []

    def update(self, step: int, total: int, now: float) -> float | None:
        """Record that ``step`` of ``total`` finished at ``now`` (seconds); returns the
        estimated seconds left, or None until two steps have been seen."""
        if self._last is not None and step > self._last[0]:
            self._intervals.append((now - self._last[1]) / (step - self._last[0]))
            self._intervals = self._intervals[-self.window:]
        self._last = (step, now)
        if not self._intervals:
            return None
        median = sorted(self._intervals)[len(self._intervals) // 2]
        usual = [t for t in self._intervals if t <= 5 * median] or [median]
        return max(0.0, (total - step) * sum(usual) / len(usual))


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"12 min"``, ``"2 h 05 min"``."""
    seconds = int(round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
