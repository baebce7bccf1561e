"""Training data: every task's batch layout, crops, padding, sources and bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medgan.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from napari_medgan.data.datasets import build_training_data, condition_from_volume
from napari_medgan.data.phantom import make_head_phantom
from napari_medgan.io import Volume, fit_normalizer, save_volume

TASKS = {  # task -> (model, image channels, condition channels) with the 8 phantom labels
    "synthesis": ("dcgan3d", 1, 0),
    "joint": ("dcgan3d", 9, 0),
    "label2image": ("pix2pix3d", 1, 8),
    "translate": ("pix2pix3d", 1, 1),
    "denoise": ("pix2pix3d", 1, 1),
    "superres": ("pix2pix3d", 1, 1),
    "inpaint": ("pix2pix3d", 1, 2),
}


def make_run(task="synthesis", patch=16, source="phantom", size=32, **data) -> RunConfig:
    return RunConfig(
        data=DataConfig(source=source, phantom_count=3, phantom_size=size, **data),
        model=ModelConfig(name=TASKS[task][0], task=task, patch_size=patch),
        train=TrainConfig(seed=0),
    )


@pytest.mark.parametrize("patch", [16, 32])
@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_batch_layout(task, patch):
    _, img_c, cond_c = TASKS[task]
    data = build_training_data(make_run(task, patch))
    assert (data.image_channels, data.condition_channels) == (img_c, cond_c)
    batch = data.sample_batch(3, np.random.default_rng(0))
    assert batch["image"].shape == (3, img_c, patch, patch, patch)
    assert batch["image"].dtype == torch.float32
    lo, hi = float(batch["image"][:, 0].min()), float(batch["image"][:, 0].max())
    if cond_c:  # conditional tasks keep intensities beyond the preset's window (not clipped)
        assert -1.5 < lo < -0.5 and 0.5 < hi < 1.5 and data.normalizer.clip is False
    else:  # dcgan3d's tanh output: clipped to [-1, 1]
        assert lo >= -1 and hi <= 1 and data.normalizer.clip is True
    if cond_c:
        assert batch["condition"].shape == (3, cond_c, patch, patch, patch)
        assert batch["condition"].dtype == torch.float32
        fixed = data.preview_conditions(2, np.random.default_rng(5))
        assert torch.equal(fixed, data.preview_conditions(2, np.random.default_rng(5)))
    else:
        assert "condition" not in batch and data.preview_conditions(2) is None
    assert len(data.volumes) == 3 and data.volumes[0].dtype == np.float32
    # the reference describes the whole first volume; a validation slab leaves one face
    for w in data.validation:
        if w["volume"] == 0:
            a = w["axis"]
            held = int(w["scored"].any(axis=tuple(b for b in range(3) if b != a)).sum())
            assert data.reference.shape[a] == data.volumes[0].shape[a] + held
    assert bool(data.validation) == (bool(cond_c) and patch == 16)  # 32^3: no room at 32


def test_one_hot_channels_are_binary_and_exclusive():
    data = build_training_data(make_run("joint"))
    assert data.num_classes == 8
    onehot = data.sample_batch(4, np.random.default_rng(1))["image"][:, 1:]
    assert set(onehot.unique().tolist()) == {0.0, 1.0}
    assert torch.all(onehot.sum(1) == 1)


def test_one_hot_is_torchs_and_refuses_labels_out_of_range():
    from napari_medgan.data.datasets import one_hot

    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 5, (2, 6, 7, 8)))
    want = torch.nn.functional.one_hot(labels, 5).permute(0, 4, 1, 2, 3).float()
    got = one_hot(labels.to(torch.uint8), 5)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    with pytest.raises(ValueError, match="num_classes=4"):
        one_hot(labels, 4)


def test_labels_steer_crops_for_tasks_without_labels():
    data = build_training_data(make_run("synthesis"))
    assert data.num_classes == 0 and data.label_arrays is not None
    assert data.label_arrays[0].dtype == np.uint8


def test_condition_rules():
    rng = np.random.default_rng(0)
    inpaint = build_training_data(make_run("inpaint")).sample_batch(4, rng)
    masked, mask = inpaint["condition"][:, 0], inpaint["condition"][:, 1]
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    # known voxels exact; the hole holds the biharmonic fill of its surroundings, not zeros
    assert torch.equal(masked[mask == 0], inpaint["image"][:, 0][mask == 0])
    from napari_medgan.baselines import inpaint_biharmonic

    truth0 = inpaint["image"][0, 0].numpy()
    fill0 = inpaint_biharmonic(np.where(mask[0].numpy() > 0, 0, truth0), mask[0].numpy() > 0)
    np.testing.assert_allclose(masked[0].numpy(), fill0, atol=1e-5)
    # one box per sample, each edge 0.6-1.2x inpaint_fraction (0.35) of 16 -> 3..7 voxels
    for m in mask:
        idx = m.nonzero()
        edges = (idx.max(0).values - idx.min(0).values + 1).tolist()
        assert all(3 <= e <= 7 for e in edges) and m.sum() == np.prod(edges)

    noisy = build_training_data(make_run("denoise")).sample_batch(64, rng)
    resid = (noisy["condition"] - noisy["image"]).flatten(1).std(1)
    # model.noise_std 0.1 (normalised units), drawn per sample from 0.5-1.5x
    assert 0.045 <= resid.min() and resid.max() <= 0.16 and abs(resid.mean() - 0.1) < 0.015

    sr_data = build_training_data(make_run("superres"))
    sr = sr_data.sample_batch(4, rng)
    # smoother than the truth, and its local means survive (it is the truth, box-averaged
    # and interpolated back)
    assert sr["condition"].diff(dim=-1).abs().mean() < sr["image"].diff(dim=-1).abs().mean()
    pooled = torch.nn.functional.avg_pool3d(sr["image"], 4)
    torch.testing.assert_close(torch.nn.functional.avg_pool3d(sr["condition"], 4), pooled,
                               atol=0.2, rtol=0)


def test_superres_inputs_come_from_context_and_flip_with_the_patch():
    from napari_medgan.data.superres import degrade

    run = make_run("superres", patch=16, size=32)
    run.model.superres_factors = (1, 1, 4)
    data = build_training_data(run)
    start = (8, 8, 8)
    patch, low = data._superres_pair(0, start, (), (0, 1, 2))
    np.testing.assert_array_equal(patch, data.volumes[0][8:24, 8:24, 8:24])
    # interpolated from real neighbours: the degradation of the whole (32-voxel) z extent,
    # not of the patch alone, whose replicated borders differ
    whole = degrade(torch.from_numpy(data.volumes[0][:, 8:24, 8:24])[None, None], (4, 1, 1))
    np.testing.assert_allclose(low, whole[0, 0, 8:24].numpy(), atol=1e-5)
    alone = degrade(torch.from_numpy(patch.copy())[None, None], (4, 1, 1))[0, 0].numpy()
    assert np.abs(alone - low)[:2].max() > 1e-3
    # flipping the pair flips the patch and its input together
    f_patch, f_low = data._superres_pair(0, start, (0, 2), (0, 1, 2))
    np.testing.assert_array_equal(f_patch, np.flip(patch, (0, 2)))
    np.testing.assert_allclose(f_low, np.flip(low, (0, 2)), atol=1e-5)


def test_rician_noise_is_a_magnitude():
    run = make_run("denoise")
    run.model.noise, run.model.noise_std = "rician", 0.2
    data = build_training_data(run)
    batch = data.sample_batch(16, np.random.default_rng(1))
    zero = data.zero_level
    # magnitudes never fall below the zero level, and air (at the zero level) gets brighter
    assert float(batch["condition"].min()) >= zero - 1e-5
    air = batch["image"] <= zero + 1e-3
    assert air.any() and float((batch["condition"][air] - zero).mean()) > 0.05


def test_pairs_are_flipped_together():
    run = make_run("label2image")
    data = build_training_data(run)
    batch = data.sample_batch(32, np.random.default_rng(2))
    # the image is still consistent with its one-hot labels after flips: class means as unflipped
    lab = batch["condition"].argmax(1)
    img = batch["image"][:, 0]
    bright = [float(img[lab == k].mean()) for k in (1, 5) if (lab == k).any()]
    assert len(bright) == 2 and abs(bright[0] - bright[1]) > 0.1
    run.data.flip = False
    plain = build_training_data(run)
    a = plain.sample_batch(4, np.random.default_rng(3))["image"]
    b = data.sample_batch(4, np.random.default_rng(3))["image"]
    assert not torch.equal(a, b)


def test_translate_pairs_mr_source_with_ct_target():
    data = build_training_data(make_run("translate", patch=32))
    assert data.normalizer.preset == "mr" and data.target_normalizer.preset == "ct"
    batch = data.sample_batch(1, np.random.default_rng(0))
    hu = data.target_normalizer.inverse(batch["image"][0, 0])
    assert hu.max() > 500  # the skull of the CT target
    assert data.volumes is not None and data.reference.meta["phantom"]["modality"] == "ct"


def test_foreground_crops_hit_foreground_more():
    def fg_share(fraction):
        run = make_run("joint", patch=16, size=64, foreground_fraction=fraction)
        onehot = build_training_data(run).sample_batch(48, np.random.default_rng(0))["image"]
        return 1 - onehot[:, 1].mean().item()  # channel 1 = background class

    uniform, weighted = fg_share(0.0), fg_share(1.0)
    assert weighted > uniform + 0.2, (uniform, weighted)


def test_denoising_crops_are_uniform_by_default_and_a_set_fraction_wins():
    """Noise is in the air too: a denoiser trained on tissue-centred crops left the MNI
    template's air noisy, so denoise draws its crops uniformly unless told otherwise."""
    fractions = {task: build_training_data(make_run(task)).foreground_fraction
                 for task in ("denoise", "superres", "label2image", "joint")}
    assert fractions == {"denoise": 0.0, "superres": 0.8, "label2image": 0.8, "joint": 0.8}
    chosen = build_training_data(make_run("denoise", foreground_fraction=0.5))
    assert chosen.foreground_fraction == 0.5
    with pytest.raises(ValueError, match="data.foreground_fraction"):
        DataConfig(foreground_fraction=1.5)


