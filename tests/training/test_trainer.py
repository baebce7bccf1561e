"""The one training loop, run for real at 16^3 on the CPU."""

import math
import re

import numpy as np
import pytest
import torch

from napari_medgan.training import events as ev
from napari_medgan.training.checkpoint import load_checkpoint
from napari_medgan.training.trainer import Trainer, TrainingError


def _collect(trainer):
    return list(trainer.run())


def test_unconditional_run_yields_steps_previews_checkpoints(tmp_path, tiny_run):
    run = tiny_run(tmp_path / "run", steps=6)
    events = _collect(Trainer(run))
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert [e.step for e in steps] == [1, 2, 3, 4, 5, 6]
    assert all({"D", "G"} <= set(e.losses) and all(map(math.isfinite, e.losses.values()))
               for e in steps)
    assert "R1" in steps[0].losses  # lazy R1 on step 0, 4, ...
    previews = [e for e in events if isinstance(e, ev.PreviewEvent)]
    assert [p.step for p in previews] == [3, 6]
    vol = previews[0].volumes[0]
    assert vol.shape == (16, 16, 16) and len(previews[0].volumes) == 2
    # The preview sits where the training data sits (phantom at 16^3 = patch size).
    ref = load_checkpoint(tmp_path / "run").state["geometry"]
    np.testing.assert_allclose(vol.spacing, ref["spacing"])
    np.testing.assert_allclose(vol.origin, ref["origin"])
    # Fixed seed: the preview at step 3 and 6 differ (the model learns) but are not noise.
    assert not np.array_equal(previews[0].volumes[0].array, previews[1].volumes[0].array)
    done = events[-1]
    assert isinstance(done, ev.DoneEvent) and done.reason == "finished" and done.step == 6
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert load_checkpoint(done.checkpoint).state["step"] == 6


def test_joint_model_previews_labels(tmp_path, tiny_run):
    run = tiny_run(tmp_path / "run", task="joint", steps=3)
    events = _collect(Trainer(run))
    preview = [e for e in events if isinstance(e, ev.PreviewEvent)][-1]
    assert len(preview.labels) == 2 and preview.labels[0].is_label
    assert preview.labels[0].array.max() < 8  # phantom has 8 classes


@pytest.mark.parametrize("task", ["label2image", "translate", "denoise", "superres", "inpaint"])
def test_every_conditional_task_trains(tmp_path, task, tiny_run):
    run = tiny_run(tmp_path / task, model="pix2pix3d", task=task, steps=2, preview_every=2)
    events = _collect(Trainer(run))
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert len(steps) == 2 and "L1" in steps[-1].losses
    preview = [e for e in events if isinstance(e, ev.PreviewEvent)][-1]
    assert preview.volumes[0].shape == (16, 16, 16) and len(preview.conditions) == 2


def test_resume_continues_exactly(tmp_path, tiny_run):
    full = [e for e in Trainer(tiny_run(tmp_path / "a", steps=5)).run()
            if isinstance(e, ev.StepEvent)]
    _collect(Trainer(tiny_run(tmp_path / "b", steps=3)))
    resumed_run = tiny_run(tmp_path / "b", steps=5)
    resumed_run.resume = True
    events = _collect(Trainer(resumed_run))
    assert any(isinstance(e, ev.MessageEvent) and "resumed" in e.text for e in events)
    resumed = [e for e in events if isinstance(e, ev.StepEvent)]
    assert [e.step for e in resumed] == [4, 5]
    for a, b in zip(full[3:], resumed):
        for key in a.losses:
            assert a.losses[key] == pytest.approx(b.losses[key], rel=1e-5, abs=1e-6), key
        assert a.lr_g == b.lr_g


def test_fine_tune_starts_from_trained_weights(tmp_path, tiny_run):
    _collect(Trainer(tiny_run(tmp_path / "base", steps=3)))
    base = load_checkpoint(tmp_path / "base")
    run = tiny_run(tmp_path / "tuned", steps=2)
    run.init = str(tmp_path / "base")
    run.model.channels = 16  # ignored: the architecture comes from the checkpoint
    run.data.phantom_modality = "ct"
    run.data.preset = "ct"
    trainer = Trainer(run)
    events = trainer.run()
    first = [next(events) for _ in range(2)]
    assert any("fine-tuning" in e.text for e in first if isinstance(e, ev.MessageEvent))
    name, tensor = next(iter(trainer.ema.state_dict().items()))
    torch.testing.assert_close(tensor, base.tensors[f"ema.{name}"])
    rest = list(events)
    assert [e.step for e in rest if isinstance(e, ev.StepEvent)] == [1, 2]
    assert load_checkpoint(tmp_path / "tuned").state["model_config"]["channels"] == 8


