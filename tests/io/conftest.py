"""Small volumes with awkward geometry, shared by the io tests."""

from __future__ import annotations

import numpy as np
import pytest
from io_helpers import OBLIQUE, ORIGIN, SHAPE, SPACING

from napari_medgan.io import Volume


@pytest.fixture
def oblique_image() -> Volume:
    """float32 image with unique-ish values and an oblique, anisotropic, left-handed grid."""
    rng = np.random.default_rng(1)
    array = rng.normal(100.0, 40.0, size=SHAPE).astype(np.float32)
    return Volume(array, spacing=SPACING, origin=ORIGIN, direction=OBLIQUE, source="oblique")


@pytest.fixture
def oblique_labels() -> Volume:
    """uint8 label map (values 0..6) on the same oblique grid."""
    rng = np.random.default_rng(2)
    array = rng.integers(0, 7, size=SHAPE).astype(np.uint8)
    return Volume(array, spacing=SPACING, origin=ORIGIN, direction=OBLIQUE, is_label=True)