def _small_volumes(shape=(10, 12, 20), count=2):
    images, labels = [], []
    for i in range(count):
        img, lab = make_head_phantom(shape, spacing=(9.0, 9.0, 9.0), seed=i, modality="ct")
        images.append(img)
        labels.append(lab)
    return images, labels


def test_small_volumes_are_padded_and_geometry_kept():
    images, labels = _small_volumes()
    run = make_run("joint", preset="ct")
    data = build_training_data(run, images=images, labels=labels)
    assert data.volumes[0].shape == (16, 16, 20)
    assert data.volumes[0][0].max() == -1  # padded slab = normalised background
    batch = data.sample_batch(2, np.random.default_rng(0))
    assert batch["image"].shape == (2, 9, 16, 16, 16)
    # padding moved the origin by 3 (z) and 2 (y) voxels: old voxels keep their positions
    ref = data.reference
    assert ref.shape == (16, 16, 20)
    np.testing.assert_allclose(ref.origin + ref.spacing * np.array([0, 2, 3]), images[0].origin)
    hu = ref.array[3:13, 2:14, :]
    np.testing.assert_allclose(hu, np.clip(images[0].array, -1000, 1000), atol=1e-3)


def test_num_classes_from_config_and_too_small():
    images, labels = _small_volumes()
    run = make_run("label2image")
    run.model.num_classes = 10
    assert build_training_data(run, images=images, labels=labels).condition_channels == 10
    run.model.num_classes = 4
    with pytest.raises(ValueError, match="model.num_classes"):
        build_training_data(run, images=images, labels=labels)


