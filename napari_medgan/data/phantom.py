"""A procedural 3D head phantom: a *distribution* of heads, not one picture.

Every structure is an implicit shape in physical millimetres (head-local
coordinates, LPS axes: x to the patient's Left, y Posterior, z Superior), so
any grid size or spacing samples the same anatomy. The seed draws the head's
size, pose, skull thickness, cortical folding, ventricle size, a global
"atrophy" factor that widens CSF spaces together, and an optional lesion.

The layered construction (scalp, skull, CSF, cortex, white matter, deep grey
matter, ventricles) follows the tissue-class phantoms used to validate MR
simulation and segmentation, e.g. BrainWeb (Collins et al. 1998, "Design and
construction of a realistic digital brain phantom", IEEE TMI 17(3)), made
procedural: cortical folds are the zero level set of a random sum of plane
waves evaluated on the brain surface, which draws sulci as curved grooves.
MR intensities are T1-like with a smooth multiplicative bias field and Rician
noise (Gudbjartsson & Patz 1995, "The Rician distribution of noisy MRI data",
MRM 34(6)); CT intensities are in Hounsfield units with Gaussian noise.

The same seed gives the same anatomy (and label map) for ``"mr"`` and
``"ct"``, so MR->CT training pairs exist.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_medgan.io.volume import Volume

PHANTOM_LABELS: dict[int, str] = {
    0: "background", 1: "scalp", 2: "skull", 3: "csf", 4: "grey matter",
    5: "white matter", 6: "ventricles", 7: "lesion",
}
#: Edge of the cubic field of view (mm) that holds every head the seed can draw.
HEAD_FOV_MM = 230.0
MODALITIES = ("mr", "ct")

# T1-like relative intensities per label (0 background ... 7 lesion).
_MR_LEVELS = np.array([0.0, 0.9, 0.1, 0.2, 0.65, 1.0, 0.2, 0.4])
# Hounsfield units per label; the skull (2) gets its own profile below.
_CT_LEVELS = np.array([-1000.0, 40.0, 1000.0, 8.0, 40.0, 28.0, 8.0, 60.0])


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation (about z, then x, then y), angles in radians; columns = local axes in LPS."""
    cz, sz, cx, sx, cy, sy = (np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch),
                              np.cos(roll), np.sin(roll))
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    return rz @ rx @ ry


def _unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _waves(rng: np.random.Generator, n: int, wavenumber: float) -> dict:
    """Random plane waves ``cos(k . q + phase)`` with ``|k| = wavenumber``."""
    return {"k": _unit_vectors(rng, n) * wavenumber, "phase": rng.uniform(0, 2 * np.pi, n)}


def _eval_waves(waves: dict, qx, qy, qz) -> np.ndarray:
    """Sum of the waves at points ``q``, scaled to unit standard deviation."""
    total = np.zeros(np.broadcast(qx, qy, qz).shape, dtype=np.float32)
    for (kx, ky, kz), ph in zip(waves["k"].tolist(), waves["phase"].tolist()):
        # Python floats keep float32 inputs in float32 (NumPy 2 promotion rules)
        total += np.cos(kx * qx + ky * qy + kz * qz + ph)
    return total / np.sqrt(len(waves["phase"]) / 2.0)


