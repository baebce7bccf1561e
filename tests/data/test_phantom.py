"""The head phantom is a deterministic distribution of anatomies, defined in millimetres."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medgan.data.phantom import (
    HEAD_FOV_MM,
    PHANTOM_LABELS,
    fit_spacing,
    make_head_phantom,
    make_phantom_set,
)

SHAPE = (64, 64, 64)


def _core(lab: np.ndarray, label: int) -> np.ndarray:
    """Voxels of ``label`` away from the big partial-volume steps (air, bone).

    The phantom blurs tissue boundaries by half a voxel, as a scanner's point
    spread does, so a voxel touching bone (~1000 HU) is not pure CSF.
    """
    from scipy.ndimage import binary_dilation, binary_erosion

    mask = lab == label
    if label == 0:  # the blur reaches diagonal neighbours too
        return binary_erosion(mask, np.ones((3, 3, 3), bool))
    if label == 2:
        return binary_erosion(mask)
    return mask & ~binary_dilation((lab == 0) | (lab == 2))


@pytest.fixture(scope="module")
def pair():
    """MR and CT of the same seed, with a lesion."""
    mr = make_head_phantom(SHAPE, seed=3, lesion=True, modality="mr")
    ct = make_head_phantom(SHAPE, seed=3, lesion=True, modality="ct")
    return mr, ct


def test_same_seed_is_identical():
    a_img, a_lab = make_head_phantom((24, 24, 24), seed=7)
    b_img, b_lab = make_head_phantom((24, 24, 24), seed=7)
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)


def test_different_seeds_differ_in_anatomy():
    labs = [make_head_phantom((32, 32, 32), seed=s, noise=False)[1].array for s in range(3)]
    fractions = [np.bincount(lab.ravel(), minlength=8) / lab.size for lab in labs]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.mean(labs[i] != labs[j]) > 0.02
            # head size and tissue volumes change, not just the noise
            assert np.abs(fractions[i] - fractions[j]).max() > 0.002


def test_labels_types_and_all_present(pair):
    (img, lab), _ = pair
    assert img.array.dtype == np.float32 and img.shape == SHAPE and not img.is_label
    assert lab.array.dtype == np.uint8 and lab.is_label
    assert set(np.unique(lab.array)) == set(PHANTOM_LABELS)
    assert PHANTOM_LABELS[7] == "lesion" and len(PHANTOM_LABELS) == 8


def test_lesion_switch_and_seeded_default():
    assert 7 not in make_head_phantom((32, 32, 32), seed=3, lesion=False)[1].array
    present = [make_head_phantom((24, 24, 24), seed=s)[1].meta["phantom"]["lesion"]
               for s in range(12)]
    assert any(present) and not all(present)  # p = 0.5 from the seed
    # the flag only adds the lesion: the rest of the anatomy is the same
    with_l = make_head_phantom((32, 32, 32), seed=3, lesion=True)[1].array
    without = make_head_phantom((32, 32, 32), seed=3, lesion=False)[1].array
    assert np.all((with_l == without) | (with_l == 7))


def test_mr_and_ct_share_the_anatomy(pair):
    (_, mr_lab), (ct_img, ct_lab) = pair
    np.testing.assert_array_equal(mr_lab.array, ct_lab.array)
    assert ct_img.meta["phantom"]["modality"] == "ct"


@pytest.mark.parametrize("label, low, high", [
    (0, -1010, -990), (1, 20, 60), (2, 500, 1600), (3, -5, 25), (4, 30, 52), (5, 18, 40),
    (6, -5, 25), (7, 45, 75),
])
def test_ct_hounsfield_ranges(pair, label, low, high):
    _, (ct, lab) = pair
    value = float(np.median(ct.array[_core(lab.array, label)]))
    assert low <= value <= high, f"{PHANTOM_LABELS[label]}: {value:.1f} HU"


def test_mr_contrast_is_t1_like(pair):
    (img, lab), _ = pair
    med = {k: float(np.median(img.array[_core(lab.array, k)])) for k in PHANTOM_LABELS}
    assert med[5] > med[4] > med[7] > med[3] > med[0]  # WM > GM > lesion > CSF > air
    assert med[1] > med[4] and med[2] < med[4]  # bright scalp fat, dark bone
    assert 0.8 < med[5] < 1.2


def test_clean_mr_is_piecewise_constant():
    img, lab = make_head_phantom((48, 48, 48), seed=1, bias=False, noise=False)
    from scipy.ndimage import binary_erosion

    assert img.array[_core(lab.array, 0)].max() < 1e-3  # air is 0 beyond the blur
    assert img.array.min() >= 0
    # two voxels in from any boundary: beyond the blur's reach
    deep_wm = binary_erosion(lab.array == 5, np.ones((3, 3, 3), bool), iterations=2)
    assert np.ptp(img.array[deep_wm]) < 1e-4  # one level without bias and noise


def test_grid_size_independence():
    """Same field of view at 32^3 and 64^3: tissue volume fractions agree."""
    fractions = []
    for n in (32, 64):
        _, lab = make_head_phantom((n, n, n), seed=2, noise=False, bias=False)
        fractions.append(np.bincount(lab.array.ravel(), minlength=8) / lab.array.size)
    np.testing.assert_allclose(fractions[0], fractions[1], atol=0.006)


def test_geometry_is_centred_in_mm():
    img, lab = make_head_phantom((20, 24, 28), spacing=(2.0, 1.5, 2.5), seed=0)
    np.testing.assert_allclose(img.spacing, (2.0, 1.5, 2.5))
    np.testing.assert_allclose(lab.spacing, img.spacing)
    np.testing.assert_allclose(img.direction, np.eye(3))
    # origin (x, y, z) puts the grid centre at (0, 0, 0) mm
    centre = img.origin + img.spacing * (np.array(img.shape[::-1]) - 1) / 2
    np.testing.assert_allclose(centre, 0, atol=1e-9)
    np.testing.assert_allclose(lab.origin, img.origin)


def test_default_spacing_fits_the_head():
    img, lab = make_head_phantom((32, 32, 32), seed=0)
    np.testing.assert_allclose(img.spacing, HEAD_FOV_MM / 32)
    assert fit_spacing((16, 32, 64)) == (HEAD_FOV_MM / 64, HEAD_FOV_MM / 32, HEAD_FOV_MM / 16)
    # the whole head fits: no tissue on the border of the grid
    border = np.concatenate([lab.array[[0, -1]].ravel(), lab.array[:, [0, -1]].ravel(),
                             lab.array[:, :, [0, -1]].ravel()])
    assert not border.any()


def test_head_is_physical_not_grid_sized():
    """At 1 mm a 64^3 grid shows the middle of the brain, not a shrunken head."""
    _, lab = make_head_phantom((64, 64, 64), spacing=(1.0, 1.0, 1.0), seed=0, noise=False)
    assert 0 not in lab.array and lab.array[32, 32, 32] in (4, 5, 6)


def test_make_phantom_set_uses_consecutive_seeds():
    items = make_phantom_set(2, (24, 24, 24), None, seed=5, modality="ct")
    assert len(items) == 2
    single = make_head_phantom((24, 24, 24), seed=6, modality="ct")
    np.testing.assert_array_equal(items[1][0].array, single[0].array)


@pytest.mark.parametrize("kwargs, field", [
    ({"modality": "pet"}, "modality"),
    ({"shape": (0, 4, 4)}, "shape"),
    ({"spacing": (1.0, -1.0, 1.0)}, "spacing"),
])
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_head_phantom(**kwargs)


def test_bad_count():
    with pytest.raises(ValueError, match="count"):
        make_phantom_set(0, (16, 16, 16))