def test_stop_between_steps_writes_a_checkpoint(tmp_path, tiny_run):
    trainer = Trainer(tiny_run(tmp_path / "run", steps=1000, checkpoint_every=500))
    done = None
    for event in trainer.run():
        if isinstance(event, ev.StepEvent) and event.step == 2:
            trainer.stop()
        if isinstance(event, ev.DoneEvent):
            done = event
    assert done.reason == "stopped" and done.step == 2
    assert load_checkpoint(tmp_path / "run").state["step"] == 2


def test_divergence_rolls_back_and_lowers_learning_rates(tmp_path, monkeypatch, tiny_run):
    trainer = Trainer(tiny_run(tmp_path / "run", steps=4))
    real_step = Trainer._train_step
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        losses = real_step(self)
        return {**losses, "G": float("nan")} if calls["n"] == 2 else losses

    monkeypatch.setattr(Trainer, "_train_step", flaky)
    events = _collect(trainer)
    warnings = [e for e in events if isinstance(e, ev.MessageEvent) and e.level == "warning"]
    assert len(warnings) == 1 and "rolled back" in warnings[0].text
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert steps[-1].step == 4 and steps[-1].lr_g == pytest.approx(0.5 * steps[0].lr_g)


def test_repeated_divergence_stops_with_a_clear_message(tmp_path, monkeypatch, tiny_run):
    monkeypatch.setattr(Trainer, "_train_step", lambda self: {"D": float("inf"), "G": 1.0})
    with pytest.raises(TrainingError, match="diverged .* lower the learning rates"):
        _collect(Trainer(tiny_run(tmp_path / "run", steps=4, max_divergences=2)))


def test_seeded_cpu_runs_repeat(tmp_path, tiny_run):
    def losses(out):
        return [e.losses for e in Trainer(tiny_run(out, steps=3)).run()
                if isinstance(e, ev.StepEvent)]

    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def test_validation_keeps_the_best_scoring_generator(tmp_path, tiny_run):
    """A conditional run scores its EMA generator on the held-out slab at step 0 and every
    val_every steps; the final checkpoint holds the weights that scored best."""
    from napari_medgan.models import build_generator

    run = tiny_run(tmp_path / "run", model="pix2pix3d", task="denoise", steps=6, val_every=2,
                   lr_g=5e-3)
    run.data.phantom_size = 24  # room for a patch and a slab
    trainer = Trainer(run)
    events = _collect(trainer)
    progress = [e for e in events if isinstance(e, ev.MessageEvent) and e.level == "progress"]
    assert [e.step for e in progress] == [0, 2, 4, 6]
    logged = [float(e.text.split()[2]) for e in progress]
    val = trainer.validation
    assert val["start"] == pytest.approx(logged[0], abs=1e-4) and val["best_step"] in (0, 2, 4, 6)
    if val["best_step"]:  # a later generator, kept because it beat the start beyond the noise
        assert val["best"] == pytest.approx(min(logged), abs=1e-4)
        assert val["gain"] > val["gain_noise"] > 0
    else:  # the start scored lowest, or nothing gained more than the noise
        assert val["best"] == val["start"]
        assert min(logged) == pytest.approx(logged[0], abs=1e-4) or "lowest_step" in val
    kept = [e for e in events if isinstance(e, ev.MessageEvent) and "keeping" in e.text]
    assert len(kept) == 1 and f"step {val['best_step']}" in kept[0].text
    # the saved EMA generator is the best one: it scores the best figure again
    ckpt = load_checkpoint(events[-1].checkpoint)
    assert ckpt.state["validation"]["best_step"] == val["best_step"]
    gen = build_generator(ckpt.model_config())
    ckpt.load_module("ema", gen)
    trainer.ema.load_state_dict(gen.state_dict())
    assert trainer._val_score() == pytest.approx(val["best"], rel=1e-5)


