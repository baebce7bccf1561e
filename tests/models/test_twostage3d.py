"""The two-stage family: a label map from noise, then an image computed from that map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medgan.config import ModelConfig
from napari_medgan.models import build_discriminator, build_generator
from napari_medgan.models.twostage3d import (TwoStageGenerator3D, one_hot, sampled_map,
                                             stage2_crop)
from napari_medgan.training import events as ev
from napari_medgan.training.checkpoint import load_checkpoint
from napari_medgan.training.inference import generate, load_generator
from napari_medgan.training.trainer import Trainer


def _cfg(**kw):
    return ModelConfig(**{**dict(name="twostage3d", task="joint", patch_size=16, channels=8,
                                 latent_dim=16, num_classes=4), **kw})


def test_a_sample_is_a_one_hot_map_and_the_image_computed_from_it():
    torch.manual_seed(0)
    g = build_generator(_cfg()).eval()
    z = g.sample_latent(3)
    with torch.no_grad():
        out = g(z)
        labels = out[:, 1:]
        assert out.shape == (3, 5, 16, 16, 16)
        # every voxel one class, exactly
        assert torch.equal(labels.sum(1), torch.ones(3, 16, 16, 16))
        assert set(labels.unique().tolist()) <= {0.0, 1.0}
        # consistent by construction: stage 2 on the written label map gives the image
        torch.testing.assert_close(out[:, :1], g.image(labels))
        # and the label map is stage 1's argmax for that latent
        assert torch.equal(labels.argmax(1), g.labels(z).argmax(1))


def test_training_pass_runs_both_stages_and_the_critics_judge_both():
    g, d = build_generator(_cfg()), build_discriminator(_cfg())
    real_labels = one_hot(torch.rand(2, 4, 16, 16, 16))
    probs, image = g(g.sample_latent(2), real_labels)
    assert probs.shape == (2, 4, 16, 16, 16) and image.shape == (2, 1, 16, 16, 16)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 16, 16, 16))
    logits_labels, logits_pair = d(real_labels, torch.cat([real_labels, image], 1))
    assert logits_labels.shape == (2, 1) and logits_pair.shape[0] == 2


@pytest.mark.parametrize("scale", [1, 2])
def test_the_label_critic_judges_the_sampled_map_and_its_gradient_reaches_stage_one(scale):
    torch.manual_seed(0)
    g = build_generator(_cfg(label_scale=scale, patch_size=16 * scale))
    z = g.sample_latent(2)
    probs = g.labels(z)
    judged = sampled_map(probs, scale)
    with torch.no_grad():
        drawn = g(z)[:, 1:]  # the one-hot map of a sample
    # the critic's input is that very map (pooled to stage 1's grid as the real maps are),
    # not the soft probabilities
    expected = drawn if scale == 1 else torch.nn.functional.avg_pool3d(drawn, scale)
    torch.testing.assert_close(judged, expected)
    assert not torch.allclose(judged, probs)
    # straight-through: the critic's verdict still trains the generator
    (judged * torch.randn_like(judged)).sum().backward()
    grads = [p.grad for p in g.labels.parameters() if p.grad is not None]
    assert grads and any(float(q.abs().sum()) > 0 for q in grads)


def test_bad_settings_name_what_is_wrong():
    with pytest.raises(ValueError, match="num_classes"):
        TwoStageGenerator3D(latent_dim=8, num_classes=1, channels=8, spatial_size=16)
    with pytest.raises(ValueError, match="model.num_classes"):
        build_generator(_cfg(num_classes=0))


def test_two_stage_run_end_to_end_at_16(tmp_path, tiny_run):
    """Trains through the trainer, starts stage 2 from the data's class means, checkpoints,
    resumes exactly, and generates pairs with the data's geometry."""
    full = [e for e in Trainer(tiny_run(tmp_path / "a", model="twostage3d", task="joint",
                                        steps=5)).run()]
    steps = [e for e in full if isinstance(e, ev.StepEvent)]
    assert {"D", "G", "L1", "FM"} <= set(steps[-1].losses)
    loaded = load_generator(tmp_path / "a")
    means = loaded.generator.image.class_means
    assert means.abs().sum() > 0 and len(set(means.tolist())) > 1  # fitted, per class
    images, labels = generate(loaded, 2, seed=1)
    geo = load_checkpoint(tmp_path / "a").state["geometry"]
    assert images[0].shape == labels[0].shape == (16, 16, 16)
    np.testing.assert_allclose(images[0].spacing, geo["spacing"])
    assert labels[0].is_label and labels[0].array.max() < loaded.model.num_classes
    # the image agrees with its label map: per class, the mean intensity differs
    img, lab = images[0].array, labels[0].array
    assert len({round(float(img[lab == c].mean()), 3) for c in np.unique(lab)}) > 1

    run_b = tiny_run(tmp_path / "b", model="twostage3d", task="joint", steps=3)
    list(Trainer(run_b).run())
    resumed_run = tiny_run(tmp_path / "b", model="twostage3d", task="joint", steps=5)
    resumed_run.resume = True
    resumed = [e for e in Trainer(resumed_run).run() if isinstance(e, ev.StepEvent)]
    assert [e.step for e in resumed] == [4, 5]
    for a, b in zip(steps[3:], resumed):
        for key in a.losses:
            assert a.losses[key] == pytest.approx(b.losses[key], rel=1e-5, abs=1e-6), key


