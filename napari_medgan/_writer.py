"""npe2 single-layer writers: save an Image or Labels layer as a medical volume.

npe2 calls ``writer(path: str, data: Any, attributes: dict) -> list[str]``
with the layer's ``as_layer_data_tuple()`` data and attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari_medgan.io.paths import volume_suffix
from napari_medgan.io.segments import default_segment
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


def _layer_segments(attributes: dict) -> list[dict] | None:
    """Segments from a Labels layer's ``features`` (``index`` and ``name`` columns) and its
    direct colormap, so names edited in napari reach a ``.seg.nrrd``; None when it has none."""
    features = attributes.get("features")
    if features is None or "index" not in features or "name" not in features:
        return None
    colors = getattr(attributes.get("colormap"), "color_dict", {}) or {}
    segments = []
    for value, name in zip(features["index"], features["name"]):
        if int(value) == 0:
            continue
        segment = default_segment(int(value))
        segment["name"] = str(name)
        if int(value) in colors:
            segment["color"] = [float(c) for c in list(colors[int(value)])[:3]]
        segments.append(segment)
    return segments or None


def _write(path: str, data: Any, attributes: dict, is_label: bool) -> list[str]:
    target = Path(path)
    if volume_suffix(target) is None and not target.suffix:
        target = target.with_name(target.name + DEFAULT_SUFFIX)
    volume = _layer_volume(data, attributes, is_label)
    segments = _layer_segments(attributes) if is_label else None
    if segments:
        volume.meta["segments"] = segments
    return [str(save_volume(volume, target))]


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
