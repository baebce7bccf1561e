"""Fixtures shared by the hostile-input and crash suites in this folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory):
    """Run folder of a tiny trained dcgan3d (16^3 phantoms, 2 steps, CPU), trained once per
    session in a subprocess: ``config.yaml``, ``log.jsonl`` and ``checkpoints/`` with
    ``latest.json``, ``step-000002``, ``best`` and ``final``. Shared: copy it before
    changing anything in it."""
    from fuzz_cases import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("tiny-trained-run") / "run")