def test_stage_two_learns_on_crops_of_the_real_pairs():
    pairs = torch.arange(3 * 2 * 32**3, dtype=torch.float32).reshape(3, 2, 32, 32, 32)
    crops = stage2_crop(pairs, np.random.default_rng(0))
    assert crops.shape == (3, 2, 16, 16, 16)
    corners = set()
    for crop, pair in zip(crops, pairs):
        # an exact block of its own pair, at the offset its first voxel gives
        z, y, x = np.unravel_index(int(crop[0, 0, 0, 0]) - int(pair[0, 0, 0, 0]), (32,) * 3)
        assert max(z, y, x) <= 16
        torch.testing.assert_close(crop, pair[:, z:z + 16, y:y + 16, x:x + 16])
        corners.add((z, y, x))
    assert len(corners) > 1  # one offset per sample
    # the trainer's generator decides: the same state crops the same (a resumed run)
    torch.testing.assert_close(stage2_crop(pairs, np.random.default_rng(0)), crops)
    small = pairs[..., :16, :16, :16]
    assert stage2_crop(small, np.random.default_rng(0)) is small  # nothing to crop at 16^3


def test_a_32_cubed_step_trains_stage_two_on_crops_and_samples_whole_maps(tmp_path, tiny_run):
    run = tiny_run(tmp_path, model="twostage3d", task="joint", steps=1, preview_every=1)
    run.data.phantom_size = run.model.patch_size = 32
    events = list(Trainer(run).run())
    assert {"D", "G", "L1"} <= set(
        [e for e in events if isinstance(e, ev.StepEvent)][-1].losses)
    images, labels = generate(load_generator(tmp_path), 1, seed=0)
    assert images[0].shape == labels[0].shape == (32, 32, 32)


