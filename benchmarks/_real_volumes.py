"""Real volumes for the quality benchmark, all read from files installed on this machine.

``t1``
    nibabel's ``anatomical.nii``: one real T1 head, 33 x 41 x 25 voxels of 2 mm, shipped
    with nibabel (a dependency). Tiny: a training half holds about 17 000 voxels.
``mni``
    The ICBM 2009a nonlinear symmetric MNI152 template (Fonov et al., NeuroImage 2011) and
    its grey- and white-matter probability maps, 1 mm, as shipped inside the nilearn wheel
    (``nilearn/datasets/data``). nilearn is never imported, only its data files read, so
    ``pip install --no-deps nilearn`` is enough (11 MB, no network at run time). Box-averaged
    to 2 mm (98 x 116 x 94 voxels) with the same operator as the super-resolution data, and
    labelled in 4 classes from its tissue maps: 0 air, 1 other head tissue (scalp, skull,
    CSF), 2 grey matter, 3 white matter (the larger probability, where it is >= 0.5). An
    average of 152 brains: real anatomy and contrast, smoother and less noisy than one scan.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

VOLUMES = ("t1", "mni")
_MNI = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def nilearn_data_dir() -> Path | None:
    """nilearn's packaged data folder, found without importing nilearn; None if absent."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if (folder / _MNI.format("t1")).is_file() else None


def load_t1(volume_path: str | None = None, labels_path: str | None = None):
    """nibabel's real T1 (or ``volume_path``) and its label map (``labels_path``, or the
    4-class multi-Otsu stand-in :func:`napari_medgan.evaluation.tissue_labels`)."""
    from napari_medgan._sample_data import t1_path
    from napari_medgan.evaluation import tissue_labels
    from napari_medgan.io import load_volume

    path = volume_path or t1_path()
    image = load_volume(path, is_label=False)
    labels = load_volume(labels_path, is_label=True) if labels_path else tissue_labels(image)
    return image, labels


def load_mni(resolution: int = 2):
    """The MNI152 2009a template at ``resolution`` mm and its 4-class tissue label map (see
    the module docstring). Raises FileNotFoundError naming the install command when nilearn's
    data files are not there."""
    from napari_medgan.data.datasets import foreground
    from napari_medgan.data.superres import downsample_volume
    from napari_medgan.io import load_volume

    folder = nilearn_data_dir()
    if folder is None:
        raise FileNotFoundError("mni: the MNI152 template ships inside nilearn's wheel; "
                                "install its files with `.venv/bin/pip install --no-deps "
                                "nilearn`")
    f = (int(resolution),) * 3
    t1, gm, wm = (downsample_volume(load_volume(folder / _MNI.format(name), is_label=False), f)
                  for name in ("t1", "gm", "wm"))
    image = t1.with_array(np.asarray(t1.array, np.float32), source="mni152_2009a")
    gm_p, wm_p = (np.asarray(v.array, np.float32) / 255.0 for v in (gm, wm))
    labels = np.zeros(image.shape, np.uint8)
    labels[foreground(image.array)] = 1  # the head: what the trainer counts as tissue
    labels[(gm_p >= 0.5) & (gm_p >= wm_p)] = 2
    labels[(wm_p >= 0.5) & (wm_p > gm_p)] = 3
    return image, image.with_array(labels, is_label=True, source="mni152_2009a_tissue")


def load_real(name: str, volume_path: str | None = None, labels_path: str | None = None):
    """``(image, labels)`` of the real volume ``name`` (one of :data:`VOLUMES`)."""
    if name == "t1":
        return load_t1(volume_path, labels_path)
    if name == "mni":
        return load_mni()
    raise ValueError(f"volume: expected one of {VOLUMES}, got {name!r}")