def _draw_anatomy(seed: int) -> dict[str, Any]:
    """All seed-dependent anatomical parameters (in mm / radians), drawn in a fixed order."""
    rng = np.random.default_rng(seed)
    u = rng.uniform
    atrophy = u(0.0, 1.0)  # one factor widens CSF spaces together, as ageing does
    p: dict[str, Any] = {
        "axes": (u(70, 78), u(88, 98), u(90, 102)),
        "rotation": _rotation(*np.deg2rad([u(-8, 8), u(-10, 10), u(-5, 5)])),
        "centre": u(-5, 5, 3),
        "outline": _waves(rng, 3, 2.5),
        "scalp": u(4.0, 7.0),
        "skull": u(5.0, 8.0),
        "skull_var": _waves(rng, 3, 3.0),
        "csf": 1.5 + 2.0 * atrophy + u(-0.3, 0.3),
        "cortex": u(2.5, 3.5),
        "sulci": _waves(rng, 16, 2 * np.pi / u(17.0, 22.0)),
        # a slowly varying vector field bends each sulcus as it goes down
        "sulcus_bend": [_waves(rng, 3, 3.0) for _ in range(3)],
        "sulcus_halfwidth": 0.6 + 0.9 * atrophy,
        "medial_sulci": _waves(rng, 8, 2 * np.pi / u(25.0, 35.0)),
        "sulcus_depth": u(12.0, 18.0),
        "sulcus_depth_var": _waves(rng, 3, 3.0),
        "fissure": (0.8 + 0.8 * atrophy, u(0, 2 * np.pi), u(-2, 2)),
        # corpus callosum: z of its top, y of its centre, AP half-length (it arches down)
        "callosum": (u(14, 20), u(-4, 2), u(32, 38)),
    }
    scale = 0.75 + 0.8 * atrophy
    vz, vy = u(6, 11), u(-6, 0)
    vents = []
    for side in (-1.0, 1.0):
        # mirror-ish: each side jitters its own position and size a little
        vents.append({
            "centre": (side * u(6.0, 8.5), vy + u(-1, 1), vz + u(-1, 1)),
            "axes": (u(5.0, 7.0) * scale, u(22, 28) * np.sqrt(scale), u(7.0, 10.0) * scale),
            "tilt": side * float(np.deg2rad(u(15, 30))),
            "bend": u(0.008, 0.014),
        })
    p["ventricles"] = vents
    p["deep_gm"] = [  # thalami and lentiform nuclei, mirrored
        ((side * u(9, 12), u(6, 12), u(-4, 2)), (u(6, 8), u(10, 13), u(7, 9)))
        for side in (-1.0, 1.0)
    ] + [
        ((side * u(21, 26), u(-8, 0), u(-2, 4)), (u(4, 6), u(12, 15), u(8, 10)))
        for side in (-1.0, 1.0)
    ]
    p["lesion_present"] = bool(rng.random() < 0.5)
    p["lesion_axes"] = (u(5.0, 9.0), u(5.0, 10.0), u(5.0, 9.0))
    p["lesion_rotation"] = _rotation(*rng.uniform(0, np.pi, 3))
    # candidate centres inside the brain; the first one in deep white matter wins
    p["lesion_candidates"] = rng.uniform(-1, 1, (256, 3)) * np.array([45.0, 60.0, 45.0])
    return p


def _ellipsoid(x, y, z, centre, axes) -> np.ndarray:
    return (((x - centre[0]) / axes[0]) ** 2 + ((y - centre[1]) / axes[1]) ** 2
            + ((z - centre[2]) / axes[2]) ** 2) <= 1.0


def _head_depth(p: dict, x, y, z) -> tuple:
    """Distance ``r`` from the head centre, unit direction ``u`` and depth (mm) below the
    scalp along the ray from the centre, at head-local points ``(x, y, z)``."""
    r = np.sqrt(x * x + y * y + z * z) + 1e-6
    ux, uy, uz = x / r, y / r, z / r
    a, b, c = p["axes"]
    # egg-shaped: wider posteriorly (uy > 0) and flatter at the skull base (uz < 0)
    ax = a * (1.0 + 0.06 * uy)
    cz = c * (1.0 - 0.12 * np.clip(-uz, 0.0, None))
    radius = 1.0 / np.sqrt((ux / ax) ** 2 + (uy / b) ** 2 + (uz / cz) ** 2)
    radius = radius * (1.0 + 0.015 * _eval_waves(p["outline"], ux, uy, uz))
    return r, (ux, uy, uz), radius - r


def _labels_at(p: dict, x, y, z, lesion_centre=None) -> tuple[np.ndarray, np.ndarray]:
    """Label map at head-local points ``(x, y, z)`` (mm, any common shape).

    Returns the labels (uint8) and the relative depth ``t`` in [0, 1] across the
    skull (for the CT diploe profile; 0 outside the head). Only points inside
    the head are worked on: most of the field of view is air.
    """
    x, y, z = np.broadcast_arrays(x, y, z)
    labels = np.zeros(x.shape, dtype=np.uint8)
    t = np.zeros(x.shape, dtype=np.float32)
    _, _, depth = _head_depth(p, x, y, z)
    inside = depth > 0
    if inside.any():
        labels[inside], t[inside] = _tissues(p, x[inside], y[inside], z[inside], lesion_centre)
    return labels, t