@pytest.mark.parametrize("later, kept", [
    ("uniform", 2),  # 10% lower error in every block: kept
    ("noise", 0),    # lower on average by 3e-4 (0.3%), blocks +-0.02: the start stays
])
def test_validation_keeps_a_later_generator_only_beyond_the_noise(tmp_path, tiny_run,
                                                                   monkeypatch, later, kept):
    """A later generator replaces the starting one (label2image's classical estimate, the
    restoration tasks' baseline) only when its held-out gain is beyond the slab's own noise;
    the run says which it kept and why, and saves that generator."""
    from napari_medgan.models import build_generator

    rng = np.random.default_rng(0)
    counts = torch.full((40,), 64.0, dtype=torch.float64)
    start = torch.from_numpy(rng.uniform(0.05, 0.15, 40)) * counts
    noise = torch.from_numpy(rng.normal(0, 0.02, 40))
    step2 = start * 0.9 if later == "uniform" else start + (noise - noise.mean() - 3e-4) * counts
    errors = {0: start, 2: step2, 4: start * 1.01}
    weights = {}

    def scored(self):
        weights[self.step] = {k: v.detach().clone() for k, v in self.ema.state_dict().items()}
        return errors[self.step].clone(), counts

    monkeypatch.setattr(Trainer, "_val_errors", scored)
    run = tiny_run(tmp_path / "run", model="pix2pix3d", task="denoise", steps=4, val_every=2,
                   lr_g=5e-3)
    run.data.phantom_size = 24
    trainer = Trainer(run)
    events = _collect(trainer)
    val = trainer.validation
    mean = lambda e: float(e.sum() / counts.sum())  # noqa: E731
    assert val["best_step"] == kept and val["best"] == pytest.approx(mean(errors[kept]))
    assert val["gain"] == pytest.approx(mean(start) - mean(step2))
    assert (val["gain"] > val["gain_noise"]) == (kept == 2)
    kept_text = [e.text for e in events if isinstance(e, ev.MessageEvent) and "keeping" in e.text]
    assert len(kept_text) == 1 and kept_text[0].startswith(f"keeping the generator of step {kept}")
    if kept == 0:
        assert val["lowest_step"] == 2 and "within the held-out noise" in kept_text[0]
    ckpt = load_checkpoint(events[-1].checkpoint)
    assert ckpt.state["validation"]["best_step"] == kept
    gen = build_generator(ckpt.model_config())
    ckpt.load_module("ema", gen)
    saved = gen.state_dict()
    assert weights[kept].keys() == saved.keys()
    assert all(torch.equal(weights[kept][k], saved[k]) for k in saved)
    assert not all(torch.equal(weights[2 - kept][k], saved[k]) for k in saved)


def test_paired_gain_counts_blocks_not_voxels():
    from napari_medgan.training.trainer import block_sums, paired_gain

    x = torch.arange(5 * 6 * 7, dtype=torch.float32).reshape(5, 6, 7)
    sums = block_sums(x, 4)
    assert sums.shape == (2 * 2 * 2,) and float(sums.sum()) == pytest.approx(float(x.sum()))
    assert float(sums[0]) == pytest.approx(float(x[:4, :4, :4].sum()))
    counts = block_sums(torch.ones(5, 6, 7), 4)
    assert counts.tolist() == [64, 48, 32, 24, 16, 12, 8, 6]
    rng = np.random.default_rng(0)
    before = torch.from_numpy(rng.uniform(1.0, 2.0, 50)) * 64
    n = torch.full((50,), 64.0)
    # the same error lowered by 1% in every block: a gain of 1% of the mean, far above its noise
    gain, noise = paired_gain(before, before * 0.99, n)
    assert gain == pytest.approx(float(before.sum() / n.sum()) * 0.01)
    assert 0 < noise < gain / 10
    # zero-mean differences of +-0.1 per voxel: no gain, and z standard errors of noise
    flip = torch.from_numpy(rng.choice([-1.0, 1.0], 50))
    flip -= flip.mean()
    gain, noise = paired_gain(before, before + 0.1 * 64 * flip, n, z=2.0)
    assert abs(gain) < 1e-12 and noise == pytest.approx(2 * 0.1 * float(flip.std()) / 50 ** 0.5,
                                                       rel=1e-6)
    assert paired_gain(before[:1], before[:1] * 0.5, n[:1])[1] == float("inf")


def test_small_volumes_train_without_validation(tmp_path, tiny_run):
    run = tiny_run(tmp_path / "run", model="pix2pix3d", task="denoise", steps=2)
    trainer = Trainer(run)
    events = _collect(trainer)
    assert trainer.validation == {} and not any(
        isinstance(e, ev.MessageEvent) and e.level == "progress" for e in events)


