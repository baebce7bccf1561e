"""Every bad input gives one clear line naming the file (VolumeError) or FileNotFoundError."""

from __future__ import annotations

import io
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path

from napari_medgan.io import Volume, VolumeError, load_volume, save_volume


def _good(tmp_path, suffix):
    vol = Volume(np.random.default_rng(0).random((8, 9, 10)).astype(np.float32))
    return save_volume(vol, tmp_path / f"good{suffix}")


def _truncated(tmp_path, suffix):
    data = _good(tmp_path, suffix).read_bytes()
    path = tmp_path / f"truncated{suffix}"
    path.write_bytes(data[: len(data) // 2])
    return path


def _text(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_text("this is not a volume\n" * 40)
    return path


def _nifti(tmp_path, name, data, affine=None):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def _singular(tmp_path):
    # nibabel refuses to build such an image, so edit the header bytes of a good one.
    good = _nifti(tmp_path, "ok.nii", np.zeros((3, 4, 5), np.float32))
    raw = good.read_bytes()
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    hdr["srow_z"] = [0, 0, 0, 0]
    hdr["qform_code"] = 0
    path = tmp_path / "singular.nii"
    path.write_bytes(hdr.binaryblock + raw[348:])
    return path


def _with(value):
    def make(tmp_path):
        data = np.zeros((3, 4, 5), np.float32)
        data[1, 2, 3] = value
        return _nifti(tmp_path, f"bad_{value}.nii.gz", data)

    return make


def _sitk_file(name, image_factory):
    def make(tmp_path):
        path = tmp_path / name
        sitk.WriteImage(image_factory(), str(path))
        return path

    return make


def _empty_file(name):
    def make(tmp_path):
        path = tmp_path / name
        path.write_bytes(b"")
        return path

    return make


CASES = {
    "truncated .nii.gz": (lambda t: _truncated(t, ".nii.gz"), "truncated.nii.gz", "cannot read"),
    "truncated .nii": (lambda t: _truncated(t, ".nii"), "truncated.nii", "file is truncated"),
    "truncated .nrrd": (lambda t: _truncated(t, ".nrrd"), "truncated.nrrd", "cannot read"),
    "truncated .mha": (lambda t: _truncated(t, ".mha"), "truncated.mha", "truncated"),
    "text as .nii.gz": (lambda t: _text(t, ".nii.gz"), "notes.nii.gz", "cannot read"),
    "text as .nii": (lambda t: _text(t, ".nii"), "notes.nii", "cannot read"),
    "text as .nrrd": (lambda t: _text(t, ".nrrd"), "notes.nrrd", "cannot read"),
    "text as .mha": (lambda t: _text(t, ".mha"), "notes.mha", "cannot read"),
    "empty file": (_empty_file("empty.nii.gz"), "empty.nii.gz", "empty"),
    "2D nifti": (lambda t: _nifti(t, "slice.nii", np.zeros((5, 6), np.float32)), "slice.nii", "2D"),
    "2D mha": (
        _sitk_file("slice.mha", lambda: sitk.GetImageFromArray(np.zeros((5, 6), np.float32))),
        "slice.mha",
        "2D",
    ),
    "4D nifti": (
        lambda t: _nifti(t, "bold.nii.gz", np.zeros((4, 5, 6, 3), np.float32)),
        "bold.nii.gz",
        "(4, 5, 6, 3)",
    ),
    "4D mha": (
        _sitk_file(
            "dwi.mha",
            lambda: sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))] * 2),
        ),
        "dwi.mha",
        "(5, 4, 3, 2)",
    ),
    "RGB mha": (
        _sitk_file(
            "rgb.mha",
            lambda: sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.uint8), isVector=True),
        ),
        "rgb.mha",
        "components",
    ),
    "zero-sized": (
        lambda t: _nifti(t, "zero.nii", np.zeros((0, 4, 5), np.float32)),
        "zero.nii",
        "empty",
    ),
    "one NaN": (_with(np.nan), "bad_nan.nii.gz", "NaN"),
    "one Inf": (_with(np.inf), "bad_inf.nii.gz", "1 of 60"),
    "all NaN": (
        lambda t: _nifti(t, "allnan.nii.gz", np.full((3, 4, 5), np.nan, np.float32)),
        "allnan.nii.gz",
        "all voxels",
    ),
    "singular affine": (_singular, "singular.nii", "singular"),
    "unsupported suffix": (lambda t: _text(t, ".png"), "notes.png", "unsupported"),
    "folder without DICOM": (lambda t: (t / "plain").mkdir() or t / "plain", "plain", "DICOM"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_volume_error_line_naming_the_file(tmp_path, case):
    make, filename, fragment = CASES[case]
    path = make(tmp_path)
    with pytest.raises(VolumeError) as info:
        load_volume(path)
    message = str(info.value)
    assert message.startswith(str(path) + ": ")
    assert filename in message and fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_nibabel_example4d_is_refused_with_its_shape():
    path = os.path.join(data_path, "example4d.nii.gz")
    with pytest.raises(
        VolumeError, match=r"example4d\.nii\.gz: 4D series of shape \(128, 96, 24, 2\)"
    ):
        load_volume(path)


@pytest.mark.parametrize("name", ["missing.nii.gz", "missing.nrrd", "missing_dicom_dir"])
def test_missing_path_is_file_not_found(tmp_path, name):
    with pytest.raises(FileNotFoundError, match=name):
        load_volume(tmp_path / name)


def test_label_request_on_fractional_data_is_refused(tmp_path):
    path = _good(tmp_path, ".mha")
    with pytest.raises(VolumeError, match="good.mha: .*not whole numbers"):
        load_volume(path, is_label=True)
