"""The npe2 reader: which paths it claims, and layers placed in LPS mm in a real viewer."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medgan._reader import CT_WINDOW, napari_get_reader
from napari_medgan.io import Volume, load_volume, save_dicom_series, save_volume
from napari_medgan.io.volume import GEOMETRY_KEY

PLUGIN = "napari-medgan"


def _rotation(degrees: float, axis: int) -> np.ndarray:
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    a, b = [i for i in range(3) if i != axis]
    rot = np.eye(3)
    rot[a, a], rot[a, b], rot[b, a], rot[b, b] = c, -s, s, c
    return rot


OBLIQUE_RH = _rotation(30, 2) @ _rotation(-20, 1) @ _rotation(10, 0)
OBLIQUE = OBLIQUE_RH @ np.diag([1.0, -1.0, 1.0])  # left-handed, as NIfTI allows


def _image(direction=OBLIQUE) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(
        rng.normal(300, 50, size=(8, 10, 12)).astype(np.float32),
        spacing=(0.9, 1.7, 3.1),
        origin=(-12.5, 40.0, 7.25),
        direction=direction,
    )


def _check_layer(layer, vol: Volume) -> None:
    """Layer data and transform put voxel (k, j, i) at the volume's LPS position."""
    np.testing.assert_array_equal(np.asarray(layer.data), vol.array)
    kwargs = vol.to_layer_kwargs()
    np.testing.assert_allclose(layer.scale, kwargs["scale"], atol=1e-6)
    np.testing.assert_allclose(layer.translate, kwargs["translate"], atol=1e-6)
    np.testing.assert_allclose(
        layer.affine.affine_matrix, kwargs.get("affine", np.eye(4)), atol=1e-6
    )
    corners = np.array(
        [[0, 0, 0], [vol.shape[0] - 1, 2, vol.shape[2] - 1], [3, vol.shape[1] - 1, 1]]
    )
    for kji in corners:
        lps = vol.affine_lps() @ np.r_[kji[::-1], 1.0]
        np.testing.assert_allclose(layer.data_to_world(kji), lps[2::-1], atol=1e-6)


# ----------------------------------------------------------------------------- claiming
@pytest.mark.parametrize(
    "name", ["pic.png", "notes.txt", "archive.gz", "volume.tif", "x.nii.gz.part"]
)
def test_reader_refuses_unsupported_files(tmp_path, name):
    (tmp_path / name).write_bytes(b"x")
    assert napari_get_reader(str(tmp_path / name)) is None


def test_reader_refuses_plain_folders_and_mixed_lists(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "a.txt").write_text("x")
    assert napari_get_reader(str(tmp_path / "plain")) is None
    assert napari_get_reader([str(tmp_path / "a.nii.gz"), str(tmp_path / "b.png")]) is None
    assert napari_get_reader([]) is None


def test_reader_claims_volumes_lists_and_dicom_folders(tmp_path):
    save_dicom_series(Volume(np.zeros((2, 3, 4), np.int16)), tmp_path / "series")
    for path in (
        "a.nii.gz",
        "b.nii",
        "c.nrrd",
        "d.mha",
        "e.nhdr",
        "f.mhd",
        str(tmp_path / "series"),
    ):
        assert callable(napari_get_reader(str(tmp_path / path)))
    assert callable(napari_get_reader([str(tmp_path / "a.nii.gz"), str(tmp_path / "c.nrrd")]))


def test_reader_function_returns_layer_tuples(tmp_path):
    vol = _image()
    save_volume(vol, tmp_path / "t1.nii.gz")
    save_volume(
        vol.with_array((vol.array > 300).astype(np.uint8), is_label=True), tmp_path / "t1_mask.nrrd"
    )
    paths = [str(tmp_path / "t1.nii.gz"), str(tmp_path / "t1_mask.nrrd")]
    (img, img_kw, img_type), (lab, lab_kw, lab_type) = napari_get_reader(paths)(paths)
    assert (img_type, lab_type) == ("image", "labels")
    assert img_kw["name"] == "t1" and lab_kw["name"] == "t1_mask"
    assert img_kw["colormap"] == "gray"
    lo, hi = img_kw["contrast_limits"]
    assert np.percentile(vol.array, 0.4) <= lo < hi <= np.percentile(vol.array, 99.6)
    assert lab.dtype == np.uint8 and "contrast_limits" not in lab_kw
    assert img_kw["metadata"][GEOMETRY_KEY]["spacing"] == pytest.approx(list(vol.spacing))


