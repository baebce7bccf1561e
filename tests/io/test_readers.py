"""load_volume and friends: round trips per format, real data, DICOM, label rule, paths."""

from __future__ import annotations

import os
import warnings

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from io_helpers import OBLIQUE_RH, assert_same_geometry
from nibabel.testing import data_path

from napari_medgan.io import (
    Volume,
    guess_is_label,
    is_supported_path,
    list_volume_files,
    load_volume,
    save_dicom_series,
    save_volume,
    volume_stem,
)
from napari_medgan.io.volume import orientation_code

FORMATS = [".nii", ".nii.gz", ".nrrd", ".mha"]
NIBABEL_DATA = data_path


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("suffix", FORMATS)
def test_image_round_trip_oblique_anisotropic(tmp_path, oblique_image, suffix):
    path = save_volume(oblique_image, tmp_path / f"t1{suffix}")
    back = load_volume(path)
    assert_same_geometry(back, oblique_image)
    assert back.array.dtype == np.float32
    np.testing.assert_array_equal(back.array, oblique_image.array)
    assert not back.is_label
    assert back.source == str(path)


@pytest.mark.parametrize("suffix", FORMATS)
def test_labels_round_trip_keep_integers_even_with_a_neutral_name(tmp_path, oblique_labels, suffix):
    # A neutral name and 100 label values (like an atlas parcellation): only the NIfTI
    # label intent / our NRRD-MHA marker can say "labels".
    many = np.random.default_rng(3).integers(0, 100, size=oblique_labels.shape).astype(np.int16)
    assert not guess_is_label("case01.nii", many)
    labels = oblique_labels.with_array(many)
    path = save_volume(labels, tmp_path / f"case01{suffix}")
    back = load_volume(path)
    assert back.is_label
    assert back.array.dtype.kind in "iu"
    np.testing.assert_array_equal(back.array, labels.array)
    assert_same_geometry(back, labels)


@pytest.mark.parametrize("suffix", FORMATS)
def test_integer_image_keeps_dtype_and_is_not_a_label(tmp_path, suffix):
    ct = np.random.default_rng(0).integers(-1024, 2000, size=(6, 7, 8)).astype(np.int16)
    vol = Volume(ct, spacing=(0.5, 0.5, 3.0), origin=(1, 2, 3))
    back = load_volume(save_volume(vol, tmp_path / f"ct{suffix}"))
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, ct)
    assert not back.is_label


def test_nibabel_and_simpleitk_agree_on_a_nifti(tmp_path, oblique_image):
    path = save_volume(oblique_image, tmp_path / "both.nii.gz")
    hdr = nib.load(path).header
    np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-5)
    ours = load_volume(path)
    image = sitk.ReadImage(str(path))
    theirs = Volume(
        sitk.GetArrayFromImage(image),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.reshape(image.GetDirection(), (3, 3)),
    )
    assert_same_geometry(ours, theirs)
    np.testing.assert_array_equal(ours.array, theirs.array)


