"""The task registry is the one source of what a task is: the config, the model families,
the training data and the export rule all agree with it."""

from __future__ import annotations

import pytest

from napari_medgan import models
from napari_medgan.config import MODEL_TASKS, ModelConfig
from napari_medgan.tasks import FAMILIES, TASKS, families_of, get_task


def test_every_family_serves_exactly_its_registered_tasks():
    assert MODEL_TASKS is FAMILIES
    assert set(MODEL_TASKS) == set(models.MODELS)
    for name, module in models.MODELS.items():
        assert tuple(module.TASKS) == MODEL_TASKS[name]
    assert {t for tasks in MODEL_TASKS.values() for t in tasks} == set(TASKS)


@pytest.mark.parametrize("name", list(TASKS))
def test_record_matches_the_networks_and_the_batches(name):
    """Channel counts from the record are what the family builds and what the data yields."""
    from napari_medgan.config import DataConfig, RunConfig, TrainConfig
    from napari_medgan.data.datasets import build_training_data

    import numpy as np

    task = TASKS[name]
    family = families_of(name)[0]
    cfg = ModelConfig(name=family, task=name, patch_size=16, channels=8,
                      num_classes=8 if task.needs_labels else 0)
    cond, out = models.channels_for(cfg)
    assert out == task.image_channels(8)
    assert cfg.conditional == task.conditional == (task.condition != "")
    if task.conditional:
        assert cond == task.condition_channels(8)
    run = RunConfig(data=DataConfig(phantom_count=2, phantom_size=16), model=cfg,
                    train=TrainConfig(seed=0))
    data = build_training_data(run)
    batch = data.sample_batch(1, np.random.default_rng(0))
    assert batch["image"].shape[1] == task.image_channels(data.num_classes)
    assert ("condition" in batch) == task.conditional
    if task.conditional:
        assert batch["condition"].shape[1] == task.condition_channels(data.num_classes)
    assert (data.label_arrays is not None) or not task.needs_labels


def test_export_rule_is_the_pairs_field():
    from napari_medgan.export import ExportError, check_pairs

    for name, task in TASKS.items():
        cfg = ModelConfig(name=families_of(name)[0], task=name,
                          num_classes=4 if task.needs_labels else 0)
        if task.pairs:
            check_pairs(cfg)
        else:
            with pytest.raises(ExportError, match=f"{name} makes images only"):
                check_pairs(cfg)


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match="model.task: expected one of .*'segment'"):
        get_task("segment")
