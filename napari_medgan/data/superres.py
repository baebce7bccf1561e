"""The one super-resolution degradation operator and its grid geometry.

Training, inference and the benchmarks all use this module, so the
low-resolution (LR) input a network sees in training is made exactly as the
LR grid of a real scan is interpreted at inference.

Model
-----
A thick LR voxel is the plain average of ``f`` thin high-resolution (HR)
voxels along each axis (a box slice profile). Its centre is therefore the
centre of those ``f`` thin voxels: the thin voxel centres sit at the thick
centre ``± (f - 1) / 2`` thin spacings along the direction cosines. Going
down moves the origin by ``+ direction @ ((f - 1) / 2 * thin_spacing)``;
going up moves it back. Keeping the origin unchanged instead would shift the
whole image by half a thick voxel minus half a thin one per axis (for x2 at
1 mm thin spacing: 0.5 mm per axis, 0.87 mm along the diagonal).

Axis orders (see :mod:`napari_medgan.io.volume`)
------------------------------------------------
* Factors are given in ITK ``(x, y, z)`` order, like spacing:
  ``(1, 1, 4)`` means 4x thicker slices (through-plane only).
* Arrays are ``(z, y, x)`` and tensors ``(B, C, D, H, W)`` with
  ``D, H, W = z, y, x``; the tensor functions take ``factors_zyx``, which
  :func:`factors_zyx` makes from ``factors_xyz``.

:func:`upsample` is trilinear, tricubic or cubic B-spline with
``align_corners=False``: thin index ``j`` reads thick coordinate
``(j + 0.5) / f - 0.5``, which is the same physical grid as
:func:`highres_geometry`. The network's estimate (:func:`degrade` in
training, :data:`ESTIMATE_MODE` at inference) is the cubic B-spline (Unser
1999: prefilter, then the B-spline basis), the strongest classical
interpolator here, so the super-resolution network starts from the best
classical answer and learns what it cannot give. It is the same interpolation
as ``scipy.ndimage.zoom(order=3, grid_mode=True, mode="grid-mirror")``, the
benchmark's B-spline baseline, written with torch convolutions so it runs on
training patches on the GPU.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_medgan.io.volume import Volume

#: Factors accepted per axis.
ALLOWED_FACTORS = (1, 2, 4)

Factors = tuple[int, int, int]

#: Interpolation that makes the super-resolution network's starting estimate.
ESTIMATE_MODE = "bspline"
UPSAMPLE_MODES = ("trilinear", "cubic", "bspline")

#: Pole of the cubic B-spline prefilter (the inverse of the sampled basis [1, 4, 1] / 6).
_BSPLINE_POLE = np.sqrt(3.0) - 2.0
#: Prefilter taps kept each side: |pole| ** 12 < 1e-6 of the centre tap.
_BSPLINE_TAPS = 12


def _bad_factors(value: Any) -> ValueError:
    return ValueError(
        "model.superres_factors: expected an int, 3 ints in (x, y, z) order or a string "
        f"like '2', '1x1x4' or '1,1,4', each in {ALLOWED_FACTORS} and not all 1, got {value!r}"
    )


def parse_factors(value: Any) -> Factors:
    """Read super-resolution factors from a config value.

    Parameters
    ----------
    value : int, sequence of 3 ints, or str
        An int is isotropic (``2`` -> ``(2, 2, 2)``); a sequence is in ITK
        ``(x, y, z)`` order; a string is ``"2"``, ``"1x1x4"`` or ``"1,1,4"``.

    Returns
    -------
    tuple of 3 ints
        Factors in ITK ``(x, y, z)`` order, each in ``{1, 2, 4}``.

    Raises
    ------
    ValueError
        For any other form, a factor outside ``{1, 2, 4}``, or all ones.
    """
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        parts = text.replace(",", "x").split("x")
        if not all(p.isdigit() for p in parts):
            raise _bad_factors(value)
        items: list[Any] = [int(p) for p in parts]
    elif isinstance(value, bool):
        raise _bad_factors(value)
    elif isinstance(value, Integral):
        items = [value]
    elif isinstance(value, (Sequence, np.ndarray)):
        items = list(value)
    else:
        raise _bad_factors(value)
    if len(items) == 1:
        items = items * 3
    if len(items) != 3 or any(isinstance(f, bool) or not isinstance(f, Integral) for f in items):
        raise _bad_factors(value)
    factors = tuple(int(f) for f in items)
    if any(f not in ALLOWED_FACTORS for f in factors) or factors == (1, 1, 1):
        raise _bad_factors(value)
    return factors  # type: ignore[return-value]


def factors_zyx(factors_xyz: Sequence[int]) -> Factors:
    """Reverse ITK ``(x, y, z)`` factors to array/tensor ``(z, y, x)`` = ``(D, H, W)`` order."""
    return tuple(_as_factors(factors_xyz, "factors_xyz")[::-1])  # type: ignore[return-value]


def _as_factors(value: Any, name: str) -> Factors:
    """Three positive ints (any order); no check against ``ALLOWED_FACTORS``."""
    items = list(value) if isinstance(value, (Sequence, np.ndarray)) else None
    if (items is None or len(items) != 3
            or any(isinstance(f, bool) or not isinstance(f, Integral) or f < 1 for f in items)):
        raise ValueError(f"{name}: expected 3 positive ints, got {value!r}")
    return tuple(int(f) for f in items)  # type: ignore[return-value]


def _check_5d(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"{name}: expected a 5-D tensor (B, C, D, H, W), got shape {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating point tensor, got {x.dtype}")


# ---------------------------------------------------------------------- tensors
def downsample(hr: torch.Tensor, factors_zyx: Sequence[int]) -> torch.Tensor:
    """Box-average HR voxels into thick LR voxels.

    Parameters
    ----------
    hr : torch.Tensor
        ``(B, C, D, H, W)`` floating point, ``D, H, W`` = array ``(z, y, x)``.
    factors_zyx : sequence of 3 ints
        Factor per spatial axis in ``(D, H, W)`` = ``(z, y, x)`` order.

    Returns
    -------
    torch.Tensor
        ``(B, C, D / fz, H / fy, W / fx)``: mean of each ``fz x fy x fx`` block.

    Raises
    ------
    ValueError
        When the input is not 5-D floating point or a spatial size is not
        divisible by its factor.
    """
    _check_5d(hr, "downsample")
    fac = _as_factors(factors_zyx, "downsample: factors_zyx")
    spatial = tuple(hr.shape[2:])
    if any(n % f for n, f in zip(spatial, fac)):
        raise ValueError(
            f"downsample: spatial shape (D, H, W) = {spatial} is not divisible by factors "
            f"(z, y, x) = {fac}; crop first (crop_to_multiple)"
        )
    if fac == (1, 1, 1):
        return hr.clone()
    return F.avg_pool3d(hr, kernel_size=fac, stride=fac)


def upsample(lr: torch.Tensor, factors_zyx: Sequence[int], mode: str = "trilinear",
             ) -> torch.Tensor:
    """Trilinear, tricubic or cubic B-spline interpolation of thick LR voxels onto the thin
    HR grid.

    Parameters
    ----------
    lr : torch.Tensor
        ``(B, C, d, h, w)`` floating point, ``d, h, w`` = array ``(z, y, x)``.
    factors_zyx : sequence of 3 ints
        Factor per spatial axis in ``(D, H, W)`` = ``(z, y, x)`` order.
    mode : str
        ``"trilinear"``, ``"cubic"`` (separable cubic convolution: torch's 2D
        ``bicubic`` along z, then along (y, x); borders replicated) or
        ``"bspline"`` (separable cubic B-spline interpolation, half-sample
        mirrored borders: :func:`_bspline_axis`).

    Returns
    -------
    torch.Tensor
        ``(B, C, d * fz, h * fy, w * fx)``; ``align_corners=False``, so thin
        index ``j`` samples thick coordinate ``(j + 0.5) / f - 0.5`` (the grid
        of :func:`highres_geometry`).
    """
    _check_5d(lr, "upsample")
    fac = _as_factors(factors_zyx, "upsample: factors_zyx")
    if fac == (1, 1, 1):
        return lr.clone()
    size = tuple(n * f for n, f in zip(lr.shape[2:], fac))
    if mode == "trilinear":
        return F.interpolate(lr, size=size, mode="trilinear", align_corners=False)
    if mode == "bspline":
        x = lr
        for axis, f in enumerate(fac):
            if f > 1:
                x = _bspline_axis(x, axis + 2, f)
        return x
    if mode != "cubic":
        raise ValueError(f"mode: expected one of {UPSAMPLE_MODES}, got {mode!r}")
    b, c, d, h, w = lr.shape
    x = lr.reshape(b, c, d, h * w)  # along z; a factor of 1 along (h*w) is exactly identity
    x = F.interpolate(x, size=(size[0], h * w), mode="bicubic", align_corners=False)
    x = x.reshape(b, c * size[0], h, w)
    x = F.interpolate(x, size=size[1:], mode="bicubic", align_corners=False)
    return x.reshape(b, c, *size)


def _bspline3(t: np.ndarray) -> np.ndarray:
    """The cubic B-spline basis function."""
    a = np.abs(t)
    return np.where(a < 1, 2 / 3 - a ** 2 + a ** 3 / 2, np.where(a < 2, (2 - a) ** 3 / 6, 0.0))


@functools.lru_cache(maxsize=None)
def _bspline_kernels(f: int) -> np.ndarray:
    """``(f, 2 * (taps + 2) + 1)`` FIR kernels, one per thin phase ``p``: thin sample
    ``j * f + p`` is ``sum_n kernel[p, n] * thick[j + n - taps - 2]``. Each is the
    prefilter (the exponentially decaying inverse of ``[1, 4, 1] / 6``, truncated)
    convolved with the basis sampled at the phase's offset ``(p + 0.5) / f - 0.5``."""
    z, k = _BSPLINE_POLE, _BSPLINE_TAPS
    prefilter = -6 * z / (1 - z * z) * z ** np.abs(np.arange(-k, k + 1))
    prefilter /= prefilter.sum()  # exact unit gain despite the truncation
    m = np.arange(-2, 3)
    return np.stack([np.convolve(_bspline3((p + 0.5) / f - 0.5 - m), prefilter)
                     for p in range(f)])


