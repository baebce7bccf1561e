"""The one volume type of the package: a 3D array with its physical geometry.

Conventions (the only place they are defined)
---------------------------------------------
* ``array`` is indexed ``(z, y, x)`` -- numpy/napari order, the order of
  ``SimpleITK.GetArrayFromImage``. Axis 0 is the slowest-varying file axis (k),
  axis 2 the fastest (i).
* ``spacing``, ``origin`` and ``direction`` follow ITK: they are given in
  **(x, y, z) = (i, j, k) order** and in the **LPS** patient frame
  (x grows to the patient's Left, y to Posterior, z to Superior).
  ``direction`` is a 3x3 matrix whose *column* ``c`` is the unit LPS vector of
  voxel axis ``c`` (i, j, k); ``origin`` is the LPS position (mm) of the centre
  of voxel ``(i, j, k) = (0, 0, 0)``.
* So the physical position of ``array[k, j, i]`` is
  ``origin + direction @ (spacing * (i, j, k))`` (LPS, mm).
* nibabel / NIfTI work in RAS: ``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``.
  :func:`Volume.affine_ras` and :meth:`Volume.from_affine` do this conversion,
  and nothing else in the package should.
* In napari, world axes are ``(z, y, x)`` of LPS, so a layer's ``scale`` is
  ``spacing[::-1]``, its ``translate`` is ``origin[::-1]``, and an oblique
  direction goes into the layer's ``affine`` (see :meth:`napari_affine`).
  With LPS world axes an axial slice shows anterior at the top and the
  patient's left on the right of the screen (radiological convention).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: RAS <-> LPS flip; its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Key under which napari layers carry the exact geometry (see ``to_layer_kwargs``).
GEOMETRY_KEY = "medgan_geometry"


class VolumeError(ValueError):
    """A volume file or array that cannot be used; the message names it and says why."""


def _as_vec3(value: Any, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,):
        raise VolumeError(f"{name} must have 3 components (x, y, z), got {arr.tolist()}")
    if not np.all(np.isfinite(arr)):
        raise VolumeError(f"{name} must be finite, got {arr.tolist()}")
    return arr


@dataclass
class Volume:
    """A 3D image or label map with physical geometry.

    Parameters
    ----------
    array : np.ndarray
        Voxel data, shape ``(Z, Y, X)`` (numpy/napari axis order).
    spacing : sequence of 3 floats
        Voxel size in mm, ITK order ``(x, y, z)``.
    origin : sequence of 3 floats
        LPS position (mm) of the centre of the first voxel, ``(x, y, z)``.
    direction : (3, 3) array
        Columns are the LPS unit vectors of the voxel axes ``i, j, k``.
    is_label : bool
        True for an integer label map (opens as a napari Labels layer).
    source : str or None
        Where the volume was read from, for messages.
    meta : dict
        Format details needed to write the file back (e.g. NIfTI qform/sform
        codes, intensity normalisation that was applied).
    """

    array: np.ndarray
    spacing: Any = (1.0, 1.0, 1.0)
    origin: Any = (0.0, 0.0, 0.0)
    direction: Any = field(default_factory=lambda: np.eye(3))
    is_label: bool = False
    source: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = self.source or "volume"
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise VolumeError(
                f"{name}: expected a 3D volume (z, y, x), got {self.array.ndim}D shape "
                f"{tuple(self.array.shape)}"
            )
        if 0 in self.array.shape:
            raise VolumeError(f"{name}: volume is empty, shape {tuple(self.array.shape)}")
        self.spacing = _as_vec3(self.spacing, f"{name}: spacing")
        if np.any(self.spacing <= 0):
            raise VolumeError(f"{name}: spacing must be positive, got {self.spacing.tolist()}")
        self.origin = _as_vec3(self.origin, f"{name}: origin")
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise VolumeError(f"{name}: direction must be a finite 3x3 matrix")
        if abs(np.linalg.det(direction)) < 1e-6:
            raise VolumeError(f"{name}: direction matrix is singular (det={np.linalg.det(direction):.3g})")
        self.direction = direction

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(Z, Y, X)``."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    def affine_lps(self) -> np.ndarray:
        """4x4 voxel ``(i, j, k, 1)`` -> LPS mm affine."""
        aff = np.eye(4)
        aff[:3, :3] = self.direction * self.spacing[None, :]
        aff[:3, 3] = self.origin
        return aff

    def affine_ras(self) -> np.ndarray:
        """4x4 voxel ``(i, j, k, 1)`` -> RAS mm affine (the NIfTI/nibabel convention)."""
        return LPS_TO_RAS @ self.affine_lps()

    @classmethod
    def from_affine(
        cls, array: np.ndarray, affine: np.ndarray, convention: str = "RAS", **kwargs: Any
    ) -> "Volume":
        """Build from a ``(Z, Y, X)`` array and a voxel ``(i, j, k)`` -> mm affine.

        ``convention`` says whether ``affine`` maps to RAS (nibabel) or LPS (ITK).
        """
        affine = np.asarray(affine, dtype=np.float64)
        name = kwargs.get("source") or "volume"
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise VolumeError(f"{name}: affine must be a finite 4x4 matrix")
        if convention.upper() == "RAS":
            affine = LPS_TO_RAS @ affine
        elif convention.upper() != "LPS":
            raise VolumeError(f"convention must be 'RAS' or 'LPS', got {convention!r}")
        linear = affine[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing < 1e-9) or abs(np.linalg.det(linear)) < 1e-12:
            raise VolumeError(f"{name}: affine is singular, cannot derive spacing/direction")
        return cls(
            array, spacing=spacing, origin=affine[:3, 3], direction=linear / spacing, **kwargs
        )

    def is_oblique(self, tol: float = 1e-6) -> bool:
        """True when the direction is not a signed permutation-free identity (needs an affine in napari)."""
        return not np.allclose(self.direction, np.eye(3), atol=tol)

    # -------------------------------------------------------------- napari glue
    def napari_scale(self) -> tuple[float, float, float]:
        """Layer ``scale`` in napari ``(z, y, x)`` order (mm)."""
        return tuple(float(v) for v in self.spacing[::-1])  # type: ignore[return-value]

    def napari_translate(self) -> tuple[float, float, float]:
        """Layer ``translate`` in napari ``(z, y, x)`` order (LPS mm)."""
        return tuple(float(v) for v in self.origin[::-1])  # type: ignore[return-value]

    def napari_affine(self) -> np.ndarray:
        """Rotation part for napari, as a 4x4 in ``(z, y, x)`` order.

        napari composes ``affine @ (translate + scale * index)``; we put the
        scale and origin into ``scale``/``translate`` and only the direction
        here, so for a non-oblique volume this is the identity. Because the
        rotation is applied after the translation, the translation must be
        expressed in the rotated frame: see :meth:`to_layer_kwargs`.
        """
        perm = np.eye(3)[::-1]  # (x, y, z) <-> (z, y, x)
        aff = np.eye(4)
        aff[:3, :3] = perm @ self.direction @ perm
        return aff

    def geometry_dict(self) -> dict:
        """JSON-friendly geometry (ITK order, LPS)."""
        return {
            "spacing": [float(v) for v in self.spacing],
            "origin": [float(v) for v in self.origin],
            "direction": [[float(v) for v in row] for row in self.direction],
            "convention": "LPS, (x, y, z); array (z, y, x)",
        }

    def to_layer_kwargs(self) -> dict:
        """Keyword arguments for ``napari.layers.Image/Labels`` that place this volume in LPS mm.

        The exact geometry also travels in ``metadata[GEOMETRY_KEY]`` so the
        writer can put it back bit-for-bit.
        """
        rot = self.napari_affine()
        translate = np.asarray(self.napari_translate())
        if self.is_oblique():
            # world = R @ (t + s * idx) must equal origin + R @ (s * idx)  =>  t = R^-1 @ origin
            translate = np.linalg.solve(rot[:3, :3], translate)
        kwargs = {
            "scale": self.napari_scale(),
            "translate": tuple(float(v) for v in translate),
            "units": ("mm", "mm", "mm"),  # napari's axes and scale bar say millimetres
            "metadata": {GEOMETRY_KEY: self.geometry_dict(), "medgan_meta": dict(self.meta)},
        }
        if self.source:
            kwargs["metadata"]["source"] = self.source
        if self.is_oblique():
            kwargs["affine"] = rot
        return kwargs

    @classmethod
    def from_layer_data(
        cls,
        data: np.ndarray,
        metadata: dict | None = None,
        scale: Any = None,
        translate: Any = None,
        affine: Any = None,
        is_label: bool = False,
        name: str | None = None,
    ) -> "Volume":
        """Rebuild a volume from a napari layer's data and attributes.

        Prefers the exact geometry stored in ``metadata[GEOMETRY_KEY]``;
        otherwise derives it from napari's ``scale``, ``translate`` and
        ``affine`` (all in ``(z, y, x)`` order).
        """
        metadata = metadata or {}
        geo = metadata.get(GEOMETRY_KEY)
        meta = dict(metadata.get("medgan_meta", {}))
        derived = cls._from_napari_transform(np.asarray(data), scale, translate, affine,
                                             is_label=is_label, name=name, meta=meta)
        if geo is None:
            return derived
        stored = cls(np.asarray(data), spacing=geo["spacing"], origin=geo["origin"],
                     direction=geo["direction"], is_label=is_label, source=name, meta=meta)
        # The stored geometry is exact (no float round trip through napari), but only valid
        # while the user has not moved or rescaled the layer since it was read.
        if scale is None and translate is None and affine is None:
            return stored
        if (np.allclose(stored.spacing, derived.spacing, rtol=1e-6, atol=1e-6)
                and np.allclose(stored.origin, derived.origin, rtol=1e-6, atol=1e-5)
                and np.allclose(stored.direction, derived.direction, atol=1e-6)):
            return stored
        return derived

    @classmethod
    def _from_napari_transform(cls, array, scale, translate, affine, **kwargs) -> "Volume":
        scale = np.ones(3) if scale is None else np.asarray(scale, dtype=float)[-3:]
        translate = np.zeros(3) if translate is None else np.asarray(translate, dtype=float)[-3:]
        linear, shift = np.eye(3), np.zeros(3)
        if affine is not None:
            aff = np.asarray(getattr(affine, "affine_matrix", affine), dtype=float)
            linear, shift = aff[-4:-1, -4:-1], aff[-4:-1, -1]
        # napari: world = L @ (scale * idx + translate) + b, all in (z, y, x) order.
        columns = linear * scale[None, :]
        spacing_zyx = np.linalg.norm(columns, axis=0)
        rot_zyx = columns / spacing_zyx
        origin_zyx = linear @ translate + shift
        perm = np.eye(3)[::-1]
        return cls(array, spacing=spacing_zyx[::-1], origin=origin_zyx[::-1],
                   direction=perm @ rot_zyx @ perm, source=kwargs.pop("name"), **kwargs)

    # ----------------------------------------------------------------- helpers
    def with_array(self, array: np.ndarray, **changes: Any) -> "Volume":
        """A copy with new voxels (same shape or not) and the same geometry unless changed."""
        kwargs = dict(
            spacing=self.spacing.copy(),
            origin=self.origin.copy(),
            direction=self.direction.copy(),
            is_label=self.is_label,
            source=self.source,
            meta=copy.deepcopy(self.meta),
        )
        kwargs.update(changes)
        return Volume(array, **kwargs)

    def describe(self) -> str:
        """One human line: shape, spacing, orientation code, intensity range."""
        lo, hi = (float(np.nanmin(self.array)), float(np.nanmax(self.array)))
        sp = " x ".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"{Path(self.source).name if self.source else 'volume'}: shape {self.shape} (z,y,x), "
            f"spacing {sp} mm (x,y,z), {orientation_code(self.direction)}, "
            f"range [{lo:.4g}, {hi:.4g}]" + (", labels" if self.is_label else "")
        )


def orientation_code(direction: np.ndarray) -> str:
    """Three-letter code (e.g. ``'LPS'``, ``'RAS'``) naming where voxel axes i, j, k point.

    Uses the closest patient axis for each column of an LPS direction matrix.
    """
    letters = (("L", "R"), ("P", "A"), ("S", "I"))
    code = ""
    for col in np.asarray(direction).T:
        axis = int(np.argmax(np.abs(col)))
        code += letters[axis][0 if col[axis] > 0 else 1]
    return code
