"""Turn generator outputs back into volumes: original intensity units, physical geometry."""

from __future__ import annotations

import numpy as np

from napari_medgan.io.volume import Volume
from napari_medgan.tasks import TASKS


def centered_geometry(reference: Volume, shape_zyx) -> dict:
    """Geometry for a grid of ``shape_zyx`` voxels with the reference's spacing and direction,
    centred on the reference's centre. Equal shapes give the reference's geometry exactly."""
    ref_shape = np.asarray(reference.shape[::-1], dtype=float)  # (x, y, z)
    new_shape = np.asarray(tuple(shape_zyx)[::-1], dtype=float)
    if np.array_equal(ref_shape, new_shape):
        return dict(spacing=reference.spacing.copy(), origin=reference.origin.copy(),
                    direction=reference.direction.copy())
    step = reference.direction * reference.spacing[None, :]
    centre = reference.origin + step @ ((ref_shape - 1) / 2)
    origin = centre - step @ ((new_shape - 1) / 2)
    return dict(spacing=reference.spacing.copy(), origin=origin,
                direction=reference.direction.copy())


def reference_from_state(geometry: dict) -> Volume:
    """A zero-cost template volume from a checkpoint's ``geometry`` entry (no voxel memory)."""
    shape = tuple(int(s) for s in geometry["shape"])
    return Volume(np.broadcast_to(np.zeros(1, np.uint8), shape), spacing=geometry["spacing"],
                  origin=geometry["origin"], direction=geometry["direction"],
                  source="reference")


def decode_samples(out, model_cfg, normalizer, reference: Volume, condition=None,
                   condition_normalizer=None, name: str = "synthetic"):
    """Split generator output ``(B, C, D, H, W)`` into volumes.

    Returns ``(images, labels, conditions)``: images in the normalizer's original
    units (e.g. HU); label maps (argmax of the one-hot channels) for joint models;
    the conditions as volumes for conditional models (label maps for label2image).
    """
    task = TASKS[model_cfg.task]
    out = out.detach().float().cpu().numpy()
    images, labels, conditions = [], [], []
    for b in range(out.shape[0]):
        geo = centered_geometry(reference, out.shape[2:])
        img = np.asarray(normalizer.inverse(out[b, 0]), dtype=np.float32)
        images.append(Volume(img, source=f"{name}_{b}", **geo))
        if task.outputs_labels:
            lab = out[b, 1:].argmax(0).astype(np.uint8)
            labels.append(Volume(lab, is_label=True, source=f"{name}_{b}_labels", **geo))
        if condition is not None:
            c = condition[b].detach().float().cpu().numpy()
            if task.condition == "labels":
                conditions.append(Volume(c.argmax(0).astype(np.uint8), is_label=True,
                                         source=f"condition_{b}", **geo))
            else:
                norm = condition_normalizer or normalizer
                conditions.append(Volume(np.asarray(norm.inverse(c[0]), dtype=np.float32),
                                         source=f"condition_{b}", **geo))
    return images, labels, conditions
