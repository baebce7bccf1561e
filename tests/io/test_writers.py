"""save_volume: dtypes, NIfTI header codes, unknown suffixes and atomic replacement."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from napari_medgan.io import (
    Volume,
    VolumeError,
    load_volume,
    save_dicom_series,
    save_volume,
    writers,
)


def test_unknown_suffix_is_refused(tmp_path):
    vol = Volume(np.zeros((2, 3, 4), np.float32))
    for name in ("out.tif", "out.nhdr", "out"):
        with pytest.raises(VolumeError, match=name):
            save_volume(vol, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["nan.nii.gz", "nan.nrrd", "nan.mha", "dicom"])
def test_non_finite_voxels_are_never_written(tmp_path, name):
    data = np.zeros((2, 3, 4), np.float32)
    data[1, 1, 1] = np.nan
    data[0, 0, 0] = np.inf
    vol = Volume(data, source="synthetic_000")
    save = save_dicom_series if name == "dicom" else save_volume
    with pytest.raises(VolumeError, match=rf"{name}: not written: 2 of 24 voxels of "
                                          "synthetic_000 are NaN or infinite"):
        save(vol, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_float64_image_is_written_as_float32(tmp_path):
    vol = Volume(np.linspace(0, 1, 24).reshape(2, 3, 4))
    back = load_volume(save_volume(vol, tmp_path / "f.nii.gz"))
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.array, vol.array, rtol=1e-7)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_label_dtypes(tmp_path, suffix):
    big = Volume(np.arange(24, dtype=np.int64).reshape(2, 3, 4), is_label=True)
    back = load_volume(save_volume(big, tmp_path / f"big{suffix}"))
    assert back.is_label and back.array.dtype == np.int32  # int64 narrowed when it fits
    np.testing.assert_array_equal(back.array, big.array)
    mask = Volume(np.eye(4, dtype=bool)[None].repeat(2, 0), is_label=True)
    back = load_volume(save_volume(mask, tmp_path / f"mask{suffix}"))
    assert back.array.dtype == np.uint8 and back.is_label
    np.testing.assert_array_equal(back.array, mask.array)


def test_fractional_label_map_is_refused(tmp_path):
    vol = Volume(np.full((2, 2, 2), 0.5), is_label=True)
    with pytest.raises(VolumeError, match="non-integer"):
        save_volume(vol, tmp_path / "bad_labels.nii.gz")


def test_nifti_header_codes_units_and_intent(tmp_path):
    vol = Volume(np.zeros((2, 3, 4), np.uint8), spacing=(1, 2, 3), is_label=True)
    hdr = nib.load(save_volume(vol, tmp_path / "l.nii.gz")).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 1)
    assert hdr.get_xyzt_units()[0] == "mm" and hdr.get_intent()[0] == "label"
    kept = vol.with_array(vol.array, meta={"format": "nifti", "qform_code": 0, "sform_code": 4})
    hdr = nib.load(save_volume(kept, tmp_path / "k.nii")).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (0, 4)
    lost = vol.with_array(vol.array, meta={"format": "nifti", "qform_code": 0, "sform_code": 0})
    hdr = nib.load(save_volume(lost, tmp_path / "z.nii")).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 1)  # never "no geometry"


def test_sitk_formats_are_compressed(tmp_path):
    vol = Volume(np.zeros((16, 16, 16), np.float32))
    for suffix in (".nrrd", ".mha"):
        path = save_volume(vol, tmp_path / f"z{suffix}")
        assert path.stat().st_size < vol.array.nbytes / 4
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        assert reader.GetSize() == (16, 16, 16)


def test_dicom_series_of_integral_floats_is_exact(tmp_path):
    vol = Volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5) - 30)
    files = save_dicom_series(vol, tmp_path / "d")
    assert [f.name for f in files] == ["slice_0000.dcm", "slice_0001.dcm", "slice_0002.dcm"]
    np.testing.assert_array_equal(load_volume(tmp_path / "d").array, vol.array)


# ----------------------------------------------------------------------------- atomicity
@pytest.mark.parametrize(
    ("suffix", "target"),
    [(".nii.gz", "_write_nifti"), (".nrrd", "_write_sitk"), (".mha", "_write_sitk")],
)
def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path, monkeypatch, suffix, target
):
    path = tmp_path / f"scan{suffix}"
    old = Volume(np.ones((4, 5, 6), np.float32))
    save_volume(old, path)
    before = path.read_bytes()
    real = getattr(writers, target)
    seen = []

    def crash_midway(volume, tmp):
        real(volume, tmp)  # a complete file at the temporary path...
        with open(tmp, "r+b") as fh:  # ...then half of it, as if the disk filled up
            fh.truncate(tmp.stat().st_size // 2)
        seen.append(tmp)
        raise OSError("No space left on device")

    monkeypatch.setattr(writers, target, crash_midway)
    with pytest.raises(OSError, match="No space"):
        save_volume(Volume(np.zeros((4, 5, 6), np.float32)), path)
    assert seen and seen[0].name != path.name and seen[0].name.endswith(suffix)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    np.testing.assert_array_equal(load_volume(path).array, old.array)


def test_save_volumes_uses_safe_unique_names_and_overwrites_nothing(tmp_path):
    from napari_medgan.io import load_volume, safe_file_stem, save_volumes

    assert safe_file_stem("synthetic_000 (step 600)") == "synthetic_000_step_600"
    assert safe_file_stem("../..//") == "volume" and safe_file_stem(".hidden") == "hidden"
    a = Volume(np.zeros((4, 4, 4), np.float32), spacing=(2.0, 2.0, 3.0))
    b = Volume(np.ones((4, 4, 4), np.float32), spacing=(2.0, 2.0, 3.0))
    first = save_volumes([("T1 / head", a), ("T1 / head", b)], tmp_path)
    assert [p.name for p in first] == ["T1_head.nii.gz", "T1_head_2.nii.gz"]
    again = save_volumes([("T1 / head", b)], tmp_path)
    assert [p.name for p in again] == ["T1_head_3.nii.gz"]
    assert load_volume(first[0]).array.max() == 0  # the first file was not overwritten
    np.testing.assert_allclose(load_volume(first[1]).spacing, (2.0, 2.0, 3.0))
