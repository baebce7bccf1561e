"""One trainer per run folder: a second process refuses with one line naming the holder,
and the lock of a process killed with SIGKILL is taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from napari_medgan.cli import main
from napari_medgan.training.checkpoint import load_checkpoint
from napari_medgan.training.lock import LOCK_FILE, RunFolderInUse, RunFolderLock
from napari_medgan.training.trainer import Trainer, TrainingError, refuse_used_folder

HOLD = ("import sys, time\n"
        "from napari_medgan.training.lock import RunFolderLock\n"
        "RunFolderLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n")


@pytest.fixture
def holder(tmp_path):
    """Start a process that takes the lock of a folder and sleeps: ``holder(folder)``."""
    procs = []

    def start(folder):
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _kill9(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_second_process_is_refused_naming_folder_pid_and_host(tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run)
    with pytest.raises(RunFolderInUse) as info:
        RunFolderLock(run).acquire()
    text = str(info.value)
    assert text.startswith(f"{run}: run folder is in use by another training process (pid "
                           f"{proc.pid} on host {socket.gethostname()}, since ")
    assert text.endswith("); wait for it to finish or stop it") and "\n" not in text


def test_a_killed_holder_is_taken_over_and_a_clean_release_leaves_nothing(tmp_path, holder):
    run = tmp_path / "run"
    proc = holder(run)
    _kill9(proc)
    assert (run / LOCK_FILE).exists()  # the dead holder's record is still there
    refuse_used_folder(run)  # a lock file alone does not make a folder "used"
    with RunFolderLock(run) as lock:
        assert lock.stale["pid"] == proc.pid
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (run / LOCK_FILE).exists() and sorted(os.listdir(run)) == []


def test_a_lock_taken_on_a_new_folder_leaves_no_folder_behind(tmp_path):
    with RunFolderLock(tmp_path / "new"):
        assert (tmp_path / "new" / LOCK_FILE).is_file()
    assert not (tmp_path / "new").exists()


def test_the_trainer_refuses_a_held_folder_and_takes_over_a_dead_holders(
        tmp_path, holder, tiny_run):
    run = tmp_path / "run"
    proc = holder(run)
    with pytest.raises(TrainingError, match=rf"^{run}: run folder is in use .*pid {proc.pid}"):
        list(Trainer(tiny_run(run, steps=1)).run())
    assert sorted(os.listdir(run)) == [LOCK_FILE]  # it wrote nothing
    _kill9(proc)
    events = list(Trainer(tiny_run(run, steps=1)).run())  # a fresh run: not refused as used
    assert any(f"ended without finishing (pid {proc.pid}" in getattr(e, "text", "")
               for e in events)
    assert events[-1].reason == "finished" and not (run / LOCK_FILE).exists()


def _wait_for(condition, proc, log, timeout=120.0):
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None and time.monotonic() < end, log.read_text()[-2000:]
        time.sleep(0.1)


def test_cli_resume_of_a_folder_still_training_exits_2_then_resumes_after_kill(
        tmp_path, tiny_run, capsys):
    run, config = tmp_path / "run", tmp_path / "tiny.yaml"
    tiny_run(run, checkpoint_every=1, preview_every=1000).to_yaml(config)
    train = [sys.executable, "-m", "napari_medgan", "train", "--config", str(config),
             "--out", str(run), "--steps", "100000"]
    log = tmp_path / "train.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(train, stdout=fh, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: (run / "checkpoints" / "latest.json").exists(), proc, log)
        again = ["train", "--config", str(config), "--out", str(run), "--resume"]
        assert main([*again, "--steps", "3"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"{run}: run folder is in use by another training process (pid {proc.pid} " in err
    finally:
        _kill9(proc)
    step = load_checkpoint(run).step
    assert main([*again, "--steps", str(step + 2)]) == 0
    err = capsys.readouterr().err
    assert f"(pid {proc.pid} on host" in err and f"step {step + 2}/{step + 2}" in err
    assert load_checkpoint(run).step == step + 2 and not (run / LOCK_FILE).exists()


def test_temporary_files_of_a_killed_write_are_cleaned_when_the_run_resumes(tmp_path, tiny_run):
    import dataclasses

    run = tiny_run(tmp_path / "run", steps=2)
    for _ in Trainer(run).run():
        pass
    leftover = tmp_path / "run" / ".config.yaml.k2x9q1ab.part.yaml"  # as atomic_path names it
    leftover.write_text("half a config")
    for _ in Trainer(dataclasses.replace(run, resume=True)).run():
        pass
    assert not leftover.exists() and (tmp_path / "run" / "config.yaml").is_file()
