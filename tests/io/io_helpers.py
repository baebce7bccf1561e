"""Geometry helpers for the io tests (a plain module so tests can import it)."""

from __future__ import annotations

import numpy as np

from napari_medgan.io import Volume


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z."""
    ax, ay, az = np.deg2rad([ax, ay, az])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: Oblique and right-handed (det +1), as every DICOM series is.
OBLIQUE_RH = rotation(12.0, -25.0, 37.0)
#: Oblique and left-handed (det -1): NIfTI stores that through the qform qfac.
OBLIQUE = OBLIQUE_RH @ np.diag([1.0, -1.0, 1.0])
SPACING = (0.7, 1.3, 2.9)  # anisotropic, (x, y, z)
ORIGIN = (-31.25, 17.5, 102.125)
SHAPE = (9, 12, 14)  # (z, y, x): every axis different so a transposition cannot pass


def assert_same_geometry(a: Volume, b: Volume, tol: float = 1e-4) -> None:
    """Spacing, origin (mm) and direction agree within ``tol``."""
    np.testing.assert_allclose(a.spacing, b.spacing, atol=tol, rtol=0)
    np.testing.assert_allclose(a.origin, b.origin, atol=tol, rtol=0)
    np.testing.assert_allclose(a.direction, b.direction, atol=tol, rtol=0)
    assert a.shape == b.shape