def test_losses_are_read_at_log_intervals_as_means(tmp_path, monkeypatch, tiny_run):
    """Between log lines the losses stay on the device (no host sync per step): StepEvents
    carry none, and the read one is the mean of the steps since the last read."""
    seen = []
    real_step = Trainer._train_step

    def recording(self):
        losses = real_step(self)
        assert all(torch.is_tensor(v) for v in losses.values())  # not .item()'d per step
        seen.append({k: float(v) for k, v in losses.items()})
        return losses

    monkeypatch.setattr(Trainer, "_train_step", recording)
    run = tiny_run(tmp_path / "run", steps=8, log_every=4, preview_every=8, checkpoint_every=8)
    steps = [e for e in Trainer(run).run() if isinstance(e, ev.StepEvent)]
    assert [bool(e.losses) for e in steps] == [False, False, False, True] * 2
    for event, window in ((steps[3], seen[:4]), (steps[7], seen[4:])):
        assert event.losses["D"] == pytest.approx(np.mean([w["D"] for w in window]), rel=1e-5)
        # R1 only on the steps it ran (lazy, every 4th): its own mean
        assert event.losses["R1"] == pytest.approx(np.mean([w["R1"] for w in window
                                                            if "R1" in w]), rel=1e-5)
        assert event.seconds > 0


def test_divergence_found_at_a_later_read_still_rolls_back(tmp_path, monkeypatch, tiny_run):
    real_step = Trainer._train_step
    calls = {"n": 0}

    def flaky(self):
        calls["n"] += 1
        losses = real_step(self)
        return {**losses, "G": torch.tensor(float("nan"))} if calls["n"] == 2 else losses

    monkeypatch.setattr(Trainer, "_train_step", flaky)
    run = tiny_run(tmp_path / "run", steps=8, log_every=4, preview_every=8, checkpoint_every=8)
    events = _collect(Trainer(run))
    warnings = [e for e in events if isinstance(e, ev.MessageEvent) and e.level == "warning"]
    assert len(warnings) == 1 and "rolled back to step 0" in warnings[0].text
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert steps[-1].step == 8 and all(map(math.isfinite, steps[-1].losses.values()))
    assert calls["n"] == 4 + 8  # four steps thrown away, then the whole run again


@pytest.mark.parametrize("setting", [{"memory_format": "channels_last"},
                                     {"grad_checkpoint": "on"}])
def test_speed_settings_keep_the_first_step(tmp_path, tiny_run, setting):
    """channels_last_3d and gradient checkpointing change how the step runs, not what it
    computes: the first step's losses match the default run's."""
    def first(out, **kw):
        run = tiny_run(out, steps=2, **kw)
        return next(e for e in Trainer(run).run() if isinstance(e, ev.StepEvent)).losses

    plain, fast = first(tmp_path / "a"), first(tmp_path / "b", **setting)
    assert plain.keys() == fast.keys()
    for key in plain:
        assert fast[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-5), key


def test_long_cpu_run_times_the_memory_formats_and_keeps_the_faster(tmp_path, tiny_run):
    trainer = Trainer(tiny_run(tmp_path / "run", steps=500, checkpoint_every=500))
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, ev.StepEvent) and event.step == 2:
            trainer.stop()
    chosen = [e.text for e in events if isinstance(e, ev.MessageEvent) and "speed:" in e.text]
    assert len(chosen) == 1
    assert re.fullmatch(r"speed: (contiguous|channels_last) \(timed: contiguous [\d.e-]+ s/step, "
                        r"channels_last [\d.e-]+ s/step\)", chosen[0])
    assert trainer.step == 2  # the trial's steps are not the run's