def _bspline_axis(x: torch.Tensor, dim: int, f: int) -> torch.Tensor:
    """Cubic B-spline upsampling of ``x`` by ``f`` along ``dim`` (half-sample
    symmetric extension, scipy's ``"grid-mirror"``)."""
    kernels = _bspline_kernels(f)
    pad = (kernels.shape[1] - 1) // 2
    n = x.shape[dim]
    idx = np.arange(-pad, n + pad) % (2 * n)  # mirror about both edges, as often as needed
    idx = np.where(idx >= n, 2 * n - 1 - idx, idx)
    moved = x.movedim(dim, -1)
    lead = moved.shape[:-1]
    rows = moved.index_select(-1, torch.as_tensor(idx, device=x.device)).reshape(-1, 1,
                                                                                 n + 2 * pad)
    weight = torch.as_tensor(kernels, dtype=x.dtype, device=x.device)[:, None]
    out = F.conv1d(rows, weight)  # (rows, f, n): phase p of every thick sample
    out = out.transpose(1, 2).reshape(*lead, n * f)
    return out.movedim(-1, dim)


def degrade(hr: torch.Tensor, factors_zyx: Sequence[int]) -> torch.Tensor:
    """``upsample(downsample(hr), mode=ESTIMATE_MODE)``: the SR network's training input,
    same shape as ``hr``.

    Parameters
    ----------
    hr : torch.Tensor
        ``(B, C, D, H, W)``, each spatial size divisible by its factor.
    factors_zyx : sequence of 3 ints
        ``(z, y, x)`` order.
    """
    return upsample(downsample(hr, factors_zyx), factors_zyx, ESTIMATE_MODE)


