"""Shared test setup: isolated napari settings, deterministic torch, GPU marker."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# Keep napari from writing to the user's settings (must happen before napari is imported).
_SETTINGS_DIR = tempfile.mkdtemp(prefix="napari-medgan-tests-")
os.environ.setdefault("NAPARI_CONFIG", os.path.join(_SETTINGS_DIR, "settings.yaml"))
atexit.register(shutil.rmtree, _SETTINGS_DIR, ignore_errors=True)


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


def _tiny_run(out, model="dcgan3d", task=None, steps=6, **train):
    """A run config at 16^3 with a few steps: seconds on a CPU."""
    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    defaults = dict(steps=steps, batch_size=2, preview_every=3, checkpoint_every=3, log_every=1,
                    preview_count=2, device="cpu", seed=0, memory_check="off")
    defaults.update(train)
    return RunConfig(
        data=DataConfig(source="phantom", phantom_count=3, phantom_size=16),
        model=ModelConfig(name=model, task=task, patch_size=16, channels=8, latent_dim=16),
        train=TrainConfig(**defaults),
        out=str(out),
    )


@pytest.fixture(scope="session")
def tiny_run():
    """Factory for tiny run configs: ``tiny_run(out_dir, model=..., task=..., steps=...)``."""
    return _tiny_run
