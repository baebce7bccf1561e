"""Shared test setup: isolated napari settings, deterministic torch, GPU marker."""

from __future__ import annotations

import os
import tempfile

import pytest

# Keep napari from writing to the user's settings (must happen before napari is imported).
_SETTINGS_DIR = tempfile.mkdtemp(prefix="napari-medgan-tests-")
os.environ.setdefault("NAPARI_CONFIG", os.path.join(_SETTINGS_DIR, "settings.yaml"))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch missing is a broken install, reported elsewhere
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Every test starts from the same RNG state, with few threads (CI has 2 cores)."""
    import numpy as np
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    yield
