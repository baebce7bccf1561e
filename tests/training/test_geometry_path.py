"""Geometry is sacred: an oblique, anisotropic volume keeps its spacing, origin and direction
from layer data through training, previews and sliding-window synthesis to a NIfTI file."""

import numpy as np
from scipy.spatial.transform import Rotation

from napari_medgan.data.phantom import make_head_phantom
from napari_medgan.io import load_volume, save_volume
from napari_medgan.io.volume import Volume
from napari_medgan.training import events as ev
from napari_medgan.training.inference import load_generator, synthesize_from
from napari_medgan.training.trainer import Trainer


def _oblique_pair(seed):
    image, labels = make_head_phantom((20, 24, 28), spacing=(9.0, 8.5, 11.0), seed=seed)
    direction = Rotation.from_euler("xyz", [12, -20, 35], degrees=True).as_matrix()
    geo = dict(spacing=(9.0, 8.5, 11.0), origin=(-101.5, 87.25, 40.0), direction=direction)
    # Through napari's layer representation and back, as the widgets hand volumes in.
    img_kw = Volume(image.array, **geo).to_layer_kwargs()
    img = Volume.from_layer_data(image.array, img_kw["metadata"], img_kw["scale"],
                                 img_kw["translate"], img_kw.get("affine"))
    lab = Volume(labels.array, is_label=True, **geo)
    return img, lab


def test_oblique_geometry_survives_training_and_synthesis(tmp_path, tiny_run):
    pairs = [_oblique_pair(s) for s in (0, 1)]
    images, labels = [p[0] for p in pairs], [p[1] for p in pairs]
    run = tiny_run(tmp_path / "run", model="pix2pix3d", task="label2image", steps=2,
                   preview_every=2)
    events = list(Trainer(run, images=images, labels=labels).run())
    preview = [e for e in events if isinstance(e, ev.PreviewEvent)][-1].volumes[0]
    np.testing.assert_allclose(preview.spacing, images[0].spacing, atol=1e-9)
    np.testing.assert_allclose(preview.direction, images[0].direction, atol=1e-9)

    loaded = load_generator(tmp_path / "run")
    result = synthesize_from(loaded, labels[1])
    path = save_volume(result, tmp_path / "synthetic.nii.gz")
    back = load_volume(path)
    assert back.shape == labels[1].shape
    np.testing.assert_allclose(back.spacing, labels[1].spacing, atol=1e-4)
    np.testing.assert_allclose(back.origin, labels[1].origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, labels[1].direction, atol=1e-5)
    # Voxel (k, j, i) of the output sits at the same millimetre as in the condition.
    probe = np.array([5, 7, 3, 1.0])
    np.testing.assert_allclose(back.affine_lps() @ probe, labels[1].affine_lps() @ probe,
                               atol=1e-3)


def test_superres_output_lands_on_the_thin_grid_through_a_file(tmp_path, tiny_run):
    """x2 and 1x1x4 super-resolution of an oblique thick-slice volume: the result, written as
    NIfTI and read back, has the thin grid whose voxel centres average to the thick centres."""
    from napari_medgan.data import superres

    img, _ = _oblique_pair(2)
    for factors in ((2, 2, 2), (1, 1, 4)):
        run = tiny_run(tmp_path / f"sr{factors[2]}", model="pix2pix3d", task="superres", steps=1)
        run.model.superres_factors = factors
        list(Trainer(run, images=[img]).run())
        thick = superres.downsample_volume(img, factors)
        result = synthesize_from(load_generator(run.out), thick)
        back = load_volume(save_volume(result, tmp_path / f"sr{factors[2]}.nii.gz"))
        f = np.asarray(factors, dtype=float)
        np.testing.assert_allclose(back.spacing, thick.spacing / f, atol=1e-4)
        np.testing.assert_allclose(back.direction, thick.direction, atol=1e-6)
        assert back.shape == tuple(int(n * k) for n, k in zip(thick.shape, f[::-1]))
        # the first f thin voxels along each axis average (in mm) to the first thick centre
        centre = back.origin + back.direction @ (back.spacing * (f - 1) / 2)
        np.testing.assert_allclose(centre, thick.origin, atol=1e-3)


def test_inpainting_keeps_every_known_voxel_bit_identical(tmp_path, tiny_run):
    image, labels = make_head_phantom((24, 24, 24), seed=4, modality="ct")
    image = image.with_array(image.array.astype(np.int16))  # HU integers, as scanners write
    run = tiny_run(tmp_path / "inp", model="pix2pix3d", task="inpaint", steps=2)
    run.data.preset = "ct"
    list(Trainer(run, images=[image]).run())
    mask = labels.with_array((labels.array == 5).astype(np.uint8), is_label=True)
    result = synthesize_from(load_generator(run.out), image, mask)
    known = mask.array == 0
    assert np.array_equal(result.array[known], image.array[known].astype(np.float32))
    assert not np.array_equal(result.array[~known], image.array[~known])
