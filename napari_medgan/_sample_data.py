"""npe2 sample data (File > Open Sample > napari-medgan).

Each command returns napari layer data tuples ``(data, kwargs, layer_type)``.
Geometry travels as the layer's ``scale``/``translate`` (and ``affine`` for
non-axis-aligned volumes) from :meth:`Volume.to_layer_kwargs`, so samples sit
in LPS millimetres like every volume the plugin opens. Nothing is downloaded:
the phantoms are generated, the T1 ships inside nibabel.
"""

from __future__ import annotations

import os

import numpy as np

from napari_medgan.data.phantom import PHANTOM_LABELS, make_head_phantom
from napari_medgan.io.volume import Volume
from napari_medgan.provenance import PROVENANCE_KEY, make_provenance

#: A generated phantom is no patient scan, but it is the data the demo's GANs imitate: for the
#: reader study and set metrics it stands on the real side (the source says it is a phantom).
PHANTOM = make_provenance("real", source="head phantom (generated, seed 0)")

#: Sample grid edge (voxels): 96^3 at 230/96 = 2.4 mm is generated in well under a second
#: and shows cortical folds.
SAMPLE_SIZE = 96
#: CT display window (HU): a slightly widened brain window; the skull shows as white.
CT_WINDOW = (-20.0, 100.0)


def _robust_limits(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> list[float]:
    lo, hi = (float(v) for v in np.percentile(array, [low, high]))
    return [lo, hi if hi > lo else lo + 1.0]


def _image(volume: Volume, name: str, contrast_limits, provenance: dict) -> tuple:
    kwargs = volume.to_layer_kwargs()
    kwargs["metadata"][PROVENANCE_KEY] = dict(provenance)
    kwargs.update(name=name, colormap="gray", contrast_limits=list(contrast_limits))
    return volume.array, kwargs, "image"


def _labels(volume: Volume, name: str) -> tuple:
    kwargs = volume.to_layer_kwargs()
    kwargs["metadata"][PROVENANCE_KEY] = dict(PHANTOM)
    kwargs["metadata"]["label_names"] = dict(PHANTOM_LABELS)
    # shown in the status bar when hovering over a label
    kwargs.update(name=name, opacity=0.35, features={
        "index": list(PHANTOM_LABELS), "tissue": list(PHANTOM_LABELS.values())})
    return volume.array, kwargs, "labels"


def make_phantom_sample() -> list[tuple]:
    """T1-like MR head phantom (96^3, 2.4 mm, seed 0, with a lesion) and its tissue labels."""
    image, labels = make_head_phantom((SAMPLE_SIZE,) * 3, seed=0, lesion=True, modality="mr")
    return [_image(image, "head phantom (MR)", _robust_limits(image.array), PHANTOM),
            _labels(labels, "head phantom labels")]


def make_phantom_ct_sample() -> list[tuple]:
    """The same head as the MR sample, as CT in Hounsfield units, and its tissue labels."""
    image, labels = make_head_phantom((SAMPLE_SIZE,) * 3, seed=0, lesion=True, modality="ct")
    return [_image(image, "head phantom (CT, HU)", CT_WINDOW, PHANTOM),
            _labels(labels, "head phantom labels")]


def t1_path() -> str:
    """Path of the real T1 head that ships with nibabel (``anatomical.nii``: 33x41x25, 2 mm,
    LAS): the sample, the learning tests and ``benchmarks/quality.py`` read this one file."""
    import nibabel.testing

    return os.path.join(nibabel.testing.data_path, "anatomical.nii")


def make_t1_sample() -> list[tuple]:
    """The real T1 head that ships with nibabel (see :func:`t1_path`)."""
    from napari_medgan.io import load_volume

    path = t1_path()
    volume = load_volume(path, is_label=False)
    return [_image(volume, "T1 head (nibabel anatomical.nii)", _robust_limits(volume.array),
                   make_provenance("real", source=path))]


def make_pretrained_sample() -> list[tuple]:
    """A head drawn by the pretrained model that ships with the plugin (seed 0): the
    synthetic image and its tissue label map, on the phantom's 64^3 grid. Open
    *Synthesize & Compare* to draw more (it starts with this model chosen)."""
    from napari_medgan._reader import volume_to_layer_data
    from napari_medgan.pretrained import PRETRAINED_HEAD
    from napari_medgan.training.inference import generate, load_generator

    loaded = load_generator(PRETRAINED_HEAD, device="cpu")
    (image,), (labels,) = generate(loaded, 1, seed=0)
    drawn = make_provenance("synthetic", model=PRETRAINED_HEAD.name, step=loaded.step, seed=0)
    return [_image(image, "synthetic head (pretrained, seed 0)", _robust_limits(image.array),
                   drawn),
            volume_to_layer_data(labels, "synthetic head labels", provenance=drawn)]
