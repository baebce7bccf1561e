"""kill -9 at random moments of a real ``napari-medgan train`` process, then ``--resume``:
after every kill each checkpoint that can be found loads and ``latest`` is whole, and in
the end the run finishes to its step count with no partial file left.

The default suite kills 3 times; ``make fuzz`` (marker ``fuzz``) 20 times.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from napari_medgan.training.checkpoint import STATE_FILE, WEIGHTS_FILE, load_checkpoint
from napari_medgan.training.lock import LOCK_FILE

STEPS_PER_KILL = 40  # a checkpoint after every step: about 40 ms each at 16^3 on a CPU
TRAIN_WINDOW = 2.0  # seconds of training a kill may land in, after the start-up
FIRST_STARTUP_GUESS = 5.0  # seconds to import torch and set up, until measured


def _start(config: Path, run: Path, steps: int, log: Path) -> subprocess.Popen:
    resume = ["--resume"] if (run / "config.yaml").exists() else []
    cmd = [sys.executable, "-m", "napari_medgan", "train", "--config", str(config),
           "--out", str(run), "--steps", str(steps), *resume]
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)


def _kill_after(proc, delay: float, config_yaml: Path) -> float | None:
    """SIGKILL ``proc`` ``delay`` seconds after its start; the start-up seconds (until it
    wrote config.yaml, right before its first step) if seen, else None."""
    start, before = time.monotonic(), _mtime(config_yaml)
    startup = None
    while time.monotonic() - start < delay and proc.poll() is None:
        if startup is None and _mtime(config_yaml) != before:
            startup = time.monotonic() - start
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return startup


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _check_what_a_kill_left(run: Path) -> None:
    """Every visible checkpoint is whole and loads; ``latest`` names a whole checkpoint."""
    folder = run / "checkpoints"
    visible = [p for p in folder.iterdir() if not p.name.startswith(".")] \
        if folder.is_dir() else []
    for path in visible:
        if path.is_dir():
            assert (path / STATE_FILE).is_file() and (path / WEIGHTS_FILE).is_file(), path
            load_checkpoint(path)
    if (folder / "latest.json").exists():
        name = json.loads((folder / "latest.json").read_text())["name"]
        assert load_checkpoint(folder / name).path == folder / name
    if any(p.is_dir() for p in visible):
        load_checkpoint(run)
    if (run / "history.jsonl").exists():  # every record whole, bar one cut off by the kill
        for line in (run / "history.jsonl").read_text().splitlines()[:-1]:
            json.loads(line)


def _latest_step(run: Path) -> int | None:
    try:
        return load_checkpoint(run).step
    except ValueError:  # CheckpointError: none yet
        return None


def _kill_and_resume(tmp_path: Path, tiny_run, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    run, config = tmp_path / "run", tmp_path / "tiny.yaml"
    steps = STEPS_PER_KILL * kills
    tiny_run(run, steps=steps, checkpoint_every=1, preview_every=10**6, log_every=10,
             memory_format="contiguous").to_yaml(config)
    startup, history = FIRST_STARTUP_GUESS, []
    for attempt in range(kills):
        log = tmp_path / f"attempt-{attempt}.log"
        proc = _start(config, run, steps, log)
        delay = rng.uniform(0.0, startup + TRAIN_WINDOW)
        seen = _kill_after(proc, delay, run / "config.yaml")
        startup = seen or startup
        assert proc.returncode in (0, -signal.SIGKILL), log.read_text()[-3000:]
        _check_what_a_kill_left(run)
        step = _latest_step(run)
        history.append(f"{delay:.2f}s{'' if seen else ' (in start-up)'} -> step {step}")
    print("kills at:", "; ".join(history))
    log = tmp_path / "final.log"
    proc = _start(config, run, steps, log)
    assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]

    assert load_checkpoint(run).step == steps
    assert load_checkpoint(run / "checkpoints" / "final").step == steps
    _check_what_a_kill_left(run)
    assert not (run / LOCK_FILE).exists()
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    visible = [p for p in run.rglob("*") if not any(part.startswith(".") for part in
                                                    p.relative_to(run).parts)]
    assert not [p for p in visible if ".part" in p.name or "tmp-" in p.name]
    # the record has every step once, however often the run was killed
    from napari_medgan.training.history import read_history

    records = read_history(run)
    logged = [r["step"] for r in records if r["kind"] == "step"]
    assert logged == list(range(1, steps + 1)), logged  # a read at every checkpoint (each step)
    # one end per session that reached its end: the last session's, and one from a session
    # killed after it finished (between its "done" line and its exit), which the next
    # resume then ends again at once; a kill never writes an end
    ends = [(r["step"], r["reason"]) for r in records if r["kind"] == "done"]
    assert ends and set(ends) == {(steps, "finished")}, ends
    assert records[-1]["kind"] == "done"
    elapsed = [r["elapsed"] for r in records]
    assert elapsed == sorted(elapsed)  # the training time adds up across the resumes


def test_a_run_killed_before_its_first_checkpoint_resumes_from_step_0(tmp_path, tiny_run):
    from napari_medgan.training.trainer import Trainer

    run = tmp_path / "run"
    tiny_run(run, steps=2).to_yaml(run / "config.yaml")  # what setup wrote before the kill
    again = tiny_run(run, steps=2, checkpoint_every=1)
    again.resume, again.model.channels = True, 16  # the model comes from the run's config
    events = list(Trainer(again).run())
    assert any("stopped before its first checkpoint; starting it again from step 0"
               in getattr(e, "text", "") for e in events)
    final = load_checkpoint(run)
    assert final.step == 2 and final.model_config().channels == 8


def test_resume_of_a_folder_that_never_held_a_run_is_still_refused(tmp_path, tiny_run):
    from napari_medgan.training.checkpoint import CheckpointError
    from napari_medgan.training.trainer import Trainer

    again = tiny_run(tmp_path / "typo", steps=2)
    again.resume = True
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        list(Trainer(again).run())
    assert not (tmp_path / "typo").exists()


def test_kill_9_three_times_then_resume_to_the_end(tmp_path, tiny_run):
    _kill_and_resume(tmp_path, tiny_run, kills=3, seed=0)


@pytest.mark.fuzz
def test_kill_9_twenty_times_then_resume_to_the_end(tmp_path, tiny_run):
    _kill_and_resume(tmp_path, tiny_run, kills=20, seed=1)
