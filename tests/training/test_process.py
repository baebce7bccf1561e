"""A training run in a process of its own (what the Train dock runs): the trainer's events
come back, commands reach it, and however it ends it is reported and nothing is lost."""

from __future__ import annotations

import os
import pickle
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from napari_medgan.training import events as ev
from napari_medgan.training import process as proc
from napari_medgan.training.checkpoint import load_checkpoint
from napari_medgan.training.process import ChildDied, TrainingProcess
from napari_medgan.training.trainer import TrainingError


def _is_checkpoint(path) -> bool:
    return (Path(path) / "state.json").is_file() and (Path(path) / "weights.safetensors").is_file()


@pytest.fixture(params=["exec", "spawn"])
def launch(request, monkeypatch):
    """Both ways to start the child: a fresh interpreter (POSIX), multiprocessing's spawn
    (Windows), tested here on the same machine."""
    monkeypatch.setattr(proc, "LAUNCH", request.param)
    return request.param


def test_the_run_happens_in_a_child_that_pauses_resumes_and_stops(tmp_path, tiny_run, launch):
    process = TrainingProcess(tiny_run(tmp_path / "run", steps=1000, preview_every=2),
                              threads=1)
    events, seen_while_paused = [], []

    def resume():  # a second later: at most the step in flight arrived meanwhile
        seen_while_paused.append(process.step)
        process.resume()

    for event in process.run():
        events.append(event)
        if isinstance(event, ev.StepEvent) and event.step == 1:
            assert process.pid not in (None, os.getpid())
            if sys.platform == "linux":  # the viewer's threads preempt it at once
                assert process.priority == "idle scheduling class"
                assert os.sched_getscheduler(process.pid) == os.SCHED_IDLE
            process.pause()
            assert process.paused
            threading.Timer(1.0, resume).start()
        elif isinstance(event, ev.StepEvent) and seen_while_paused:
            assert not process.paused
            process.stop()
    steps = [e.step for e in events if isinstance(e, ev.StepEvent)]
    assert steps[0] == 1 and seen_while_paused[0] <= 2 and len(steps) <= 5
    assert process.step == steps[-1]
    previews = [e for e in events if isinstance(e, ev.PreviewEvent)]
    assert previews and previews[0].volumes[0].shape == (16, 16, 16)
    done = events[-1]
    assert isinstance(done, ev.DoneEvent) and done.reason == "stopped"
    assert load_checkpoint(done.checkpoint).state["step"] == steps[-1]
    assert process.exitcode == 0


def test_with_a_viewer_the_child_waits_until_a_preview_is_drawn(tmp_path, tiny_run):
    """After a preview or a notification the child leaves the cores to the viewer until it
    says it has drawn them, for at most HANDOVER_S; other events do not wait."""
    def gaps_after_previews(out, say_drawn: bool) -> list[float]:
        process = TrainingProcess(tiny_run(out, steps=3, preview_every=1), handover=True)
        arrived = []
        for event in process.run():
            arrived.append((event, time.perf_counter()))
            if isinstance(event, ev.PreviewEvent) and say_drawn:
                process.drawn()
        return [b - a for (e, a), (_, b) in zip(arrived, arrived[1:])
                if isinstance(e, ev.PreviewEvent)]

    waited = gaps_after_previews(tmp_path / "nobody draws", say_drawn=False)
    assert len(waited) == 3 and min(waited) >= proc.HANDOVER_S * 0.9
    drawn = gaps_after_previews(tmp_path / "drawn", say_drawn=True)
    # the same steps, without the wait (medians: a loaded machine slows some steps a lot)
    assert len(drawn) == 3
    assert statistics.median(drawn) < statistics.median(waited) - proc.HANDOVER_S * 0.6


