"""Fixtures for the widget tests: tiny datasets and runs (16^3 phantoms, a few steps)."""

from __future__ import annotations

import pytest


@pytest.fixture
def notifications():
    """Every napari notification shown during the test."""
    from napari.utils.notifications import notification_manager

    seen: list = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory):
    """Run folder of a 3-step dcgan3d run on 16^3 phantoms (the trainer the widget wraps)."""
    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from napari_medgan.training.trainer import Trainer

    out = tmp_path_factory.mktemp("widget-run")
    run = RunConfig(
        data=DataConfig(source="phantom", phantom_count=2, phantom_size=16),
        model=ModelConfig(patch_size=16, channels=8, latent_dim=16),
        train=TrainConfig(memory_check="off", steps=3, batch_size=2, device="cpu", preview_every=3),
        out=str(out),
    )
    for _ in Trainer(run).run():
        pass
    return out


@pytest.fixture(autouse=True)
def dock_settings(tmp_path_factory, monkeypatch):
    """Every test starts with no remembered dock settings, kept in a file of its own (never
    the user's, nor another test's); the fixture's value is that file."""
    from napari_medgan._widgets import _remember

    path = tmp_path_factory.mktemp("dock-settings") / _remember.FILE_NAME
    monkeypatch.setattr(_remember, "settings_file", lambda: path)
    monkeypatch.setattr(_remember, "_STORE", None)
    return path