def test_constant_training_volume_is_refused_naming_the_file(tmp_path):
    path = save_volume(Volume(np.ones((4, 4, 4), np.float32)), tmp_path / "flat.nii.gz")
    run = make_run("synthesis")
    run.data.source = str(path)
    with pytest.raises(ValueError, match=r"^data\.source \(.*flat\.nii\.gz\): .*constant"):
        build_training_data(run)


@pytest.fixture
def folder(tmp_path):
    images, labels = _small_volumes(shape=(16, 16, 16), count=2)
    for i, (img, lab) in enumerate(zip(images, labels)):
        save_volume(img, tmp_path / "img" / f"case{i}.nii.gz")
        save_volume(lab, tmp_path / "lab" / f"case{i}_seg.nii.gz")
        save_volume(img.with_array(img.array * 0.5), tmp_path / "tgt" / f"other{i}.nii.gz")
    return tmp_path


def test_folder_source_with_labels_and_targets(folder):
    run = make_run("label2image", source=str(folder / "img"), labels=str(folder / "lab"))
    data = build_training_data(run)
    assert len(data) == 2 and data.names[0].endswith("case0.nii.gz")
    assert data.num_classes == 8
    batch = data.sample_batch(2, np.random.default_rng(0))
    assert batch["condition"].shape == (2, 8, 16, 16, 16)

    run = make_run("translate", source=str(folder / "img"), target=str(folder / "tgt"))
    data = build_training_data(run)  # paired by sorted order: names differ
    assert data.target_normalizer is not None and len(data.volumes) == 2