def test_a_stop_asked_before_the_child_runs_is_carried_out(tmp_path, tiny_run):
    process = TrainingProcess(tiny_run(tmp_path / "run", steps=1000))
    process.stop()
    events = list(process.run())
    assert isinstance(events[-1], ev.DoneEvent) and events[-1].reason == "stopped"
    assert not any(isinstance(e, ev.StepEvent) for e in events)


@pytest.mark.parametrize("how", ["failed", "crashed"])
def test_an_error_in_the_child_is_raised_again_with_its_traceback(
        tmp_path, tiny_run, monkeypatch, how, launch):
    monkeypatch.setattr(proc, "TRAINER", "_trainers_that_fail:FailsAtStep2")
    process = TrainingProcess(tiny_run(tmp_path / how, steps=10))
    with pytest.raises(TrainingError if how == "failed" else RuntimeError,
                       match="^a test failure$") as caught:
        list(process.run())
    cause = str(caught.value.__cause__)
    assert "in the training process" in cause and "_train_step" in cause
    assert process.exitcode == 0  # it ended by itself, after reporting


def test_an_error_that_does_not_survive_pickling_comes_back_as_its_message():
    from napari_medgan.io.atomic import DiskFullError
    from napari_medgan.training.process import _Failure

    class Odd(Exception):
        def __init__(self, *, code):
            super().__init__(f"odd {code}")

    odd = _Failure.of(Odd(code=3)).exception()
    assert type(odd) is TrainingError and str(odd) == "Odd: odd 3"
    assert "in the training process" in str(odd.__cause__)
    full = DiskFullError("/runs/a/checkpoints", advice="free space, then resume")
    back = _Failure.of(full).exception()  # the disk-full advice, word for word
    assert type(back) is DiskFullError and str(back) == str(full) and back.path == full.path


def test_a_jobs_volumes_travel_out_of_band_and_arrive_writable():
    """napari's process sends the volumes' raw buffers (no copy made holding the lock;
    benchmarks/send_job.py measures the stall) and the child can work on them in place."""
    import multiprocessing as mp

    from napari_medgan.io import Volume
    from napari_medgan.training.process import _recv_job, _send_job

    image = Volume(np.arange(64**3, dtype=np.float32).reshape(64, 64, 64),
                   spacing=(1.0, 1.5, 2.0), origin=(3.0, -4.0, 5.0))
    labels = Volume(np.asfortranarray(np.arange(64**3).reshape(64, 64, 64) % 5,
                                      dtype=np.uint8), spacing=(1.0, 1.5, 2.0), is_label=True)
    out, into = mp.Pipe(duplex=False)
    received: list = []
    reader = threading.Thread(target=lambda: received.append(_recv_job(out)))
    reader.start()
    sent: list = []
    real_send = into.send
    into.send = lambda obj: (sent.append(obj), real_send(obj))[1]  # the pickled part
    _send_job(into, ("a job", [image], [labels], None))
    reader.join(30)
    head, sizes = sent[0]
    # the arrays (the geometry's small ones too) went apart from the pickled part
    assert {64**3, 4 * 64**3} <= set(sizes) and len(head) < 4096
    name, (image_back,), (labels_back,), none = received[0]
    assert name == "a job" and none is None and labels_back.is_label
    for back, sent_volume in ((image_back, image), (labels_back, labels)):
        assert np.array_equal(back.array, sent_volume.array)
        assert back.array.dtype == sent_volume.array.dtype and back.array.flags.writeable
        assert np.array_equal(back.spacing, sent_volume.spacing)
        assert np.array_equal(back.origin, sent_volume.origin)
    assert labels_back.array.flags.f_contiguous  # the order kept


def test_a_child_that_dies_is_one_line_naming_the_run_to_resume(tmp_path, tiny_run, monkeypatch):
    monkeypatch.setattr(proc, "TRAINER", "_trainers_that_fail:DiesAtStep2")
    process = TrainingProcess(tiny_run(tmp_path / "run", steps=10))
    with pytest.raises(ChildDied) as caught:
        list(process.run())
    text = str(caught.value)
    assert "\n" not in text and "exit code 3" in text and str(tmp_path / "run") in text
    assert isinstance(caught.value, TrainingError)  # the dock shows it as one line
    assert process.exitcode == 3