def _tissues(p: dict, x, y, z, lesion_centre) -> tuple[np.ndarray, np.ndarray]:
    """Labels and skull depth fraction at points inside the head (1-D arrays)."""
    r, (ux, uy, uz), depth = _head_depth(p, x, y, z)
    skull_in = p["scalp"]
    skull_thick = p["skull"] * (1.0 + 0.2 * _eval_waves(p["skull_var"], ux, uy, uz))
    brain_in = skull_in + skull_thick + p["csf"]
    e = depth - brain_in  # depth below the brain surface

    labels = np.ones(depth.shape, dtype=np.uint8)
    labels[depth > skull_in] = 2
    labels[depth > skull_in + skull_thick] = 3
    brain = e > 0
    labels[brain] = 5

    # Interhemispheric fissure: reaches down to the corpus callosum (an arch), and splits
    # the hemispheres fully in front of and behind it. Its walls are a second pial
    # surface with their own (shallower) sulci, from a random field in the (y, z) plane.
    fw, fphase, fshift = p["fissure"]
    cc_top, cc_y, cc_half = p["callosum"]
    xm = x - fshift - 1.5 * np.sin(y / 25.0 + fphase)  # signed distance to the midline
    mid = np.abs(xm)
    above = brain & (z > cc_top - 40.0 * ((y - cc_y) / cc_half) ** 2)
    em = mid - fw  # depth below the medial surface
    sm = _eval_waves(p["medial_sulci"], np.sign(xm) * 20.0, y, z)  # differs per hemisphere
    lat_m = np.abs(sm) / (0.816 * float(np.linalg.norm(p["medial_sulci"]["k"][0])))
    medial_gm = above & ((em < p["cortex"]) | ((lat_m < 0.8 + p["cortex"]) & (em < 8.0)))
    medial_csf = above & ((em < 0) | ((lat_m < 0.8) & (em < 6.0)))

    # Cortex: a ribbon below the pial surface and around every sulcus. Sulci sit on the
    # zero level set of a random field on the sphere (|s| / |grad s| is the distance to
    # it), bent by a slow vector field as they go down so they are not straight spokes.
    r0 = 70.0
    ed = np.clip(e, 0.0, 30.0) * 0.8
    bx, by, bz = (_eval_waves(w, ux, uy, uz) for w in p["sulcus_bend"])
    s = _eval_waves(p["sulci"], ux * r0 + ed * bx, uy * r0 + ed * by, uz * r0 + ed * bz)
    knum = float(np.linalg.norm(p["sulci"]["k"][0]))
    lateral = np.abs(s) / (0.816 * knum) * (r / r0)
    sdepth = p["sulcus_depth"] * (1.0 + 0.3 * _eval_waves(p["sulcus_depth_var"], ux, uy, uz))
    thick = p["cortex"]
    half = p["sulcus_halfwidth"] * np.clip(1.0 - e / (sdepth + 1e-6), 0.3, 1.0)  # tapers
    labels[brain & ((e < thick) | ((lateral < half + thick) & (e < sdepth + thick)))] = 4
    labels[brain & (lateral < half) & (e < sdepth)] = 3
    labels[medial_gm] = 4
    labels[medial_csf] = 3

    for centre, axes in p["deep_gm"]:
        labels[_ellipsoid(x, y, z, centre, axes) & brain] = 4
    for side, v in zip((-1.0, 1.0), p["ventricles"]):
        # tilt in the coronal plane (bat-wing horns), bend down at both ends (C-shape)
        dx, dy, dz = x - v["centre"][0], y - v["centre"][1], z - v["centre"][2]
        ct, st = np.cos(v["tilt"]), np.sin(v["tilt"])
        rx, rz = ct * dx - st * dz, st * dx + ct * dz
        rz = rz + v["bend"] * dy * dy
        # a thin septum (pellucidum) keeps the two apart however large they are
        labels[_ellipsoid(rx, dy, rz, (0, 0, 0), v["axes"]) & brain & (side * xm > 1.2)] = 6

    if lesion_centre is not None:
        (r00, r01, r02), (r10, r11, r12), (r20, r21, r22) = p["lesion_rotation"].tolist()
        lcx, lcy, lcz = (float(v) for v in lesion_centre)
        dx, dy, dz = x - lcx, y - lcy, z - lcz
        lx = r00 * dx + r10 * dy + r20 * dz  # R^T (p - c)
        ly = r01 * dx + r11 * dy + r21 * dz
        lz = r02 * dx + r12 * dy + r22 * dz
        lesion = _ellipsoid(lx, ly, lz, (0, 0, 0), p["lesion_axes"])
        labels[lesion & ((labels == 5) | (labels == 4))] = 7

    return labels, np.clip((depth - skull_in) / skull_thick, 0.0, 1.0)


