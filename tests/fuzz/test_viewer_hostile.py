"""A real viewer opening hostile files: each is refused with our one-line message (napari
0.9 re-raises the plugin's error when ``plugin=`` is given, and wraps it in a
ReaderPluginError otherwise: either carries the line), no layer appears, and the viewer
still opens a good volume."""

from __future__ import annotations

import numpy as np
import pytest
from fuzz_cases import Bases, base_volume, build_case_input

PLUGIN = "napari-medgan"
HOSTILE = (
    "nifti-gz/truncated-at-353",  # a .nii.gz cut inside the voxels
    "nifti/dims-20000-cubed",  # a header claiming 16 TB
    "dicom/slice-deleted-middle",  # a series with a gap
    "nhdr/data-file-dotdot",  # a detached header reading outside its folder
    "mha/compressed-over-raw",  # CompressedData = True over raw voxels
    "nifti/nan-voxel",  # a NaN among the voxels
)


def _inputs():
    import fuzz_dicom
    import fuzz_volumes

    by_name = {inp.name: inp for inp in [*fuzz_volumes.inputs(), *fuzz_dicom.inputs()]}
    return [by_name[name] for name in HOSTILE]


def test_viewer_refuses_hostile_files_and_survives(make_napari_viewer, tmp_path):
    from napari.errors import ReaderPluginError

    from napari_medgan.io import save_volume

    bases = Bases(tmp_path)
    viewer = make_napari_viewer()
    for inp in _inputs():
        path = build_case_input(inp, tmp_path, bases)
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is checked below
            viewer.open(str(path), plugin=PLUGIN)
        error = info.value
        original = error.original_error if isinstance(error, ReaderPluginError) else error
        assert isinstance(original, (ValueError, FileNotFoundError)), (inp.name, repr(original))
        message = str(original)
        assert "\n" not in message and path.name in message, (inp.name, message)
        assert message in str(error), (inp.name, str(error))
        assert len(viewer.layers) == 0, (inp.name, [layer.name for layer in viewer.layers])

    good = save_volume(base_volume("int16"), tmp_path / "good.nii.gz")
    (layer,) = viewer.open(str(good), plugin=PLUGIN)
    assert layer.name == "good" and len(viewer.layers) == 1
    np.testing.assert_array_equal(np.asarray(layer.data), base_volume("int16").array)
    np.testing.assert_allclose(layer.scale, base_volume("int16").napari_scale(), atol=1e-6)