# --------------------------------------------------------------------- geometry
def lowres_geometry(volume: Volume, factors_xyz: Sequence[int]) -> dict:
    """Geometry of :func:`downsample` applied to ``volume``.

    Parameters
    ----------
    volume : Volume
        The HR volume (its array shape is not used).
    factors_xyz : sequence of 3 ints
        ITK ``(x, y, z)`` order.

    Returns
    -------
    dict
        ``spacing`` (``spacing * f``), ``origin`` (moved by
        ``direction @ ((f - 1) / 2 * spacing)``: the centre of the first
        ``f`` thin voxels) and ``direction`` (unchanged); ITK order, LPS.
    """
    fac = np.asarray(_as_factors(factors_xyz, "lowres_geometry: factors_xyz"), dtype=np.float64)
    spacing = np.asarray(volume.spacing, dtype=np.float64)
    direction = np.asarray(volume.direction, dtype=np.float64)
    origin = np.asarray(volume.origin, dtype=np.float64) + direction @ ((fac - 1) / 2 * spacing)
    return {"spacing": spacing * fac, "origin": origin, "direction": direction.copy()}


def highres_geometry(volume: Volume, factors_xyz: Sequence[int]) -> tuple[Factors, dict]:
    """The HR grid whose :func:`lowres_geometry` is ``volume``'s grid.

    Parameters
    ----------
    volume : Volume
        The LR volume; array ``(z, y, x)``.
    factors_xyz : sequence of 3 ints
        ITK ``(x, y, z)`` order.

    Returns
    -------
    shape_zyx : tuple of 3 ints
        HR array shape ``(Z * fz, Y * fy, X * fx)``.
    geometry : dict
        ``spacing`` (``spacing / f``), ``origin`` (moved by
        ``- direction @ ((f - 1) / 2 * new_spacing)``) and ``direction``;
        ITK order, LPS.
    """
    fac_xyz = _as_factors(factors_xyz, "highres_geometry: factors_xyz")
    fac = np.asarray(fac_xyz, dtype=np.float64)
    spacing = np.asarray(volume.spacing, dtype=np.float64) / fac
    direction = np.asarray(volume.direction, dtype=np.float64)
    origin = np.asarray(volume.origin, dtype=np.float64) - direction @ ((fac - 1) / 2 * spacing)
    shape = (volume.shape[0] * fac_xyz[2], volume.shape[1] * fac_xyz[1],
             volume.shape[2] * fac_xyz[0])
    return shape, {"spacing": spacing, "origin": origin, "direction": direction.copy()}


