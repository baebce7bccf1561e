"""npe2 single-layer writers: save an Image or Labels layer as a medical volume.

npe2 calls ``writer(path: str, data: Any, attributes: dict) -> list[str]``
with the layer's ``as_layer_data_tuple()`` data and attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_medgan.io.paths import volume_suffix
from napari_medgan.io.volume import Volume
from napari_medgan.io.writers import save_volume

#: Suffix added when the path has none.
DEFAULT_SUFFIX = ".nii.gz"


def _layer_volume(data: Any, attributes: dict, is_label: bool) -> Volume:
    """Rebuild the Volume from layer data; exact geometry from metadata when present."""
    if isinstance(data, (list, tuple)):  # multiscale: the full-resolution level
        data = data[0]
    return Volume.from_layer_data(
        data,
        attributes.get("metadata"),
        attributes.get("scale"),
        attributes.get("translate"),
        attributes.get("affine"),
        is_label=is_label,
        name=attributes.get("name"),
    )


def _write(path: str, data: Any, attributes: dict, is_label: bool) -> list[str]:
    target = Path(path)
    if volume_suffix(target) is None and not target.suffix:
        target = target.with_name(target.name + DEFAULT_SUFFIX)
    return [str(save_volume(_layer_volume(data, attributes, is_label), target))]


def write_image(path: str, data: Any, attributes: dict) -> list[str]:
    """Save an Image layer to ``.nii.gz`` (default), ``.nii``, ``.nrrd`` or ``.mha``.

    Parameters
    ----------
    path : str
        Target file; ``.nii.gz`` is appended when it has no suffix.
    data : array-like
        Layer data ``(z, y, x)``.
    attributes : dict
        Layer attributes (``metadata``, ``scale``, ``translate``, ``affine``, ``name``).

    Returns
    -------
    list of str
        The written path.
    """
    return _write(path, data, attributes, is_label=False)


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """Save a Labels layer (integer dtype kept); same arguments as :func:`write_image`."""
    return _write(path, data, attributes, is_label=True)
