"""Training data: the head-phantom distribution, patch sampling for every task, augmentation.

``phantom`` needs numpy only and is imported here; ``datasets`` and ``augment``
need torch and are loaded on first attribute access, so ``import
napari_medgan.data`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from napari_medgan.data.phantom import (
    HEAD_FOV_MM,
    PHANTOM_LABELS,
    fit_spacing,
    make_head_phantom,
    make_phantom_set,
)

_LAZY = {
    "DiffAugment3D": "napari_medgan.data.augment",
    "TrainingData": "napari_medgan.data.datasets",
    "build_training_data": "napari_medgan.data.datasets",
    "condition_from_volume": "napari_medgan.data.datasets",
    "degrade": "napari_medgan.data.datasets",
    "one_hot": "napari_medgan.data.datasets",
}

__all__ = ["HEAD_FOV_MM", "PHANTOM_LABELS", "fit_spacing", "make_head_phantom",
           "make_phantom_set", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'napari_medgan.data' has no attribute {name!r}")
