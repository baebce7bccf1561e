"""Named, coloured segments of a label map, as 3D Slicer stores them in ``.seg.nrrd``.

A Slicer segmentation is a NRRD label map whose header carries, for segment ``i``,
``Segment{i}_Name``, ``Segment{i}_Color`` (``"r g b"`` in 0..1), ``Segment{i}_LabelValue``,
``Segment{i}_Layer`` (0 for a 3D file), ``Segment{i}_ID`` and ``Segment{i}_Extent``, plus
``Segmentation_*`` fields. SimpleITK parses the header; this module only maps those
key/value pairs to and from a list of segments, which travels in ``Volume.meta["segments"]``
(``[{"value": 1, "name": "liver", "color": [r, g, b]}, ...]``), in napari layer metadata,
and into exported datasets.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

#: Distinct colours for segments that come without one (Slicer's defaults are similar).
PALETTE = (
    (0.50, 0.68, 0.50), (0.95, 0.84, 0.57), (0.69, 0.48, 0.39), (0.44, 0.72, 0.82),
    (0.85, 0.40, 0.40), (0.56, 0.49, 0.80), (0.90, 0.62, 0.30), (0.40, 0.60, 0.90),
    (0.80, 0.80, 0.40), (0.60, 0.35, 0.60),
)
_KEY = re.compile(r"^Segment(\d+)_(\w+)$")


def default_segment(value: int) -> dict:
    return {"value": int(value), "name": f"Segment_{int(value)}",
            "color": list(PALETTE[(int(value) - 1) % len(PALETTE)])}


def segments_from_header(fields: Mapping[str, str]) -> list[dict]:
    """Segments of a ``.seg.nrrd`` header (``{key: value}`` as SimpleITK gives them), sorted by
    label value; ``[]`` when the header has none. Entries that cannot be parsed fall back to
    the defaults rather than failing the read (the voxels are what matter)."""
    found: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        match = _KEY.match(key)
        if match:
            found.setdefault(int(match.group(1)), {})[match.group(2)] = value.strip()
    segments = []
    for index in sorted(found):
        entry = found[index]
        try:
            value = int(entry.get("LabelValue", index + 1))
        except ValueError:
            value = index + 1
        segment = default_segment(value)
        if entry.get("Name"):
            segment["name"] = entry["Name"]
        try:
            rgb = [float(c) for c in entry.get("Color", "").split()]
            if len(rgb) == 3 and all(0.0 <= c <= 1.0 for c in rgb):
                segment["color"] = rgb
        except ValueError:
            pass
        segments.append(segment)
    return sorted(segments, key=lambda s: s["value"])


def segments_for(array: np.ndarray, known: Iterable[Mapping] | None) -> list[dict]:
    """The segments to write for a label map: ``known`` ones, plus a default for every other
    non-zero value present in ``array``."""
    by_value = {int(s["value"]): dict(s) for s in (known or [])}
    for value in np.unique(array):
        if value != 0 and int(value) not in by_value:
            by_value[int(value)] = default_segment(int(value))
    return [by_value[v] for v in sorted(by_value)]


def segments_to_header(segments: list[Mapping], shape_zyx: tuple[int, int, int]) -> dict[str, str]:
    """``.seg.nrrd`` header fields for a 3D label map of ``shape_zyx`` (one layer)."""
    z, y, x = (int(s) for s in shape_zyx)
    fields = {
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for i, segment in enumerate(segments):
        prefix = f"Segment{i}_"
        fields[prefix + "ID"] = f"Segment_{int(segment['value'])}"
        fields[prefix + "Name"] = str(segment["name"])
        fields[prefix + "Color"] = " ".join(f"{float(c):.6g}" for c in segment["color"])
        fields[prefix + "LabelValue"] = str(int(segment["value"]))
        fields[prefix + "Layer"] = "0"
        fields[prefix + "Extent"] = f"0 {x - 1} 0 {y - 1} 0 {z - 1}"
    return fields


def class_segments(num_classes: int, known: object = None,
                   names: Mapping[int, str] | None = None) -> list[dict]:
    """One segment for each label value ``1 .. num_classes - 1``: from ``known`` (a list of
    segments, e.g. a checkpoint's; malformed entries are ignored, as it may be damaged),
    else named from ``names``, else the default name and colour."""
    found: dict[int, dict] = {}
    for entry in known if isinstance(known, list) else []:
        try:
            value, name = int(entry["value"]), str(entry["name"])
            color = [float(c) for c in entry["color"]][:3]
        except (TypeError, KeyError, ValueError):
            continue
        if 0 < value < num_classes and len(color) == 3:
            found[value] = {"value": value, "name": name, "color": color}
    out = []
    for value in range(1, int(num_classes)):
        segment = found.get(value) or default_segment(value)
        if value not in found and names and value in names:
            segment["name"] = str(names[value])
        out.append(segment)
    return out


def label_names(segments: Iterable[Mapping]) -> dict[int, str]:
    """``{value: name}`` with background 0 (for nnU-Net's ``dataset.json`` and tooltips)."""
    return {0: "background", **{int(s["value"]): str(s["name"]) for s in segments}}