def test_single_file_source_and_resampling(folder):
    run = make_run("synthesis", source=str(folder / "img" / "case1.nii.gz"), spacing=(4.5,) * 3)
    data = build_training_data(run)
    assert len(data) == 1
    np.testing.assert_allclose(data.reference.spacing, 4.5)
    assert data.volumes[0].shape == (32, 32, 32)  # 16 voxels of 9 mm -> 32 of 4.5 mm


def test_condition_from_whole_volume():
    run = make_run("superres")
    img, lab = make_head_phantom((20, 24, 28), seed=1)
    norm = fit_normalizer("mr", [img.array])
    cond = condition_from_volume("superres", img, run, norm)
    assert cond.shape == (1, 1, 20, 24, 28)
    a = condition_from_volume("denoise", img, run, norm, np.random.default_rng(3))
    b = condition_from_volume("denoise", img, run, norm, np.random.default_rng(3))
    assert torch.equal(a, b)
    assert condition_from_volume("inpaint", img, run, norm).shape == (1, 2, 20, 24, 28)
    onehot = condition_from_volume("label2image", lab, run, num_classes=8)
    assert onehot.shape == (1, 8, 20, 24, 28)
    data = build_training_data(make_run("label2image"))
    assert data.make_condition(lab).shape == (1, 8, 20, 24, 28)


@pytest.mark.parametrize("task, kwargs, exc, match", [
    ("label2image", {"source": "IMG"}, ValueError, "data.labels"),
    ("translate", {"source": "IMG"}, ValueError, "data.target"),
    ("synthesis", {"source": "MISSING"}, FileNotFoundError, "data.source"),
    ("label2image", {"source": "IMG", "labels": "MISSING"}, FileNotFoundError, "data.labels"),
])
def test_bad_settings_name_the_field(folder, task, kwargs, exc, match):
    paths = {"IMG": str(folder / "img"), "MISSING": str(folder / "nope")}
    run = make_run(task, **{k: paths[v] for k, v in kwargs.items()})
    with pytest.raises(exc, match=match):
        build_training_data(run)


def test_mismatched_shapes_name_both_volumes():
    images, labels = _small_volumes()
    labels[1] = Volume(np.zeros((8, 8, 8), np.uint8), is_label=True, source="seg_b.nii.gz")
    images[1].source = "img_b.nii.gz"
    with pytest.raises(ValueError, match=r"seg_b\.nii\.gz.*img_b\.nii\.gz"):
        build_training_data(make_run("joint"), images=images, labels=labels)
    with pytest.raises(ValueError, match="labels: got 1 volumes for 2 images"):
        build_training_data(make_run("joint"), images=images, labels=labels[:1])


def test_bad_calls():
    data = build_training_data(make_run("synthesis"))
    with pytest.raises(ValueError, match="batch_size"):
        data.sample_batch(0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="model.task"):
        condition_from_volume("synthesis", np.zeros((4, 4, 4)), make_run())
    with pytest.raises(ValueError, match="images"):
        build_training_data(make_run(), images=[])


def test_transposes_only_swap_axes_of_the_same_spacing():
    run = make_run("superres")
    run.model.superres_factors = (1, 1, 4)  # x, y thin; z thick
    data = build_training_data(run)
    rng = np.random.default_rng(0)
    perms = {data._random_transpose(rng) for _ in range(60)}
    assert len(perms) == 6  # isotropic: every axis may carry the thick slices (SMORE)
    data.reference = data.reference.with_array(data.reference.array, spacing=(1.0, 2.0, 2.0))
    perms = {data._random_transpose(rng) for _ in range(40)}
    assert perms == {(0, 1, 2), (1, 0, 2)}  # z and y (2 mm) swap; x (1 mm) stays


def test_a_transposed_superres_pair_is_thick_along_the_models_axis():
    """With the axes permuted, the input is still box-averaged along the model's thick axis
    (z for 1x1x4): array axis perm[0] of the volume is the one degraded."""
    from napari_medgan.data.superres import degrade

    run = make_run("superres", patch=16, size=32, val_fraction=0)
    run.model.superres_factors = (1, 1, 4)
    data = build_training_data(run)
    perm = (2, 0, 1)  # the patch's z is the volume's x
    patch, low = data._superres_pair(0, (0, 0, 0), (), perm)
    patch, low = np.transpose(patch, perm), np.transpose(low, perm)
    np.testing.assert_array_equal(patch, np.transpose(data.volumes[0][:16, :16, :16], perm))
    expected = degrade(torch.from_numpy(np.transpose(data.volumes[0][:16, :16, :32], perm)
                                        .copy())[None, None], (4, 1, 1))[0, 0, :16]
    np.testing.assert_allclose(low, expected.numpy(), atol=1e-5)