def test_a_killed_child_is_named_by_its_signal(tmp_path, tiny_run):
    process = TrainingProcess(tiny_run(tmp_path / "run", steps=1000))
    with pytest.raises(ChildDied, match="killed by SIGKILL, perhaps for want of memory"):
        for event in process.run():
            if isinstance(event, ev.StepEvent):
                os.kill(process.pid, 9)


def _parent_that_leaves(tmp_path, tiny_run, at_first_step: str) -> subprocess.CompletedProcess:
    """Run a script that starts a long run in a TrainingProcess and, at its first step, does
    ``at_first_step`` (one line); the finished script. The run's folder is ``tmp_path/run``."""
    (tmp_path / "run.pickle").write_bytes(pickle.dumps(tiny_run(tmp_path / "run",
                                                                steps=100000)))
    script = textwrap.dedent(f"""
        import os, pickle
        from napari_medgan.training import events as ev
        from napari_medgan.training.process import TrainingProcess

        if __name__ == "__main__":
            with open({str(tmp_path / "run.pickle")!r}, "rb") as f:
                process = TrainingProcess(pickle.load(f))
            events = process.run()
            for event in events:
                if isinstance(event, ev.StepEvent):
                    print(process.pid, flush=True)
                    {at_first_step}
    """)
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.run([sys.executable, str(tmp_path / "parent.py")], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path)
    assert parent.returncode == 0, parent.stderr
    return parent


def test_when_its_parent_dies_the_child_saves_a_final_checkpoint(tmp_path, tiny_run):
    """napari killed mid-run: the child sees its pipe close, finishes the step, saves."""
    # no goodbye: the pipes close as the process ends
    parent = _parent_that_leaves(tmp_path, tiny_run, "os._exit(0)")
    child = int(parent.stdout.split()[-1])
    deadline = time.monotonic() + 120
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(child)
    final = tmp_path / "run" / "checkpoints" / "final"
    assert _is_checkpoint(final) and load_checkpoint(final).state["step"] >= 1


def test_a_script_without_a_main_guard_is_not_run_again_in_the_child(tmp_path, tiny_run):
    """napari's examples open a viewer at a script's top level: the child must not run the
    script again (multiprocessing's spawn would, opening a second viewer in it)."""
    (tmp_path / "run.pickle").write_bytes(pickle.dumps(tiny_run(tmp_path / "run", steps=2)))
    script = textwrap.dedent(f"""
        import pickle
        from napari_medgan.training.process import TrainingProcess

        with open({str(tmp_path / "ran")!r}, "a") as f:
            f.write("ran\\n")
        with open({str(tmp_path / "run.pickle")!r}, "rb") as f:
            events = list(TrainingProcess(pickle.load(f)).run())
        print(type(events[-1]).__name__)
    """)
    (tmp_path / "script.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "script.py")], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.split()[-1] == "DoneEvent", done.stderr
    assert (tmp_path / "ran").read_text() == "ran\n"  # once: the parent's run alone


def test_a_parent_that_exits_mid_run_stops_it_with_a_final_checkpoint(tmp_path, tiny_run):
    """A script that leaves a run behind and exits: Python waits for the child at exit,
    which has been told to stop, so it saves and ends rather than training on."""
    # the generator stays open: nothing stops the run but the exit
    _parent_that_leaves(tmp_path, tiny_run, "break")
    final = tmp_path / "run" / "checkpoints" / "final"
    assert _is_checkpoint(final) and load_checkpoint(final).state["step"] < 100000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # an ended child of an ended parent is reaped by init; a zombie counts as ended
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.is_file() and stat.read_text().split(") ")[-1].startswith("Z"))