def test_short_budgeted_cpu_run_skips_the_speed_trial(tmp_path, tiny_run):
    """A CPU run with a time budget (the demo's) spends it training: no trial, contiguous."""
    trainer = Trainer(tiny_run(tmp_path / "run", steps=500, checkpoint_every=500))
    trainer.stop_after(120)
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, ev.StepEvent) and event.step == 2:
            trainer.stop()
    assert not [e for e in events if isinstance(e, ev.MessageEvent) and "speed:" in e.text]
    assert trainer._memory_format is torch.contiguous_format and trainer.step == 2


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_gpu_run_with_measured_speed_choices(tmp_path, tiny_run, precision):
    """On a GPU, ``auto`` settles the memory format by timing the step (a message says what
    was chosen); fp16 runs with a loss scaler whose state the checkpoint keeps."""
    run = tiny_run(tmp_path / "run", steps=4, device="cuda", precision=precision,
                   compile="off")
    events = _collect(Trainer(run))
    chosen = [e.text for e in events if isinstance(e, ev.MessageEvent) and "speed:" in e.text]
    assert len(chosen) == 1 and "contiguous" in chosen[0] and "channels_last" in chosen[0]
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert steps[-1].step == 4 and all(map(math.isfinite, steps[-1].losses.values()))
    scalers = load_checkpoint(tmp_path / "run").state["grad_scalers"]
    assert bool(scalers[0]) == (precision == "fp16")
    if precision == "fp16":
        assert scalers[0]["scale"] > 0


@pytest.mark.gpu
def test_gpu_compiled_generator_trains(tmp_path, tiny_run):
    run = tiny_run(tmp_path / "run", steps=3, device="cuda", compile="on",
                   memory_format="channels_last")
    steps = [e for e in Trainer(run).run() if isinstance(e, ev.StepEvent)]
    assert steps[-1].step == 3 and all(map(math.isfinite, steps[-1].losses.values()))


@pytest.mark.gpu
def test_gpu_batches_arrive_intact_from_page_locked_memory(tmp_path, tiny_run):
    """Batches reach the GPU from page-locked memory, copied without waiting for the GPU;
    batches queued back to back each arrive as drawn (no host buffer reused too early)."""
    trainer = Trainer(tiny_run(tmp_path / "run", device="cuda"), write=False)
    for _ in trainer._setup():
        pass
    assert trainer.pin_batches
    batches = [trainer.data.sample_batch(2, np.random.default_rng(i))["image"]
               for i in range(4)]
    moved = [trainer.to_device(b) for b in batches]
    for drawn, arrived in zip(batches, moved):
        assert arrived.device.type == "cuda"
        torch.testing.assert_close(arrived.cpu(), drawn, rtol=0, atol=0)


def _hagan_run(out, steps, **train):
    from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig

    defaults = dict(steps=steps, batch_size=2, preview_every=3, checkpoint_every=3, log_every=1,
                    preview_count=2, device="cpu", seed=0, memory_check="off")
    defaults.update(train)
    return RunConfig(data=DataConfig(source="phantom", phantom_count=3, phantom_size=32),
                     model=ModelConfig(name="hagan3d", task="joint", volume_shape=(32, 32, 64),
                                       slab_size=8, channels=8, latent_dim=16),
                     train=TrainConfig(**defaults), out=str(out))


def test_hierarchical_family_trains_generates_and_resumes_exactly(tmp_path):
    """hagan3d at a 32x32x64 target with 8-plane slabs: previews and generated volumes are
    whole volumes of the requested shape with the data's geometry; resume is exact."""
    from napari_medgan.training.inference import generate, load_generator

    full = [e for e in Trainer(_hagan_run(tmp_path / "a", 5)).run()]
    preview = [e for e in full if isinstance(e, ev.PreviewEvent)][-1]
    assert preview.volumes[0].shape == (64, 32, 32) and preview.labels[0].shape == (64, 32, 32)
    loaded = load_generator(tmp_path / "a")
    images, labels = generate(loaded, 2, seed=3)
    geo = load_checkpoint(tmp_path / "a").state["geometry"]
    assert images[0].shape == labels[0].shape == tuple(geo["shape"]) == (64, 32, 32)
    np.testing.assert_allclose(images[0].origin, geo["origin"])
    np.testing.assert_allclose(images[0].spacing, geo["spacing"])
    classes = set(range(loaded.model.num_classes))
    assert labels[0].is_label and set(np.unique(labels[0].array)) <= classes

    _collect(Trainer(_hagan_run(tmp_path / "b", 3)))
    resumed_run = _hagan_run(tmp_path / "b", 5)
    resumed_run.resume = True
    resumed = [e for e in Trainer(resumed_run).run() if isinstance(e, ev.StepEvent)]
    steps = [e for e in full if isinstance(e, ev.StepEvent)]
    assert [e.step for e in resumed] == [4, 5]
    for a, b in zip(steps[3:], resumed):
        assert set(a.losses) == set(b.losses) >= {"D", "G", "C"}
        for key in a.losses:
            assert a.losses[key] == pytest.approx(b.losses[key], rel=1e-5, abs=1e-6), key
