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
            last = {"step": event.step, "losses": event.losses, "seconds": event.seconds}
            if not show:
                continue
            if bar is None and stream.isatty():
                from tqdm import tqdm

                bar = tqdm(total=event.total, initial=event.step - 1, file=stream,
                           desc="train", unit="step")
            text = " ".join(f"{k}={v:.3f}" for k, v in event.losses.items())
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(text)
            elif event.step % log_every == 0 or event.step == event.total:
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