def test_stage_one_on_a_coarser_grid_upsamples_before_stage_two(tmp_path, tiny_run):
    g = build_generator(_cfg(patch_size=32, label_scale=2)).eval()
    assert g.labels.spatial_size == 16
    z = g.sample_latent(2)
    with torch.no_grad():
        out = g(z)
        coarse = g.labels(z)
        assert coarse.shape == (2, 4, 16, 16, 16) and out.shape == (2, 5, 32, 32, 32)
        fine = g.label_probabilities(z)
        # upsampled probabilities still sum to one, and the written map is their argmax
        torch.testing.assert_close(fine.sum(1), torch.ones(2, 32, 32, 32))
        assert torch.equal(out[:, 1:].argmax(1), fine.argmax(1))
        torch.testing.assert_close(out[:, :1], g.image(out[:, 1:]))
    d = build_discriminator(_cfg(patch_size=32, label_scale=2))
    assert d.labels.spatial_size == 16

    run = tiny_run(tmp_path, model="twostage3d", task="joint", steps=2)
    run.data.phantom_size = run.model.patch_size = 32
    run.model.label_scale = 2
    assert {"D", "G"} <= set([e for e in Trainer(run).run()
                              if isinstance(e, ev.StepEvent)][-1].losses)
    images, labels = generate(load_generator(tmp_path), 1, seed=0)
    assert images[0].shape == labels[0].shape == (32, 32, 32)


@pytest.mark.parametrize("settings, message", [
    (dict(label_scale=3), "1 or 2"),
    (dict(name="dcgan3d", label_scale=2), "other than twostage3d"),
    (dict(patch_size=16, label_scale=2), "multiple of 16"),
])
def test_label_scale_settings_are_checked(settings, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**settings)


@pytest.fixture(scope="module")
def twostage_run(tmp_path_factory, tiny_run):
    out = tmp_path_factory.mktemp("twostage") / "run"
    list(Trainer(tiny_run(out, model="twostage3d", task="joint", steps=3)).run())
    return out


def test_a_users_label_map_gets_the_image_stage_two_draws_for_it(twostage_run):
    """A label map the user painted goes through stage 2 alone, in its own geometry and the
    data's units; one 16^3 window is exactly stage 2 on the one-hot map."""
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.training.inference import image_stage, synthesize_from

    loaded = load_generator(twostage_run, device="cpu")
    assert image_stage(loaded) is loaded.generator.image
    _, labels = make_head_phantom(shape=(16, 16, 16), spacing=(2.0, 2.0, 2.5), seed=5)
    labels = labels.with_array(np.minimum(labels.array, loaded.model.num_classes - 1))
    image = synthesize_from(loaded, labels)
    assert not image.is_label and image.shape == labels.shape
    np.testing.assert_allclose(image.spacing, labels.spacing)
    np.testing.assert_allclose(image.origin, labels.origin)
    hot = one_hot(torch.nn.functional.one_hot(torch.as_tensor(labels.array.astype(np.int64)),
                                              loaded.model.num_classes)
                  .permute(3, 0, 1, 2)[None].float())
    with torch.no_grad():
        direct = loaded.output_normalizer.inverse(loaded.generator.image(hot)[0, 0].numpy())
    np.testing.assert_allclose(image.array, direct, rtol=1e-5, atol=1e-4 * np.abs(direct).max())
    too_many = labels.with_array(np.full(labels.shape, loaded.model.num_classes, np.uint8))
    with pytest.raises(ValueError, match="num_classes"):
        synthesize_from(loaded, too_many)


def test_generate_with_a_label_map_writes_the_image_and_a_model_without_a_stage_refuses(
        tmp_path, twostage_run, tiny_run, capsys):
    from napari_medgan.cli import main
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.io import load_volume, save_volume

    _, labels = make_head_phantom(shape=(20, 24, 28), spacing=(2.0, 2.0, 2.5), seed=5)
    labels = labels.with_array(np.minimum(labels.array, 3))
    cond = save_volume(labels, tmp_path / "painted_label.nii.gz")
    out = tmp_path / "gen"
    assert main(["generate", str(twostage_run), "--condition", str(cond), "--out",
                 str(out)]) == 0
    result = load_volume(out / "painted_label_label2image.nii.gz")
    assert result.shape == labels.shape and not result.is_label
    np.testing.assert_allclose(result.origin, labels.origin, atol=1e-4)

    dcgan = tmp_path / "dcgan"
    list(Trainer(tiny_run(dcgan, steps=1)).run())
    capsys.readouterr()
    assert main(["generate", str(dcgan), "--condition", str(cond), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "takes no --condition" in err
