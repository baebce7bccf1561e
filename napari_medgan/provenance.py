"""Where a layer's voxels come from: its *provenance*, stamped in the layer's metadata.

Every layer the plugin creates carries ``metadata["medgan_provenance"]``, a small dict::

    {"kind": "synthetic", "model": "runs/head", "step": 1200, "seed": 0}

``kind`` is one of

``real``
    Read from a file (the npe2 reader), or a phantom / shipped scan opened as sample data:
    the data a generator imitates.
``synthetic``
    Drawn by a generator (Synthesize & Compare, the Train dock's preview, the pretrained
    sample).
``derived``
    Computed from other data but neither a scan nor a GAN sample: a classical baseline
    (trilinear upsampling, non-local means...), a training patch cut by the Dataset dock.

The Reader Study and Set metrics decide "real or synthetic" from this record, never from
layer names. A layer without a record counts as real only when napari read it from a file
(``layer.source.path``), else it is ``unknown`` and left out until the user assigns it.
Older sessions marked synthetic layers with ``metadata["medgan_synthetic"]`` (a dict, with a
``"baseline"`` field for classical baselines) and baselines with
``medgan_meta["medgan_provenance"] = "baseline"``: both are still read.

No Qt and no napari here: layers are read by attribute (``metadata``, ``source``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROVENANCE_KEY = "medgan_provenance"
#: Marker of synthetic layers before provenance records (still written by Synthesize).
LEGACY_SYNTHETIC_KEY = "medgan_synthetic"
KINDS = ("real", "synthetic", "derived")
#: What a layer is for the reader study and set metrics: a kind, or "unknown".
CLASSES = (*KINDS, "unknown")
_FIELDS = ("model", "step", "seed", "source", "method", "assigned")


def make_provenance(kind: str, **fields: Any) -> dict:
    """A provenance record: ``kind`` plus the known fields among ``model``, ``step``,
    ``seed``, ``source``, ``method`` (a baseline's name) and ``assigned`` (who decided).

    Raises
    ------
    ValueError
        ``kind`` not in :data:`KINDS`, or an unknown field.
    """
    if kind not in KINDS:
        raise ValueError(f"provenance kind: expected one of {KINDS}, got {kind!r}")
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise ValueError(f"provenance: unknown field(s) {unknown}; expected {_FIELDS}")
    record = {"kind": kind}
    for key in _FIELDS:
        value = fields.get(key)
        if value is not None:
            record[key] = value if isinstance(value, (int, float, bool)) else str(value)
    return record


def provenance_metadata(kind: str, **fields: Any) -> dict:
    """``{"medgan_provenance": record}``: merge it into a layer's ``metadata``."""
    return {PROVENANCE_KEY: make_provenance(kind, **fields)}


def stamp(metadata: dict, kind: str, **fields: Any) -> dict:
    """Set the provenance record in ``metadata`` (in place) and return ``metadata``."""
    metadata[PROVENANCE_KEY] = make_provenance(kind, **fields)
    return metadata


def _parse(value: Any) -> dict | None:
    if isinstance(value, Mapping) and value.get("kind") in KINDS:
        return dict(value)
    if value == "baseline":  # evaluation.py before provenance records
        return {"kind": "derived", "method": "baseline"}
    if isinstance(value, str) and value in KINDS:
        return {"kind": value}
    return None


def read_provenance(metadata: Mapping | None) -> dict | None:
    """The provenance record in a layer's (or a Volume's) metadata, or None.

    Looks at ``medgan_provenance``, then the Volume metadata napari layers carry
    (``medgan_meta``), then the legacy ``medgan_synthetic`` marker.
    """
    metadata = metadata or {}
    record = _parse(metadata.get(PROVENANCE_KEY))
    if record is None:
        inner = metadata.get("medgan_meta")
        record = _parse(inner.get(PROVENANCE_KEY)) if isinstance(inner, Mapping) else None
    if record is not None:
        return record
    legacy = metadata.get(LEGACY_SYNTHETIC_KEY)
    if isinstance(legacy, Mapping):
        if "baseline" in legacy:
            return make_provenance("derived", method=legacy.get("baseline"),
                                   model=legacy.get("checkpoint"), step=legacy.get("step"))
        return make_provenance("synthetic", model=legacy.get("checkpoint"),
                               step=legacy.get("step"), seed=legacy.get("seed"))
    if legacy:
        return {"kind": "synthetic"}
    return None


def layer_file(layer: Any) -> str | None:
    """The file napari read ``layer`` from (``layer.source.path``), or None."""
    path = getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path else None


def layer_provenance(layer: Any) -> dict | None:
    """The layer's provenance record; a layer read from a file without one is real."""
    record = read_provenance(getattr(layer, "metadata", None))
    if record is None and layer_file(layer):
        return {"kind": "real", "source": layer_file(layer)}
    return record


def layer_class(layer: Any) -> str:
    """``"real"``, ``"synthetic"``, ``"derived"`` or ``"unknown"`` (see the module doc)."""
    record = layer_provenance(layer)
    return record["kind"] if record else "unknown"


def describe_provenance(record: Mapping | None) -> str:
    """One short line for the set-up tables: ``synthetic: step 1200, seed 0 (runs/head)``."""
    if not record:
        return "unknown: no provenance, not read from a file"
    parts = []
    if record.get("method"):
        parts.append(str(record["method"]))
    for key in ("step", "seed"):
        if record.get(key) is not None:
            parts.append(f"{key} {record[key]}")
    where = record.get("model") or record.get("source")
    text = f"{record['kind']}: " + ", ".join(parts) if parts else str(record["kind"])
    if where:
        text += f" ({where})"
    if record.get("assigned"):
        text += f" [assigned by {record['assigned']}]"
    return text
