"""Geometry and intensity preprocessing of volumes before they reach a network.

``reorient_to_ras`` and ``resample_to_spacing`` return new
:class:`~napari_medgan.io.volume.Volume` objects (spacing in ITK ``(x, y, z)``
order). :class:`Normalizer` maps intensities to about ``[-1, 1]`` and back; it
works on numpy arrays and torch tensors alike (torch is never imported here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from napari_medgan.io.volume import Volume, VolumeError

PRESETS = ("ct", "mr", "zscore", "none")


# ----------------------------------------------------------------------------- geometry
def reorient_to_ras(volume: Volume) -> Volume:
    """Permute/flip voxel axes so that i, j, k point (nearest) to Right, Anterior, Superior.

    Only the array layout changes: every voxel keeps its physical position
    (the origin moves to the new first voxel). An oblique direction stays
    oblique, just closest to RAS. Uses nibabel's orientation tools.
    """
    from nibabel.orientations import (
        apply_orientation,
        axcodes2ornt,
        inv_ornt_aff,
        io_orientation,
        ornt_transform,
    )

    affine = volume.affine_ras()
    xyz = volume.array.transpose(2, 1, 0)  # (z, y, x) -> voxel (i, j, k)
    transform = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    new_xyz = apply_orientation(xyz, transform)
    new_affine = affine @ inv_ornt_aff(transform, xyz.shape)
    return Volume.from_affine(
        np.ascontiguousarray(new_xyz.transpose(2, 1, 0)),
        new_affine,
        "RAS",
        is_label=volume.is_label,
        source=volume.source,
        meta=dict(volume.meta),
    )


def resample_to_spacing(volume: Volume, spacing: Any) -> Volume:
    """Resample to a new voxel size, keeping origin, direction and physical extent.

    Parameters
    ----------
    volume : Volume
        Image (linear interpolation, float32 result) or label map (nearest
        neighbour, same integer dtype and no new label values).
    spacing : float or sequence of 3 floats
        New voxel size in mm, ITK ``(x, y, z)`` order.

    Returns
    -------
    Volume
        Same origin (centre of the first voxel) and direction; the size along
        each axis is ``round(old_size * old_spacing / new_spacing)`` (at least
        1), so the extent matches the old one to within half a new voxel.
    """
    import SimpleITK as sitk

    from napari_medgan.io.writers import volume_to_sitk

    name = volume.source or "volume"
    new_spacing = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if new_spacing.size == 1:
        new_spacing = np.repeat(new_spacing, 3)
    if new_spacing.size != 3 or not np.all(np.isfinite(new_spacing)) or np.any(new_spacing <= 0):
        raise VolumeError(f"{name}: spacing must be 3 positive numbers (x, y, z), got {spacing!r}")
    old_size = np.asarray(volume.shape[::-1], dtype=np.float64)  # (x, y, z)
    new_size = np.maximum(1, np.round(old_size * volume.spacing / new_spacing)).astype(int)

    array = np.asarray(volume.array)
    if volume.is_label:
        if array.dtype.kind == "b":
            array = array.astype(np.uint8)
        interpolator = sitk.sitkNearestNeighbor
    else:
        array = array.astype(np.float32)
        interpolator = sitk.sitkLinear
    image = volume_to_sitk(volume, array)
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputSpacing([float(v) for v in new_spacing])
    resampler.SetSize([int(v) for v in new_size])
    resampler.SetOutputOrigin(image.GetOrigin())
    resampler.SetOutputDirection(image.GetDirection())
    resampler.SetInterpolator(interpolator)
    resampler.SetOutputPixelType(image.GetPixelID())
    # The last new voxel centres can fall just past the old ones: extend the
    # edge values instead of padding with an arbitrary constant.
    resampler.SetUseNearestNeighborExtrapolator(True)
    result = sitk.GetArrayFromImage(resampler.Execute(image))
    return volume.with_array(result, spacing=new_spacing)


# ----------------------------------------------------------------------------- intensity
def _clip(x: Any, lo: float, hi: float) -> Any:
    return x.clamp(lo, hi) if hasattr(x, "clamp") else np.clip(x, lo, hi)


def _as_float(x: Any) -> Any:
    """Floats stay as they are (float32 stays float32); integers become float32."""
    if hasattr(x, "is_floating_point"):  # torch tensor
        return x if x.is_floating_point() else x.float()
    x = np.asarray(x)
    return x if x.dtype.kind == "f" else x.astype(np.float32)


@dataclass
class Normalizer:
    """Invertible intensity mapping to about ``[-1, 1]``.

    Presets
    -------
    ``ct``
        ``[low, high]`` HU (default ``[-1000, 1000]``) -> ``[-1, 1]``, clipped.
    ``mr``
        ``[low, high]`` = percentiles ``percentiles`` (default 0.5, 99.5) of the
        foreground voxels, found by :func:`fit_normalizer` -> ``[-1, 1]``, clipped.
    ``zscore``
        ``(x - mean) / std``, not clipped.
    ``none``
        Identity.

    ``inverse`` is the exact inverse of ``forward`` on ``[low, high]``
    (everything for ``zscore``/``none``), so generated volumes go back to HU.
    """

    preset: str = "none"
    low: float = -1.0
    high: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    clip: bool = True
    percentiles: tuple[float, float] = (0.5, 99.5)
    foreground: bool = True

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"Normalizer.preset must be one of {PRESETS}, got {self.preset!r}")
        for name in ("low", "high", "mean", "std"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"Normalizer.{name} must be finite, got {value!r}")
            setattr(self, name, value)
        if self.preset in ("ct", "mr") and not self.high > self.low:
            raise ValueError(
                f"Normalizer ({self.preset}): high must exceed low, "
                f"got low={self.low}, high={self.high}"
            )
        if self.preset == "zscore" and not self.std > 0:
            raise ValueError(f"Normalizer (zscore): std must be > 0, got {self.std}")
        lo_p, hi_p = (float(p) for p in self.percentiles)
        if not 0 <= lo_p < hi_p <= 100:
            raise ValueError(
                f"Normalizer.percentiles must satisfy 0 <= lo < hi <= 100, got {self.percentiles}"
            )
        self.percentiles = (lo_p, hi_p)
        for name in ("clip", "foreground"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"Normalizer.{name} must be true or false, got "
                                 f"{getattr(self, name)!r}")
            setattr(self, name, bool(getattr(self, name)))

    @classmethod
    def ct(cls, low: float = -1000.0, high: float = 1000.0) -> Normalizer:
        """CT window ``[low, high]`` HU -> ``[-1, 1]``."""
        return cls(preset="ct", low=low, high=high)

    def forward(self, x: Any) -> Any:
        """Raw intensities -> network range (numpy array or torch tensor; ints become float32)."""
        x = _as_float(x)
        if self.preset in ("ct", "mr"):
            y = (x - self.low) * (2.0 / (self.high - self.low)) - 1.0
            return _clip(y, -1.0, 1.0) if self.clip else y
        if self.preset == "zscore":
            return (x - self.mean) / self.std
        return x

    def inverse(self, y: Any) -> Any:
        """Network range -> raw intensities (e.g. HU for ``ct``)."""
        y = _as_float(y)
        if self.preset in ("ct", "mr"):
            return (y + 1.0) * ((self.high - self.low) / 2.0) + self.low
        if self.preset == "zscore":
            return y * self.std + self.mean
        return y

    def to_dict(self) -> dict:
        """JSON-friendly parameters (stored in checkpoints)."""
        d = asdict(self)
        d["percentiles"] = list(self.percentiles)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"Normalizer.from_dict: unknown keys {unknown}; expected some of {sorted(known)}"
            )
        d = dict(d)
        if "percentiles" in d:
            d["percentiles"] = tuple(d["percentiles"])
        return cls(**d)


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, Volume):
        return np.asarray(x.array)
    if hasattr(x, "detach"):  # torch tensor
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _values(arrays: Any, foreground: bool, max_per_array: int = 2_000_000) -> np.ndarray:
    """Finite voxel values of all arrays (subsampled per array), optionally foreground only.

    Foreground = voxels above the array's minimum (drops zero padding, air
    outside a skull-stripped brain); an array that is all minimum counts whole.
    """
    if isinstance(arrays, (np.ndarray, Volume)) or hasattr(arrays, "detach"):
        arrays = [arrays]
    chunks = []
    for item in arrays:
        flat = _as_numpy(item).ravel()
        flat = flat[:: max(1, flat.size // max_per_array)].astype(np.float64)
        flat = flat[np.isfinite(flat)]
        if flat.size and foreground:
            fg = flat[flat > flat.min()]
            flat = fg if fg.size else flat
        chunks.append(flat)
    values = np.concatenate(chunks) if chunks else np.empty(0)
    if values.size == 0:
        raise ValueError("fit_normalizer: no finite voxel values to fit on")
    return values


def fit_normalizer(preset: str, arrays: Iterable[Any] | Any = (), **params: Any) -> Normalizer:
    """Build a :class:`Normalizer`, fitting its parameters on ``arrays`` where the preset needs it.

    Parameters
    ----------
    preset : {"ct", "mr", "zscore", "none"}
    arrays : array, tensor, Volume, or an iterable of them
        Training intensities (ignored by ``ct`` and ``none``).
    **params
        ``ct``: ``low``, ``high`` (HU) or ``window=(low, high)``.
        ``mr``: ``percentiles=(0.5, 99.5)``, ``foreground=True``, ``clip=True``.
        ``zscore``: ``foreground=False``.

    Raises
    ------
    ValueError
        Unknown preset or parameter, or data that cannot be fitted (constant).
    """
    if preset not in PRESETS:
        raise ValueError(f"fit_normalizer: preset must be one of {PRESETS}, got {preset!r}")
    allowed = {
        "ct": {"low", "high", "window", "clip"},
        "mr": {"percentiles", "foreground", "clip"},
        "zscore": {"foreground"},
        "none": set(),
    }[preset]
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(
            f"fit_normalizer({preset!r}): unknown parameters {unknown}; allowed {sorted(allowed)}"
        )
    if preset == "none":
        return Normalizer(preset="none")
    if preset == "ct":
        low, high = params.pop("window", (params.pop("low", -1000.0), params.pop("high", 1000.0)))
        return Normalizer(preset="ct", low=low, high=high, clip=params.get("clip", True))
    if preset == "mr":
        percentiles = tuple(params.get("percentiles", (0.5, 99.5)))
        foreground = params.get("foreground", True)
        values = _values(arrays, foreground)
        low, high = (float(v) for v in np.percentile(values, percentiles))
        if not high > low:
            raise ValueError(
                f"fit_normalizer('mr'): percentiles {percentiles} are equal ({low:g}); "
                "the data are constant"
            )
        return Normalizer(
            preset="mr",
            low=low,
            high=high,
            percentiles=percentiles,
            foreground=foreground,
            clip=params.get("clip", True),
        )
    foreground = params.get("foreground", False)
    values = _values(arrays, foreground)
    std = float(values.std())
    if not std > 0:
        raise ValueError(
            f"fit_normalizer('zscore'): the data are constant ({values[0]:g}), std is 0"
        )
    return Normalizer(
        preset="zscore", mean=float(values.mean()), std=std, clip=False, foreground=foreground
    )
