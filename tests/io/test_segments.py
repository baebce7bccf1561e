"""3D Slicer ``.seg.nrrd``: segment names, colours and label values survive file -> Volume ->
napari layer -> file, with the geometry."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from io_helpers import OBLIQUE_RH, assert_same_geometry

from napari_medgan.io import Volume, load_volume, save_volume
from napari_medgan.io.segments import PALETTE

PLUGIN = "napari-medgan"


def _labels(direction=OBLIQUE_RH, **meta) -> Volume:
    array = np.zeros((6, 7, 8), np.uint8)
    array[1:4, 2:5, 2:6] = 1
    array[4:6, 0:2, 0:3] = 4
    return Volume(array, spacing=(0.7, 0.8, 2.5), origin=(-10.0, 20.0, 35.5),
                  direction=direction, is_label=True, meta=meta)


def _slicer_file(path, array, fields):
    """A segmentation as Slicer writes it: a NRRD label map plus Segment* header fields."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 3.0))
    for key, value in fields.items():
        image.SetMetaData(key, value)
    sitk.WriteImage(image, str(path), True)
    return path


def test_seg_nrrd_round_trip_keeps_names_colours_values_and_geometry(tmp_path):
    liver = {"value": 1, "name": "liver", "color": [0.86, 0.55, 0.41]}
    vol = _labels(segments=[liver])
    back = load_volume(save_volume(vol, tmp_path / "organs.seg.nrrd"))
    assert back.is_label
    np.testing.assert_array_equal(back.array, vol.array)
    assert_same_geometry(back, vol)
    # value 4 had no name: it gets a default one, never dropped
    assert back.meta["segments"] == [liver, {"value": 4, "name": "Segment_4",
                                             "color": list(PALETTE[3])}]


def test_a_slicer_written_segmentation_reads_with_its_names(tmp_path):
    array = np.zeros((3, 4, 5), np.uint8)
    array[1, 1:3, 1:4] = 7
    path = _slicer_file(tmp_path / "Segmentation.seg.nrrd", array, {
        "Segment0_ID": "Segment_1", "Segment0_Name": "tumor", "Segment0_Color": "1 0 0.5",
        "Segment0_LabelValue": "7", "Segment0_Layer": "0", "Segment0_Extent": "1 3 1 2 1 1",
        "Segmentation_MasterRepresentation": "Binary labelmap",
    })
    vol = load_volume(path)
    assert vol.is_label and vol.meta["segments"] == [{"value": 7, "name": "tumor",
                                                       "color": [1.0, 0.0, 0.5]}]


def test_bad_segment_fields_fall_back_to_defaults_and_the_voxels_still_read(tmp_path):
    array = np.zeros((3, 4, 5), np.uint8)
    array[0, 0, 0] = 2
    path = _slicer_file(tmp_path / "odd.seg.nrrd", array, {
        "Segment0_Name": "vessel", "Segment0_Color": "red", "Segment0_LabelValue": "two"})
    (segment,) = load_volume(path).meta["segments"]
    assert segment["name"] == "vessel" and segment["value"] == 1 and len(segment["color"]) == 3


def test_napari_shows_segment_names_and_saves_them_back(make_napari_viewer, tmp_path):
    src = save_volume(_labels(np.eye(3), segments=[{"value": 1, "name": "liver", "color": [1.0, 0.0, 0.0]},
                                        {"value": 4, "name": "spleen", "color": [0.0, 0.0, 1.0]}]),
                      tmp_path / "organs.seg.nrrd")
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(src), plugin=PLUGIN)
    assert layer._type_string == "labels"
    np.testing.assert_allclose(layer.colormap.map(np.array([1, 4]))[:, :3],
                               [[1, 0, 0], [0, 0, 1]], atol=1e-6)
    world = layer.data_to_world((2, 3, 3))  # a liver voxel, under the cursor
    viewer.dims.set_point(0, world[0])
    assert "1; name: liver" in layer.get_status(world, world=True)["coordinates"]
    layer.features.loc[layer.features["index"] == 4, "name"] = "kidney"  # renamed in napari
    out = tmp_path / "edited.seg.nrrd"
    assert viewer.layers.save(str(out), selected=False, plugin=PLUGIN) == [str(out)]
    back = load_volume(out)
    assert [(s["value"], s["name"]) for s in back.meta["segments"]] == [(1, "liver"),
                                                                        (4, "kidney")]
    assert back.meta["segments"][1]["color"] == [0.0, 0.0, 1.0]
    assert_same_geometry(back, load_volume(src))
