"""napari widgets of napari-medgan: "Dataset", "Train GAN" and "Synthesize & Compare".

The classes are loaded on first access, so importing this package (npe2 does it
to find the widgets) loads neither torch nor matplotlib; the widgets themselves
import torch only when they need it.
"""

from __future__ import annotations

import importlib

_CLASSES = {
    "DatasetWidget": "napari_medgan._widgets._dataset",
    "TrainWidget": "napari_medgan._widgets._train",
    "SynthesizeWidget": "napari_medgan._widgets._synthesize",
}

__all__ = list(_CLASSES)


def __getattr__(name: str):
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
