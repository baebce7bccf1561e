"""Held-out judging: halves with correct geometry, cases built with the training operators,
baselines from the model's own training data, figures that refuse mismatched grids."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medgan.data.phantom import make_head_phantom
from napari_medgan.evaluation import judge, make_case, split_halves
from napari_medgan.io.volume import Volume


def _oblique_volume(shape=(10, 12, 14)) -> Volume:
    a, b = np.deg2rad(20), np.deg2rad(-35)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    arr = np.random.default_rng(0).random(shape).astype(np.float32)
    return Volume(arr, spacing=(0.8, 1.1, 2.5), origin=(10.0, -4.0, 33.0), direction=rz @ rx)


@pytest.mark.parametrize("axis", [0, 1, 2, None])
def test_split_halves_keep_every_voxel_in_place(axis):
    vol = _oblique_volume()
    first, second = split_halves(vol, axis)
    ax = int(np.argmax(vol.shape)) if axis is None else axis
    assert first.shape[ax] + second.shape[ax] == vol.shape[ax]
    # the first voxel of the second half sits where it sat in the whole volume
    ijk = np.zeros(3)
    ijk[2 - ax] = first.shape[ax]
    expected = vol.origin + vol.direction @ (vol.spacing * ijk)
    np.testing.assert_allclose(second.origin, expected, atol=1e-9)
    np.testing.assert_array_equal(first.origin, vol.origin)
    np.testing.assert_array_equal(np.concatenate([first.array, second.array], ax), vol.array)


def test_superres_case_uses_the_training_operator():
    img, _ = make_head_phantom((20, 22, 24), seed=2)
    case = make_case("superres", img, factors=(1, 1, 4))
    assert case.truth.shape == (20, 22, 24) and case.condition.shape == (5, 22, 24)
    np.testing.assert_allclose(case.condition.array[0], img.array[:4].mean(0), rtol=1e-5,
                               atol=1e-4)
    np.testing.assert_allclose(case.condition.spacing[2], 4 * img.spacing[2])


def test_inpaint_case_scores_only_the_hole():
    img, _ = make_head_phantom((24, 24, 24), seed=1)
    case = make_case("inpaint", img, rng=np.random.default_rng(3))
    hole = case.region
    assert hole.any() and hole.mean() < 0.1
    assert np.all(case.condition.array[hole] == 0)
    np.testing.assert_array_equal(case.condition.array[~hole], case.truth.array[~hole])
    # a result that is wrong only outside the hole still scores perfectly inside it
    wrong_outside = case.truth.with_array(np.where(hole, case.truth.array, 0))
    figures = judge(case.truth, {"x": wrong_outside}, region=hole)["x"]
    assert figures["MAE"] == 0 and np.isinf(figures["PSNR"])


def test_denoise_case_has_the_stated_noise():
    img, _ = make_head_phantom((24, 24, 24), seed=1)
    case = make_case("denoise", img, noise_sigma=5.0, rng=np.random.default_rng(0))
    resid = case.condition.array - case.truth.array
    assert abs(resid.std() - 5.0) < 0.2
    with pytest.raises(ValueError, match="noise_sigma"):
        make_case("denoise", img)


def test_judge_refuses_another_grid():
    img, _ = make_head_phantom((16, 16, 16), seed=0)
    moved = img.with_array(img.array, origin=img.origin + 1.0)
    with pytest.raises(ValueError, match="moved: result grid"):
        judge(img, {"moved": moved})
    same = judge(img, {"same": img})["same"]
    assert same["SSIM"] == pytest.approx(1.0) and same["MAE"] == 0


def test_unknown_task_is_refused():
    img, _ = make_head_phantom((16, 16, 16), seed=0)
    with pytest.raises(ValueError, match="not a conditional task"):
        make_case("joint", img)
