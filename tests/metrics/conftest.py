"""Shared volumes for the metric tests: small head phantoms (smooth random volumes as fallback)."""

from __future__ import annotations

import numpy as np
import pytest


def _smooth_random(shape, seed, modality):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    vol = gaussian_filter(rng.normal(size=shape), 2.0)
    vol = (vol - vol.min()) / np.ptp(vol)
    return (vol * 2000 - 1000 if modality == "ct" else vol).astype(np.float32)


def phantom(shape=(32, 32, 32), seed=0, modality="mr") -> np.ndarray:
    """Image array (z, y, x) of a head phantom (a smooth random volume without data.phantom)."""
    try:
        from napari_medgan.data.phantom import make_head_phantom
    except ImportError:  # pragma: no cover - only while data/phantom.py is being written
        return _smooth_random(shape, seed, modality)
    return make_head_phantom(shape, seed=seed, modality=modality)[0].array.astype(np.float32)


@pytest.fixture(scope="session")
def make_phantom():
    """The :func:`phantom` factory, for tests that need other shapes/seeds/modalities."""
    return phantom


@pytest.fixture(scope="session")
def real_set():
    """Five 32^3 MR phantoms (seeds 0-4): the 'training' set."""
    return [phantom(seed=s) for s in range(5)]


@pytest.fixture(scope="session")
def other_set():
    """Five more 32^3 MR phantoms from the same distribution (seeds 10-14)."""
    return [phantom(seed=s) for s in range(10, 15)]
