"""The memory planner: sizes it measures, the estimate's parts, and one-line refusals."""

from __future__ import annotations

import pytest
import torch

from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from napari_medgan.training import memory
from napari_medgan.training.memory import memory_voxels, plan_memory, scaled_model


def _run(batch=4, **model):
    model = {"name": "dcgan3d", "patch_size": 32, "channels": 8, "latent_dim": 16, **model}
    return RunConfig(data=DataConfig(source="phantom", phantom_count=2, phantom_size=32),
                     model=ModelConfig(**model),
                     train=TrainConfig(batch_size=batch, device="cpu", memory_check="on"))


def test_scaled_sizes_keep_each_field_valid():
    cfg = ModelConfig(name="hagan3d", volume_shape=(192, 224, 64), slab_size=24)
    half = scaled_model(cfg, 2)
    assert half.volume_shape == (96, 96, 32) and half.slab_size == 8  # <= the depth, x8
    assert scaled_model(ModelConfig(patch_size=64), 2).patch_size == 32
    assert scaled_model(ModelConfig(patch_size=16), 2) is None  # nothing can shrink
    # hagan3d's activations follow its slab (with context planes) and the 1/4-size volume
    assert memory_voxels(ModelConfig(name="hagan3d", volume_shape=(64, 64, 128), slab_size=16)) \
        == (16 + 16) * 64 * 64 + 128 * 64 * 64 // 16
    assert memory_voxels(ModelConfig(patch_size=48)) == 48**3


def test_a_run_too_large_to_measure_is_measured_at_the_two_largest_sizes_below(monkeypatch):
    """A 256^3 hierarchical run: 192^3 (scale 4/3) and 128^3, not 128^3 and 64^3, whose RSS
    is mostly noise; a run small enough is measured itself, with a whole scale below it."""
    measured = []

    def fake_measure(runs, device):
        measured.append([tuple(r["model"]["volume_shape"] or (r["model"]["patch_size"],))
                         for r in runs])
        return [2**30] * len(runs)

    monkeypatch.setattr(memory, "_measure_in_subprocess", fake_measure)
    big = _run(batch=1, name="hagan3d", volume_shape=(256, 256, 256), slab_size=32)
    plan_memory(big, torch.device("cpu"), available=2**40)
    plan_memory(_run(batch=1, patch_size=128), torch.device("cpu"), available=2**40)
    assert measured == [[(128, 128, 128), (192, 192, 192)], [(64,), (128,)]]
    assert scaled_model(big.model, memory.SCALES[1]).slab_size == 24


def _same_measurements(monkeypatch, plan):
    """Later plans reuse ``plan``'s measured peaks (a measurement varies a little between
    processes; the arithmetic on it is what these tests check)."""
    peaks = [m["peak"] for m in plan.measured]
    monkeypatch.setattr(memory, "_measure_in_subprocess", lambda runs, device: peaks)


def test_plan_fits_and_refuses_with_the_largest_batch_that_fits(monkeypatch):
    run = _run(batch=4)
    plan = plan_memory(run, torch.device("cpu"), data_bytes=10**6, available=2**40)
    _same_measurements(monkeypatch, plan)
    assert plan.fits and plan.summary().startswith("memory: fits: ~")
    assert plan.parts["state"] > 0 and plan.parts["activations"] > 0
    assert plan.parts["batch"] == 3 * 4 * 4 * 32**3  # three float32 copies of 4 patches
    assert plan.parts["data"] == 10**6 and len(plan.measured) == 2
    a, b = plan.fit
    per_sample = b * memory_voxels(run.model)
    assert per_sample > 0
    # room for two samples but not four: the refusal names batch 2, in one line
    room = plan.parts["state"] + plan.parts["data"] + max(a, 0) + 2.5 * per_sample + \
        memory.batch_bytes(run.model, 2, "cpu")
    tight = plan_memory(run, torch.device("cpu"), data_bytes=10**6, available=int(room / 0.9))
    assert not tight.fits
    line = tight.summary()
    assert "\n" not in line and line.startswith("memory: does not fit: needs ~")
    assert line.endswith("the largest train.batch_size that fits is 2")


def test_plan_names_a_smaller_size_when_no_batch_fits(monkeypatch):
    run = _run(batch=1, patch_size=64)
    # peaks that grow with the voxels, as a step's do; measured ones at these small sizes
    # (about 100 MB) move by more than the 32^3 -> 64^3 difference, and a fitted slope of 0
    # (seen in CI) leaves nothing for a smaller patch to save
    sizes = [scaled_model(run.model, 2), run.model]
    peaks = [memory.state_bytes(m, "cpu") + memory.batch_bytes(m, 1, "cpu") + 60e6
             + 80.0 * memory_voxels(m) for m in sizes]
    monkeypatch.setattr(memory, "_measure_in_subprocess", lambda runs, device: peaks)
    plan = plan_memory(run, torch.device("cpu"), available=2**40)
    assert plan.fit[1] == pytest.approx(80.0)
    a, b = plan.fit
    state_small = memory.state_bytes(scaled_model(run.model, 2), "cpu")
    small = scaled_model(run.model, 2)
    room = state_small + max(a, 0) + 1.2 * b * 32**3 + memory.batch_bytes(small, 1, "cpu")
    # a 32^3 patch fits, 64^3 does not
    plan = plan_memory(run, torch.device("cpu"), available=int(room / 0.9))
    assert "the largest model.patch_size that fits at batch 1 is 32" in plan.summary()


def test_trainer_refuses_before_building_networks(tmp_path, monkeypatch, tiny_run):
    from napari_medgan.training.trainer import Trainer

    run = tiny_run(tmp_path / "run", memory_check="on")
    monkeypatch.setattr(memory, "available_bytes", lambda device: (2**20, "available RAM"))
    trainer = Trainer(run)
    with pytest.raises(ValueError, match=r"^memory: does not fit: needs ~\d+ MB of 1 MB avai"):
        list(trainer.run())
    assert not hasattr(trainer, "G") and not (tmp_path / "run" / "checkpoints").exists()


def test_trainer_says_the_run_fits(tmp_path, tiny_run):
    from napari_medgan.training import events as ev
    from napari_medgan.training.trainer import Trainer

    run = tiny_run(tmp_path / "run", steps=1, memory_check="on")
    texts = [e.text for e in Trainer(run).run() if isinstance(e, ev.MessageEvent)]
    assert any(t.startswith("memory: fits: ~") and "available RAM" in t for t in texts)


def test_a_coarse_label_grid_that_cannot_shrink_is_measured_at_full_scale():
    from napari_medgan.config import ModelConfig
    from napari_medgan.training.memory import scaled_model

    cfg = ModelConfig(name="twostage3d", task="joint", patch_size=64, label_scale=2)
    assert (scaled_model(cfg, 2).patch_size, scaled_model(cfg, 2).label_scale) == (32, 2)
    assert (scaled_model(cfg, 4).patch_size, scaled_model(cfg, 4).label_scale) == (16, 1)
