"""npe2 readers: NIfTI, NRRD, MetaImage and DICOM series as geometry-true napari layers; model
bundles (folder or ``.zip``) into the Synthesize & Compare dock.

Layers are placed in LPS millimetres (world axes z, y, x) by
:meth:`Volume.to_layer_kwargs`; the exact geometry also travels in the layer
metadata so that saving writes it back unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_medgan.io.paths import DICOM_SUFFIX, is_supported_path, volume_stem, volume_suffix
from napari_medgan.io.readers import dicom_series_files, load_volume
from napari_medgan.io.segments import label_names
from napari_medgan.io.volume import Volume
from napari_medgan.provenance import PROVENANCE_KEY, make_provenance, read_provenance

#: Soft-tissue CT window (level 40, width 400 HU): shows brain, muscle and fat at once.
CT_WINDOW = (-160.0, 240.0)

LayerData = tuple[Any, dict, str]


def napari_get_reader(path: str | Sequence[str]) -> Callable[..., list[LayerData]] | None:
    """Return a reader function when every path is a volume file or DICOM folder, else None.

    The manifest claims every name (``*``) so that DICOM folders and extension-less
    DICOM files reach us; this function is where unsupported paths are refused.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or not all(isinstance(p, (str, Path)) and is_supported_path(p) for p in paths):
        return None
    return read_volumes


def napari_get_bundle_reader(path: str | Sequence[str]) -> Callable[..., list] | None:
    """Return :func:`open_bundle` for a model bundle (a folder or ``.zip`` written by
    ``napari-medgan export-model``), else None. A bundle holds a model, not an image: it
    opens in the Synthesize & Compare dock instead of becoming a layer."""
    from napari_medgan.training.bundle import is_bundle

    if not isinstance(path, (str, Path)) or not is_bundle(path):
        return None
    return open_bundle


def open_bundle(path: str | Sequence[str]) -> list:
    """Load the bundle at ``path`` into the current viewer's Synthesize & Compare dock
    (opened when needed) and return ``[(None,)]``: napari's sign of a read that succeeded
    without adding layers."""
    import napari

    from napari_medgan._widgets._synthesize import open_model_in_dock

    path = path if isinstance(path, (str, Path)) else path[0]
    viewer = napari.current_viewer()
    if viewer is None or getattr(viewer, "window", None) is None:
        raise ValueError(f"{path}: a model bundle opens in the Synthesize & Compare dock of a "
                         "napari window; none is open")
    open_model_in_dock(viewer, path)
    return [(None,)]


def _contrast_limits(volume: Volume) -> tuple[float, float]:
    """Soft-tissue window for CT (modality tag, or air near -1000 HU); else 0.5-99.5 percentiles."""
    flat = np.asarray(volume.array).ravel()
    sample = flat[:: max(1, flat.size // 1_000_000)].astype(np.float64)
    lo, hi = float(sample.min()), float(sample.max())
    looks_ct = volume.meta.get("modality", "").upper() == "CT" or (lo <= -900.0 and hi >= 100.0)
    if looks_ct:
        return CT_WINDOW
    p_lo, p_hi = (float(v) for v in np.percentile(sample, (0.5, 99.5)))
    if not p_hi > p_lo:  # constant or nearly binary data: fall back to the full range
        p_lo, p_hi = lo, hi if hi > lo else lo + 1.0
    return p_lo, p_hi


def volume_to_layer_data(volume: Volume, name: str | None = None,
                         provenance: dict | None = None) -> LayerData:
    """``(data, kwargs, layer_type)`` for napari from a Volume; ``provenance`` (a record of
    :mod:`napari_medgan.provenance`) goes into the layer metadata."""
    kwargs = volume.to_layer_kwargs()
    if provenance is not None:
        kwargs["metadata"][PROVENANCE_KEY] = provenance
    kwargs["name"] = name or (volume_stem(volume.source) if volume.source else "volume")
    if volume.is_label:
        segments = volume.meta.get("segments")
        if segments:  # a Slicer segmentation: its colours, and names shown under the cursor
            from napari.utils.colormaps import DirectLabelColormap

            colors = {None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0)}
            colors.update({int(s["value"]): (*s["color"], 1.0) for s in segments})
            kwargs["colormap"] = DirectLabelColormap(color_dict=colors)
            names = label_names(segments)
            kwargs["features"] = {"index": list(names), "name": list(names.values())}
        return volume.array, kwargs, "labels"
    kwargs["colormap"] = "gray"
    kwargs["contrast_limits"] = _contrast_limits(volume)
    return volume.array, kwargs, "image"


def read_volumes(path: str | Sequence[str]) -> list[LayerData]:
    """Read each path into one layer; several ``.dcm`` files of one series give one layer.

    Errors are :class:`~napari_medgan.io.volume.VolumeError` (or FileNotFoundError)
    with one line naming the file; napari wraps them in a ``ReaderPluginError``
    and shows them as a notification.
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers: list[LayerData] = []
    seen_dicom: set[Path] = set()
    manifests: dict[Path, dict] = {}
    for p in paths:
        p = Path(p)
        if not p.is_dir() and volume_suffix(p) == DICOM_SUFFIX:
            if p.resolve() in seen_dicom:
                continue
            seen_dicom.update(Path(f).resolve() for f in dicom_series_files(p))
        volume = load_volume(p)
        layers.append(volume_to_layer_data(volume, provenance=file_provenance(p, manifests)))
    return layers


def file_provenance(path: Path, manifests: dict[Path, dict] | None = None) -> dict:
    """A file is real, unless the ``synthetic.json`` manifest that "Save all synthetic"
    writes beside it lists it: then it is what the manifest says (synthetic, its model).
    ``manifests`` caches each folder's manifest (file name -> its provenance entry) when
    several files of one folder are read."""
    manifests = {} if manifests is None else manifests
    if path.parent not in manifests:
        manifests[path.parent] = _manifest(path.parent)
    listed = manifests[path.parent]
    if path.name in listed:
        written = listed[path.name]
        record = read_provenance({PROVENANCE_KEY: written}) or \
            read_provenance({"medgan_synthetic": written or True})
        return {**record, "source": str(path)}
    return make_provenance("real", source=str(path))


def _manifest(folder: Path) -> dict:
    """``synthetic.json`` in ``folder`` as {file name: provenance entry}; {} if none."""
    import json

    try:
        entries = json.loads((folder / "synthetic.json").read_text())
    except (OSError, ValueError):
        return {}
    return {e["file"]: e.get("provenance") for e in entries if isinstance(e, dict) and
            "file" in e} if isinstance(entries, list) else {}