def test_ct_gets_a_soft_tissue_window(tmp_path):
    ct = np.random.default_rng(0).integers(-1024, 1500, size=(5, 6, 7)).astype(np.int16)
    save_volume(Volume(ct), tmp_path / "head_ct.nii.gz")
    path = str(tmp_path / "head_ct.nii.gz")
    ((_, kwargs, _),) = napari_get_reader(path)(path)
    assert kwargs["contrast_limits"] == CT_WINDOW


# ----------------------------------------------------------------------------- viewer
def test_viewer_opens_oblique_volumes_in_place(make_napari_viewer, tmp_path):
    vol = _image()
    viewer = make_napari_viewer()  # one viewer for all formats: viewers are the slow part
    for suffix in (".nii.gz", ".nrrd", ".mha"):
        path = save_volume(vol, tmp_path / f"scan{suffix}")
        layers = viewer.open(str(path), plugin=PLUGIN)
        assert len(layers) == 1 and layers[0]._type_string == "image"
        assert layers[0].name.startswith("scan")
        _check_layer(layers[0], load_volume(path))
        _check_layer(layers[0], vol)  # and the file held what we wrote
        assert [str(u) for u in layers[0].units] == ["millimeter"] * 3  # axes say mm
    assert len(viewer.layers) == 3


def test_viewer_opens_dicom_folder_and_label_file(make_napari_viewer, tmp_path):
    vol = _image(OBLIQUE_RH).with_array(np.arange(8 * 10 * 12, dtype=np.int16).reshape(8, 10, 12))
    save_dicom_series(vol, tmp_path / "ct_series", modality="CT")
    labels = Volume(
        np.random.default_rng(1).integers(0, 5, (4, 5, 6)).astype(np.uint8), spacing=(1, 1, 2)
    )
    save_volume(labels, tmp_path / "case_labels.nii.gz")
    viewer = make_napari_viewer()
    (dicom,) = viewer.open(str(tmp_path / "ct_series"), plugin=PLUGIN)
    assert dicom._type_string == "image" and dicom.name == "ct_series"
    _check_layer(dicom, load_volume(tmp_path / "ct_series"))
    _check_layer(dicom, vol)  # the series came back where it was written
    (lab,) = viewer.open(str(tmp_path / "case_labels.nii.gz"), plugin=PLUGIN)
    assert lab._type_string == "labels" and lab.data.dtype == np.uint8
    _check_layer(lab, labels)  # axis-aligned LPS: identity affine


def test_bad_file_raises_a_clear_error_and_the_viewer_survives(make_napari_viewer, tmp_path):
    bad = tmp_path / "broken_scan.nii.gz"
    bad.write_text("definitely not gzip")
    viewer = make_napari_viewer()
    with pytest.raises(ValueError) as info:
        viewer.open(str(bad), plugin=PLUGIN)
    assert "broken_scan.nii.gz" in str(info.value)
    assert "cannot read as NIfTI" in str(info.value)
    assert len(viewer.layers) == 0
    good = save_volume(_image(), tmp_path / "good.mha")
    (layer,) = viewer.open(str(good), plugin=PLUGIN)
    assert layer.name == "good" and len(viewer.layers) == 1


def test_several_files_of_one_dicom_series_give_one_layer(tmp_path):
    vol = Volume(np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5) * 50 - 1000)
    files = [str(f) for f in save_dicom_series(vol, tmp_path / "s", modality="CT")]
    layers = napari_get_reader(files)(files)
    assert len(layers) == 1
    data, kwargs, layer_type = layers[0]
    assert layer_type == "image" and kwargs["contrast_limits"] == CT_WINDOW
    np.testing.assert_array_equal(data, vol.array)
