"""Host memory kept for the next step on CPU runs (glibc), and when it is."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from napari_medgan.training.device import keep_host_memory, resolve_keep_host_memory

_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from napari_medgan.training.device import keep_host_memory
    applied = keep_host_memory(True) if sys.argv[1] == "on" else True  # off: glibc's own
    for _ in range(4):  # the first 64 MB (and the heap's room for it): faulted in anyway
        torch.empty(16 * 2**20).fill_(1.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):  # what a training step does: the same large tensors again
        torch.empty(16 * 2**20).fill_(1.0)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _page_faults(setting: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, setting], capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_kept_host_memory_is_not_faulted_in_again():
    """A 64 MB tensor allocated ten times: glibc maps and unmaps it each time (16 000 page
    faults a time); kept, the second allocation reuses the first's pages."""
    applied, kept = _page_faults("on")
    if not applied:
        pytest.skip("no glibc here: nothing to keep")
    _, default = _page_faults("off")
    assert default > 10 * 16_000 * 0.9  # every page of every allocation, faulted in again
    assert kept < default / 20


def test_keep_host_memory_is_on_for_cpu_runs_unless_set():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_keep_host_memory("auto", cpu) and not resolve_keep_host_memory("auto", gpu)
    assert resolve_keep_host_memory("on", gpu) and not resolve_keep_host_memory("off", cpu)


def test_a_cpu_run_keeps_host_memory_while_it_trains_and_gives_it_back(tmp_path, tiny_run):
    from napari_medgan.training.trainer import Trainer

    trainer = Trainer(tiny_run(tmp_path / "run", steps=2))
    events = trainer.run()
    next(events)  # the run has set up
    kept = trainer._kept_host_memory
    for _ in events:
        pass
    assert kept == keep_host_memory(True)  # on wherever glibc lets it be
    keep_host_memory(False)
    assert not trainer._kept_host_memory  # restored when the run ended


def test_keep_host_memory_refuses_unknown_values():
    from napari_medgan.config import TrainConfig

    with pytest.raises(ValueError, match="train.keep_host_memory"):
        TrainConfig(keep_host_memory="always")