def _lesion_centre(p: dict) -> np.ndarray | None:
    """First candidate whose neighbourhood (one lesion radius) is all white matter."""
    if not p["lesion_present"]:
        return None
    cand = p["lesion_candidates"]
    reach = max(p["lesion_axes"]) * 0.7
    offsets = np.array([[0, 0, 0], [1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0],
                        [0, 0, 1], [0, 0, -1]], dtype=float) * reach
    pts = cand[:, None, :] + offsets[None]
    labels, _ = _labels_at(p, pts[..., 0], pts[..., 1], pts[..., 2])
    ok = np.all(labels == 5, axis=1)
    if not ok.any():
        ok = labels[:, 0] == 5
    return cand[int(np.argmax(ok))] if ok.any() else cand[0]


def fit_spacing(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Spacing (mm, ITK ``(x, y, z)``) giving a ``HEAD_FOV_MM`` cube for ``shape`` ``(z, y, x)``.

    Every head the seed can draw fits in that field of view.
    """
    return tuple(HEAD_FOV_MM / int(n) for n in shape[::-1])  # type: ignore[return-value]


def make_head_phantom(
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing: tuple[float, float, float] | None = None,
    seed: int = 0,
    lesion: bool | None = None,
    modality: str = "mr",
    bias: bool = True,
    noise: bool = True,
) -> tuple[Volume, Volume]:
    """Draw one head from the phantom distribution.

    Parameters
    ----------
    shape : (int, int, int)
        Grid shape ``(Z, Y, X)`` (numpy/napari order).
    spacing : (float, float, float) or None
        Voxel size in mm, ITK ``(x, y, z)`` order. ``None`` fits the whole
        head: ``HEAD_FOV_MM / shape`` per axis (see :func:`fit_spacing`).
        The anatomy is defined in mm, so a small field of view crops it.
    seed : int
        Draws the anatomy (and, through independent streams, bias and noise).
    lesion : bool or None
        Force a white-matter lesion on/off; ``None`` lets the seed decide
        (present with probability 0.5).
    modality : {"mr", "ct"}
        ``"mr"``: T1-like, WM ~1.0, GM ~0.65, CSF ~0.2, skull ~0.1, scalp ~0.9,
        lesion ~0.4, background 0. ``"ct"``: Hounsfield units (air -1000, scalp ~40,
        CSF ~8, WM ~28, GM ~40, lesion ~60, skull ~650-1400 with dense tables).
    bias, noise : bool
        MR: smooth multiplicative bias field / Rician noise. CT: noise only
        (Gaussian, sigma 5-10 HU); ``bias`` is ignored.

    Returns
    -------
    image, labels : Volume, Volume
        Float32 image and uint8 label map (``is_label=True``, values in
        :data:`PHANTOM_LABELS`), identity direction, origin centring the grid
        (and so the head, up to its random offset of a few mm) at (0, 0, 0) mm.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality: expected one of {MODALITIES}, got {modality!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape: expected three positive sizes (z, y, x), got {shape!r}")
    spacing = fit_spacing(shape) if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing: expected three positive numbers (x, y, z) mm, got {spacing!r}")

    p = _draw_anatomy(int(seed))
    if lesion is not None:
        p["lesion_present"] = bool(lesion)
    sp = np.asarray(spacing)
    n_xyz = np.array(shape[::-1])
    origin = -sp * (n_xyz - 1) / 2.0
    # LPS positions of voxel centres, broadcast in (z, y, x) order
    px = (origin[0] + sp[0] * np.arange(n_xyz[0], dtype=np.float32))[None, None, :]
    py = (origin[1] + sp[1] * np.arange(n_xyz[1], dtype=np.float32))[None, :, None]
    pz = (origin[2] + sp[2] * np.arange(n_xyz[2], dtype=np.float32))[:, None, None]
    px, py, pz = (a.astype(np.float32) for a in (px, py, pz))
    cx, cy, cz = p["centre"].tolist()
    dx, dy, dz = px - cx, py - cy, pz - cz
    rot = p["rotation"].tolist()
    # local = R^T (p - c): row i of R^T is column i of R
    x = rot[0][0] * dx + rot[1][0] * dy + rot[2][0] * dz
    y = rot[0][1] * dx + rot[1][1] * dy + rot[2][1] * dz
    z = rot[0][2] * dx + rot[1][2] * dy + rot[2][2] * dz
    centre = _lesion_centre(p)
    labels, skull_t = _labels_at(p, x, y, z, centre)
    if centre is not None and not np.any(labels == 7):
        # a lesion smaller than a voxel still marks the voxel nearest its centre
        world = p["rotation"] @ centre + p["centre"]
        idx = np.clip(np.rint((world - origin) / sp).astype(int), 0, n_xyz - 1)
        if labels[idx[2], idx[1], idx[0]] in (4, 5):
            labels[idx[2], idx[1], idx[0]] = 7

    image = _intensities(labels, skull_t, modality, int(seed), (px, py, pz), bias, noise)
    info = {"seed": int(seed), "modality": modality, "lesion": centre is not None}
    common = dict(spacing=spacing, origin=origin, direction=np.eye(3))
    name = f"head_phantom_{modality}_seed{int(seed)}"
    img_vol = Volume(image, is_label=False, source=name, meta={"phantom": info}, **common)
    lab_vol = Volume(labels, is_label=True, source=name + "_labels", meta={"phantom": info},
                     **common)
    return img_vol, lab_vol


def _intensities(labels, skull_t, modality, seed, grid, bias, noise) -> np.ndarray:
    """Tissue intensities + partial-volume blur + bias/noise, from modality-specific streams."""
    from scipy.ndimage import gaussian_filter

    # separate streams so MR and CT (and each flag combination) share the anatomy
    rng = np.random.default_rng([int(seed), MODALITIES.index(modality) + 1])
    if modality == "mr":
        levels = _MR_LEVELS * (1.0 + rng.uniform(-0.04, 0.04, _MR_LEVELS.size))
        levels[0] = 0.0
        image = levels[labels].astype(np.float32)
    else:
        levels = _CT_LEVELS + rng.uniform(-4, 4, _CT_LEVELS.size)
        levels[0] = -1000.0
        image = levels[labels].astype(np.float32)
        # dense inner/outer tables around a lighter diploe
        bone = labels == 2
        base = rng.uniform(900, 1100)
        image[bone] = base * (1.0 + 0.35 * np.cos(2 * np.pi * skull_t[bone]))
    # partial volume: voxels average the tissue they cover (half a voxel of blur)
    image = gaussian_filter(image, sigma=0.5, mode="nearest")
    if modality == "mr":
        if bias:
            px, py, pz = np.broadcast_arrays(*grid)
            waves = _waves(rng, 4, 2 * np.pi / rng.uniform(250, 400))
            signal = image > 0  # air stays 0: evaluate the field only where it matters
            image[signal] *= np.exp(0.12 * _eval_waves(waves, px[signal], py[signal],
                                                       pz[signal]))
        if noise:
            sigma = rng.uniform(0.015, 0.035)
            re = image + rng.normal(0, sigma, image.shape).astype(np.float32)
            im = rng.normal(0, sigma, image.shape).astype(np.float32)
            image = np.sqrt(re * re + im * im)  # magnitude of complex data: Rician
    elif noise:
        image = image + rng.normal(0, rng.uniform(5.0, 10.0), image.shape).astype(np.float32)
    return image.astype(np.float32)


def make_phantom_set(
    count: int,
    shape: tuple[int, int, int] = (64, 64, 64),
    spacing: tuple[float, float, float] | None = None,
    seed: int = 0,
    modality: str = "mr",
) -> list[tuple[Volume, Volume]]:
    """``count`` phantoms with seeds ``seed, seed + 1, ...``; see :func:`make_head_phantom`."""
    if int(count) < 1:
        raise ValueError(f"count: expected >= 1, got {count!r}")
    return [make_head_phantom(shape, spacing, seed=int(seed) + i, modality=modality)
            for i in range(int(count))]


def phantom_arrays(count: int, shape: tuple[int, int, int] = (64, 64, 64),
                   spacing: tuple[float, float, float] | None = None, seed: int = 0,
                   modality: str = "mr") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`make_phantom_set` as arrays: the images, and their label maps."""
    pairs = make_phantom_set(count, shape, spacing, seed, modality)
    return [img.array for img, _ in pairs], [np.asarray(lab.array) for _, lab in pairs]