def test_hold_out_takes_a_slab_off_the_longest_axis_with_context():
    from napari_medgan.data.datasets import hold_out

    model = ModelConfig(name="pix2pix3d", task="denoise", patch_size=16)
    image = np.random.default_rng(0).normal(size=(20, 24, 40)).astype(np.float32)
    labels = (image > 0).astype(np.uint8)
    images, label_list = [image.copy()], [labels.copy()]
    (win,) = hold_out(images, label_list, None, 0.15, 16, model)
    assert images[0].shape == (20, 24, 34) and label_list[0].shape == (20, 24, 34)
    np.testing.assert_array_equal(images[0], image[..., :34])
    assert win["axis"] == 2 and win["image"].shape == (20, 24, 14)  # 6 scored + 8 context
    np.testing.assert_array_equal(win["image"], image[..., 26:])
    np.testing.assert_array_equal(win["labels"], labels[..., 26:])
    assert win["scored"][..., 8:].all() and not win["scored"][..., :8].any()
    # too small to spare a slab and keep a patch: trains whole, no validation
    small = [image[:16, :16, :18].copy()]
    assert hold_out(small, None, None, 0.15, 16, model) == [] and small[0].shape[2] == 18


def test_hold_out_avoids_a_slab_of_air_and_takes_the_face_with_the_most_tissue():
    from napari_medgan.data.datasets import hold_out, slab_face

    # a head in a wide field of view: the longest axis (x) ends in air on both sides; the
    # tissue reaches the y = 0 face (a half-volume cut through the head does that)
    image = np.zeros((30, 32, 60), np.float32)
    image[4:26, :20, 15:45] = np.random.default_rng(0).uniform(1, 2, size=(22, 20, 30))
    labels = (image > 0).astype(np.uint8)
    assert slab_face(image, labels, 0.15, 16) == (1, False, 5)
    model = ModelConfig(name="pix2pix3d", task="label2image", patch_size=16)
    images, label_list = [image.copy()], [labels.copy()]
    (win,) = hold_out(images, label_list, None, 0.15, 16, model)
    assert win["axis"] == 1 and not win["at_end"]
    np.testing.assert_array_equal(images[0], image[:, 5:])  # the slab left training
    np.testing.assert_array_equal(label_list[0], labels[:, 5:])
    np.testing.assert_array_equal(win["image"], image[:, :13])  # 5 scored + 8 context after
    assert win["scored"][:, :5].all() and not win["scored"][:, 5:].any()
    assert labels[:, :5][win["scored"][:, :5]].mean() > 0.2  # tissue to score, not air
    # where the end of the longest axis has tissue, it stays the slab (as before)
    assert slab_face(np.ones_like(image), None, 0.15, 16) == (2, True, 9)


def test_hold_out_keeps_whole_thick_voxels_for_superres():
    from napari_medgan.data.datasets import hold_out

    model = ModelConfig(name="pix2pix3d", task="superres", patch_size=16,
                        superres_factors=(1, 1, 4))
    image = np.random.default_rng(0).normal(size=(41, 20, 22)).astype(np.float32)
    images = [image.copy()]
    (win,) = hold_out(images, None, None, 0.15, 16, model)
    # z is longest and thick: 0.15 * 41 -> two thick voxels (8), context 8
    assert images[0].shape == (33, 20, 22)
    assert win["image"].shape == (16, 20, 22) and win["scored"][8:].all()
    np.testing.assert_array_equal(win["image"], image[25:41])


@pytest.mark.parametrize("task", ["label2image", "translate", "denoise", "superres", "inpaint"])
def test_validation_pairs_score_only_unseen_voxels(task):
    run = make_run(task, patch=16, size=24)
    data = build_training_data(run)
    assert len(data.validation) == 3 and data.volumes[0].shape[0] < 24
    for (cond, truth, scored), win in zip(data.validation_pairs(), data.validation):
        assert cond.shape[0] == truth.shape[0] == 1 and cond.shape[2:] == truth.shape[2:]
        assert cond.shape[1] == TASKS[task][1 + 1] and scored.any()
        if task != "inpaint":
            assert torch.equal(scored[0, 0], torch.from_numpy(win["scored"]))
        else:  # the hole is inside the scored slab, known voxels are exact
            hole = cond[:, 1:] > 0
            assert hole.any() and (scored == hole).all()
            assert not (hole[0, 0] & ~torch.from_numpy(win["scored"])).any()
            torch.testing.assert_close(cond[:, :1][~hole], truth[~hole])