def crop_to_multiple(volume: Volume, factors_xyz: Sequence[int]) -> Volume:
    """Crop the end of each axis so every size is divisible by its factor.

    Parameters
    ----------
    volume : Volume
        Array ``(z, y, x)``.
    factors_xyz : sequence of 3 ints
        ITK ``(x, y, z)`` order.

    Returns
    -------
    Volume
        A copy; the geometry is unchanged because voxel ``(0, 0, 0)`` is kept.

    Raises
    ------
    ValueError
        Naming the volume, when an axis is shorter than its factor.
    """
    fac = factors_zyx(factors_xyz)
    keep = tuple(n - n % f for n, f in zip(volume.shape, fac))
    if 0 in keep:
        name = volume.source or "volume"
        raise ValueError(
            f"{name}: shape (z, y, x) = {volume.shape} is smaller than the super-resolution "
            f"factors (z, y, x) = {fac}; nothing would be left after cropping"
        )
    return volume.with_array(volume.array[: keep[0], : keep[1], : keep[2]].copy())


def _check_intensity(volume: Volume, what: str) -> None:
    if volume.is_label:
        raise ValueError(f"{what}: {volume.source or 'volume'} is a label map; "
                         "averaging or interpolating labels is meaningless")


def downsample_volume(volume: Volume, factors_xyz: Sequence[int]) -> Volume:
    """Make the LR volume of ``volume``: crop, box-average, LR geometry.

    Parameters
    ----------
    volume : Volume
        HR intensity volume, array ``(z, y, x)``.
    factors_xyz : sequence of 3 ints
        ITK ``(x, y, z)`` order.

    Returns
    -------
    Volume
        float32 array ``(z, y, x)`` with :func:`lowres_geometry`; ``source``
        and ``meta`` kept.
    """
    _check_intensity(volume, "downsample_volume")
    cropped = crop_to_multiple(volume, factors_xyz)
    with torch.no_grad():
        hr = torch.from_numpy(np.ascontiguousarray(cropped.array, dtype=np.float32))[None, None]
        lr = downsample(hr, factors_zyx(factors_xyz))[0, 0].numpy()
    return cropped.with_array(lr, **lowres_geometry(cropped, factors_xyz))


def upsample_volume(volume: Volume, factors_xyz: Sequence[int], mode: str = "trilinear",
                    ) -> Volume:
    """Upsample an LR volume onto its HR grid (:func:`highres_geometry`).

    Parameters
    ----------
    volume : Volume
        LR intensity volume, array ``(z, y, x)``.
    factors_xyz : sequence of 3 ints
        ITK ``(x, y, z)`` order.
    mode : str
        ``"trilinear"``, ``"cubic"`` or ``"bspline"`` (:func:`upsample`), or
        ``"scipy-bspline"``: the same cubic B-spline computed independently by
        ``scipy.ndimage.zoom(order=3, grid_mode=True, mode="grid-mirror")`` (exact
        IIR prefilter; the benchmark's baseline). ``grid_mode=True`` maps voxel
        *edges*, so output index ``j`` reads input coordinate ``(j + 0.5) / f -
        0.5`` exactly like :func:`upsample` (the default ``grid_mode=False``
        maps the first and last voxel *centres* onto each other and stretches
        the image by ``(n*f - 1) / (n*f - f)``); ``"grid-mirror"`` is the
        half-sample symmetric extension that matches that grid.

    Returns
    -------
    Volume
        float32 array of shape ``n * f`` per axis with :func:`highres_geometry`.
    """
    _check_intensity(volume, "upsample_volume")
    shape, geometry = highres_geometry(volume, factors_xyz)
    fac = factors_zyx(factors_xyz)
    if mode == "scipy-bspline":
        from scipy import ndimage

        hr = ndimage.zoom(np.asarray(volume.array, dtype=np.float64), fac, order=3,
                          mode="grid-mirror", grid_mode=True).astype(np.float32)
    else:
        with torch.no_grad():
            lr = torch.from_numpy(np.ascontiguousarray(volume.array, dtype=np.float32))
            hr = upsample(lr[None, None], fac, mode)[0, 0].numpy()
    if hr.shape != shape:  # pragma: no cover - both paths round n * f, an int here
        raise RuntimeError(f"upsample_volume: got shape {hr.shape}, grid says {shape}")
    return volume.with_array(hr, **geometry)