def test_sform_wins_over_a_different_qform_as_in_nibabel(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 0.5
    sform = np.diag([-2.0, 3.0, 1.5, 1.0])
    sform[:3, 3] = [10, 20, 30]
    img = nib.Nifti1Image(data, sform)
    img.set_qform(np.eye(4), code=1)
    img.set_sform(sform, code=2)
    nib.save(img, tmp_path / "two_forms.nii")
    vol = load_volume(tmp_path / "two_forms.nii")
    np.testing.assert_allclose(vol.affine_ras(), nib.load(tmp_path / "two_forms.nii").affine)
    assert vol.meta["qform_code"] == 1 and vol.meta["sform_code"] == 2


def test_scaled_nifti_applies_slope_and_intercept(tmp_path):
    raw = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    img = nib.Nifti1Image(raw, np.eye(4))
    img.header.set_slope_inter(0.5, -10.0)
    nib.save(img, tmp_path / "scaled.nii.gz")
    vol = load_volume(tmp_path / "scaled.nii.gz")
    assert vol.array.dtype.kind == "f" and not vol.is_label
    np.testing.assert_allclose(vol.array, raw.transpose(2, 1, 0) * 0.5 - 10.0)


def test_real_t1_from_nibabel_matches_its_affine():
    path = os.path.join(NIBABEL_DATA, "anatomical.nii")
    img = nib.load(path)
    vol = load_volume(path)
    np.testing.assert_allclose(vol.affine_ras(), img.affine, atol=1e-6)
    assert vol.shape == img.shape[::-1]
    assert orientation_code(vol.direction) == "".join(nib.aff2axcodes(img.affine)) == "LAS"
    np.testing.assert_array_equal(vol.array, np.asarray(img.dataobj).transpose(2, 1, 0))
    assert vol.array.dtype == np.int16 and vol.array.dtype.isnative and not vol.is_label


def test_nifti_codes_survive_a_round_trip(tmp_path):
    vol = load_volume(os.path.join(NIBABEL_DATA, "anatomical.nii"))  # qform/sform code 2 (aligned)
    back = load_volume(save_volume(vol, tmp_path / "anat.nii.gz"))
    assert (back.meta["qform_code"], back.meta["sform_code"]) == (2, 2)
    np.testing.assert_array_equal(back.array, vol.array)
    assert_same_geometry(back, vol, tol=1e-6)


def test_4d_with_one_volume_is_squeezed(tmp_path):
    data = np.random.default_rng(0).random((5, 6, 7, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), tmp_path / "one.nii.gz")
    vol = load_volume(tmp_path / "one.nii.gz")
    assert vol.shape == (7, 6, 5)
    np.testing.assert_array_equal(vol.array, data[..., 0].transpose(2, 1, 0))
    image = sitk.JoinSeries([sitk.GetImageFromArray(vol.array)])
    sitk.WriteImage(image, str(tmp_path / "one.mha"))
    assert load_volume(tmp_path / "one.mha").shape == (7, 6, 5)


# ----------------------------------------------------------------------------- DICOM
def test_dicom_series_float_round_trip(tmp_path, oblique_image):
    vol = oblique_image.with_array(oblique_image.array, direction=OBLIQUE_RH)
    save_dicom_series(vol, tmp_path / "series", modality="MR")
    back = load_volume(tmp_path / "series")
    assert_same_geometry(back, vol)
    slope = (vol.array.max() - vol.array.min()) / 65000.0
    assert np.abs(back.array - vol.array).max() <= slope
    assert back.meta["format"] == "dicom" and back.meta["modality"] == "MR"


def test_dicom_series_integer_ct_is_exact_and_one_file_reads_the_series(tmp_path):
    ct = np.random.default_rng(0).integers(-1024, 1500, size=(5, 6, 7)).astype(np.int16)
    vol = Volume(ct, spacing=(0.6, 0.7, 2.5), origin=(-20, 30, -40), direction=OBLIQUE_RH)
    files = save_dicom_series(vol, tmp_path / "ct", modality="CT")
    assert len(files) == 5
    for path in (tmp_path / "ct", files[2]):
        back = load_volume(path)
        np.testing.assert_array_equal(back.array, ct)
        assert_same_geometry(back, vol)
        assert back.meta["modality"] == "CT"


def test_dicom_left_handed_volume_reads_back_with_k_reversed_at_the_same_positions(
    tmp_path, oblique_labels
):
    # DICOM slices always stack along row x column (right-handed): the k axis flips.
    vol = oblique_labels.with_array(oblique_labels.array.astype(np.int16), is_label=False)
    save_dicom_series(vol, tmp_path / "lh")
    back = load_volume(tmp_path / "lh", is_label=False)
    np.testing.assert_array_equal(back.array, vol.array[::-1])
    last = vol.affine_lps() @ np.array([0, 0, vol.shape[0] - 1, 1.0])
    np.testing.assert_allclose(back.origin, last[:3], atol=1e-4)
    np.testing.assert_allclose(back.direction, vol.direction @ np.diag([1, 1, -1]), atol=1e-4)
    np.testing.assert_allclose(back.spacing, vol.spacing, atol=1e-4)


def test_dicom_folder_with_two_series_reads_the_largest_and_warns(tmp_path):
    small = Volume(np.zeros((2, 4, 4), np.int16))
    big = Volume(np.ones((4, 4, 4), np.int16) * 7, origin=(0, 0, 50))
    save_dicom_series(small, tmp_path / "mixed")
    for i, f in enumerate(save_dicom_series(big, tmp_path / "other")):
        f.rename(tmp_path / "mixed" / f"big_{i}.dcm")
    with pytest.warns(UserWarning, match="2 DICOM series"):
        vol = load_volume(tmp_path / "mixed")
    assert vol.shape == (4, 4, 4)
    # a single file still picks its own series
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_volume(tmp_path / "mixed" / "slice_0000.dcm").shape == (2, 4, 4)


# ----------------------------------------------------------------------------- label rule
@pytest.mark.parametrize(
    ("name", "array", "expected"),
    [
        ("brain_mask.nii.gz", np.zeros((2, 2, 2), np.int16), True),
        ("Seg1.nrrd", np.zeros((2, 2, 2), np.float32), True),  # integral floats
        ("case-LABELS.mha", np.arange(8, dtype=np.int32).reshape(2, 2, 2) * 1000, True),
        ("liver.seg.nrrd", np.zeros((2, 2, 2), np.uint8), True),
        ("masked_t1.nii.gz", np.arange(200, dtype=np.float32).reshape(2, 10, 10) * 3, False),
        ("segment.nii", np.random.default_rng(0).integers(0, 1000, (4, 5, 6)), False),
        ("brain_mask.nii.gz", np.full((2, 2, 2), 0.5, np.float32), False),  # not whole numbers
        ("t1.nii.gz", np.random.default_rng(0).integers(0, 64, (8, 8, 8)), True),  # <= 64 values
        ("t1.nii.gz", np.arange(65, dtype=np.int16).reshape(1, 5, 13), False),  # 65 values
        ("t1.nii.gz", np.array([-1, 0, 1, 2], np.int16).reshape(1, 2, 2), False),  # negative
        ("t1.nii.gz", np.zeros((2, 2, 2), np.float32), False),  # float without a label name
    ],
)
def test_guess_is_label_rule(name, array, expected):
    assert guess_is_label(name, array) is expected


def test_is_label_override(tmp_path):
    vol = Volume(np.random.default_rng(0).integers(0, 4, (4, 5, 6)).astype(np.uint8))
    path = save_volume(vol, tmp_path / "few_values.nii.gz")
    assert load_volume(path).is_label  # written as image, but <= 64 values, integer
    forced = load_volume(path, is_label=False)
    assert not forced.is_label and forced.array.dtype == np.uint8


def test_label_name_on_integral_float_file_gives_integer_array(tmp_path):
    data = np.random.default_rng(0).integers(0, 3, (4, 5, 6)).astype(np.float32)
    save_volume(Volume(data), tmp_path / "tumour_seg.nrrd")
    vol = load_volume(tmp_path / "tumour_seg.nrrd")
    assert vol.is_label and vol.array.dtype.kind in "iu"
    np.testing.assert_array_equal(vol.array, data)


# ----------------------------------------------------------------------------- paths
@pytest.mark.parametrize(
    ("name", "supported", "stem"),
    [
        ("a.nii", True, "a"),
        ("a.NII.GZ", True, "a"),
        ("b.seg.nrrd", True, "b.seg"),
        ("c.nhdr", True, "c"),
        ("d.mhd", True, "d"),
        ("e.mha", True, "e"),
        ("f.dcm", True, "f"),
        ("g.png", False, "g.png"),
        ("h.txt", False, "h.txt"),
        ("i.gz", False, "i.gz"),
        (".hidden.nii.gz", False, ".hidden"),
        (".x.nii.gz.abc.part.nii.gz", False, ".x.nii.gz.abc.part"),
    ],
)
def test_is_supported_path_and_stem(tmp_path, name, supported, stem):
    assert is_supported_path(tmp_path / name) is supported
    assert volume_stem(name) == stem


def test_list_volume_files(tmp_path, oblique_image):
    for name in ("b.nrrd", "a.nii.gz", "c.mha"):
        save_volume(oblique_image, tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.nii").write_bytes(b"x")
    (tmp_path / ".a.nii.gz.1234.part.nii.gz").write_bytes(b"x")
    (tmp_path / "empty_dir").mkdir()
    save_dicom_series(Volume(np.zeros((2, 3, 3), np.int16)), tmp_path / "series")
    found = [p.name for p in list_volume_files(tmp_path)]
    assert found == ["a.nii.gz", "b.nrrd", "c.mha", "series"]
    assert list_volume_files(tmp_path / "series") == [tmp_path / "series"]
    assert is_supported_path(tmp_path / "series") and not is_supported_path(tmp_path / "empty_dir")
    with pytest.raises(FileNotFoundError, match="nope"):
        list_volume_files(tmp_path / "nope")
