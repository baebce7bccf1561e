"""Feature extractors for FID/MMD-style distances, without downloading anything.

Published FIDs use an ImageNet Inception network, which is 2D, natural-image
and would have to be downloaded. Here three offline options share one small 3D
architecture (:class:`FeatureEncoder3D`):

* :class:`RandomConv3DFeatures` -- fixed-seed random weights ("random-projection
  features, seed S"). A recognised, weaker baseline: Naeem et al. (2020) show
  that randomly initialised embeddings give informative fidelity/diversity
  metrics where no suitable pretrained network exists.
* :func:`train_feature_extractor` -- the same encoder trained on the *real*
  volumes with a self-supervised 3D rotation-prediction task (Gidaris et al.
  2018; in 3D: Taleb et al. 2020) for a few hundred CPU steps.
* :func:`load_feature_extractor` -- weights supplied by the user as a
  safetensors file plus a JSON config (never pickle / TorchScript, which can run
  code when loaded).

Features of different extractors (or of one extractor with another intensity
range) are not comparable; every extractor describes itself (:meth:`describe`)
and the report records that description.

References
----------
Naeem, M. F., Oh, S. J., Uh, Y., Choi, Y., Yoo, J. (2020). Reliable fidelity and
diversity metrics for generative models. ICML.
Gidaris, S., Singh, P., Komodakis, N. (2018). Unsupervised representation learning
by predicting image rotations. ICLR.
Taleb, A. et al. (2020). 3D self-supervised methods for medical imaging. NeurIPS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

FORMAT = "napari-medgan-feature-extractor"
FORMAT_VERSION = 1
#: Number of classes of the rotation pretext task: 4 in-plane rotations x (flip z or not).
N_PRETEXT_CLASSES = 8


class FeatureEncoder3D(nn.Module):
    """Strided 3D conv encoder, global-average pooled to a ``channels[-1]`` vector.

    Each stage is ``Conv3d(kernel_size, stride 2) -> LeakyReLU(0.2)``; input
    ``(B, in_channels, D, H, W)`` with values roughly in [-1, 1], output ``(B, F)``.
    """

    def __init__(
        self, in_channels: int = 1, channels: Sequence[int] = (16, 32, 64), kernel_size: int = 3
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"channels must be a non-empty list of positive ints, got {channels}")
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        self.config = {
            "in_channels": int(in_channels),
            "channels": channels,
            "kernel_size": int(kernel_size),
        }
        layers: list[nn.Module] = []
        prev = int(in_channels)
        for c in channels:
            layers += [
                nn.Conv3d(prev, c, kernel_size, stride=2, padding=kernel_size // 2),
                nn.LeakyReLU(0.2),
            ]
            prev = c
        self.body = nn.Sequential(*layers)
        self.out_features = prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5:
            raise ValueError(f"expected 5-D input (B, C, D, H, W), got shape {tuple(x.shape)}")
        return self.body(x).mean(dim=(2, 3, 4))

    def reset_parameters(self, seed: int) -> None:
        """Kaiming-normal weights, zero biases, from a private generator (global RNG untouched)."""
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv3d):
                    fan_in = m.in_channels * int(np.prod(m.kernel_size))
                    std = (
                        2.0 / ((1 + 0.2**2) * fan_in)
                    ) ** 0.5  # He et al. gain for LeakyReLU(0.2)
                    m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * std)
                    m.bias.zero_()


def intensity_range_of(
    arrays: Sequence, lower: float = 0.5, upper: float = 99.5, seed: int = 0
) -> tuple[float, float]:
    """Pooled ``(lower, upper)`` percentiles of a set, on at most 10^6 voxels (fixed seed)."""
    voxels = np.concatenate(
        [np.asarray(getattr(a, "array", a), dtype=np.float64).reshape(-1) for a in arrays]
    )
    if voxels.size > 1_000_000:
        voxels = voxels[np.random.default_rng(seed).integers(0, voxels.size, 1_000_000)]
    lo, hi = np.percentile(voxels, [lower, upper])
    if hi <= lo:
        hi = lo + 1.0  # constant data: any positive width maps it to -1
    return float(lo), float(hi)


def _check_range(intensity_range) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in intensity_range)
    except (TypeError, ValueError):
        raise ValueError(f"intensity_range must be (low, high), got {intensity_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"intensity_range must be finite with high > low, got {intensity_range!r}")
    return lo, hi


class FeatureExtractor:
    """An encoder plus the intensity mapping and provenance needed to reuse it.

    Parameters
    ----------
    encoder : FeatureEncoder3D
    info : dict
        Provenance: at least ``name``; e.g. ``seed``, ``file``, ``training``.
    intensity_range : (float, float), optional
        Input ``[low, high]`` mapped linearly to [-1, 1] (no clipping, so
        out-of-range fakes still show in the features). ``None``: the caller
        must give one to :meth:`extract` (the report uses the real set's
        0.5-99.5 percentiles).
    """

    def __init__(self, encoder: FeatureEncoder3D, info: dict, intensity_range=None):
        self.encoder = encoder.eval()
        self.info = dict(info)
        self.info.setdefault("name", "conv3d-features")
        self.intensity_range = None if intensity_range is None else _check_range(intensity_range)

    @property
    def name(self) -> str:
        return str(self.info["name"])

    @property
    def feature_dim(self) -> int:
        return self.encoder.out_features

    def describe(self) -> dict:
        """JSON-friendly description: name, provenance, architecture, intensity range."""
        return {
            **self.info,
            "architecture": {"class": "FeatureEncoder3D", **self.encoder.config},
            "feature_dim": self.feature_dim,
            "intensity_range": None if self.intensity_range is None else list(self.intensity_range),
        }

    @torch.no_grad()
    def extract(self, arrays: Sequence, intensity_range=None) -> np.ndarray:
        """Features of each volume ``(z, y, x)``; returns ``(N, F)`` float64.

        ``intensity_range`` overrides the extractor's own; one of them is required.
        """
        rng = intensity_range if intensity_range is not None else self.intensity_range
        if rng is None:
            raise ValueError(
                f"intensity_range: extractor {self.name!r} has none, pass one to extract()"
            )
        lo, hi = _check_range(rng)
        feats = []
        for i, a in enumerate(arrays):
            arr = np.asarray(getattr(a, "array", a), dtype=np.float32)
            if arr.ndim != 3:
                raise ValueError(f"arrays[{i}] must be 3D (z, y, x), got shape {arr.shape}")
            x = torch.from_numpy(np.ascontiguousarray((arr - lo) / (hi - lo) * 2.0 - 1.0))[
                None, None
            ]
            feats.append(self.encoder(x)[0].double().numpy())
        if not feats:
            raise ValueError("arrays is empty: nothing to extract features from")
        return np.stack(feats)


class RandomConv3DFeatures(FeatureExtractor):
    """Random-projection features: :class:`FeatureEncoder3D` with fixed-seed random weights.

    Same seed and architecture => bit-identical features on one platform.
    A weaker but download-free stand-in for a trained network (Naeem et al. 2020).
    """

    def __init__(
        self,
        seed: int = 0,
        channels: Sequence[int] = (16, 32, 64),
        kernel_size: int = 3,
        intensity_range=None,
    ):
        encoder = FeatureEncoder3D(1, channels, kernel_size)
        encoder.reset_parameters(seed)
        info = {
            "name": "random-conv3d",
            "seed": int(seed),
            "training": f"none: random-projection features, seed {int(seed)}",
        }
        super().__init__(encoder, info, intensity_range)


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return stem.with_suffix(".safetensors"), stem.with_suffix(".json")


def save_feature_extractor(extractor: FeatureExtractor, path: str | Path) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (config), each atomically.

    Returns the two paths. Loading never unpickles anything.
    """
    from safetensors.torch import save as save_tensors

    from napari_medgan.io.atomic import atomic_write_bytes, atomic_write_text

    weights_path, config_path = _paths(path)
    state = {k: v.detach().contiguous().cpu() for k, v in extractor.encoder.state_dict().items()}
    config = {"format": FORMAT, "version": FORMAT_VERSION, **extractor.describe()}
    config.pop("file", None)
    atomic_write_bytes(weights_path, save_tensors(state))
    atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
    return weights_path, config_path


def load_feature_extractor(path: str | Path) -> FeatureExtractor:
    """Load an extractor from ``<stem>.safetensors`` + ``<stem>.json`` (either path may be given).

    The JSON must have ``format``/``version`` of this module and an
    ``architecture`` with ``in_channels``, ``channels``, ``kernel_size``; the
    safetensors keys and shapes must match that architecture exactly.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, config_path = _paths(path)
    for p in (weights_path, config_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"{p}: feature extractor file not found (need .safetensors and .json)"
            )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path}: not valid JSON ({err})") from None
    if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
            f"got {config.get('format')!r} version {config.get('version')!r}"
        )
    arch = config.get("architecture") or {}
    try:
        encoder = FeatureEncoder3D(arch["in_channels"], arch["channels"], arch["kernel_size"])
    except (KeyError, TypeError) as err:
        raise ValueError(
            f"{config_path}: architecture needs in_channels, channels, kernel_size ({err})"
        ) from None
    if encoder.config["in_channels"] != 1:
        raise ValueError(f"{config_path}: in_channels must be 1, got {arch['in_channels']}")
    try:
        state = load_file(str(weights_path))
        encoder.load_state_dict(state, strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ValueError(
            f"{weights_path}: weights do not match the architecture in {config_path.name}: {err}"
        ) from None
    info = {
        k: v
        for k, v in config.items()
        if k not in ("format", "version", "architecture", "feature_dim", "intensity_range")
    }
    info["file"] = str(weights_path)
    return FeatureExtractor(encoder, info, config.get("intensity_range"))


def _pretext_transform(x: torch.Tensor, label: int) -> torch.Tensor:
    """Apply pretext class ``label`` to ``(C, D, H, W)``.

    ``label % 4`` quarter turns in the (H, W) = (y, x) axial plane, then a flip of
    D (superior-inferior) when ``label >= 4``.
    """
    x = torch.rot90(x, label % 4, dims=(2, 3))
    return torch.flip(x, dims=(1,)) if label >= 4 else x


def train_feature_extractor(
    real_arrays: Sequence,
    steps: int = 300,
    seed: int = 0,
    channels: Sequence[int] = (16, 32, 64),
    kernel_size: int = 3,
    patch_size: int = 32,
    batch_size: int = 8,
    lr: float = 1e-3,
    intensity_range=None,
) -> FeatureExtractor:
    """Train :class:`FeatureEncoder3D` on real volumes by 3D rotation prediction.

    Each sample is a random cubic crop (side ``min(patch_size, smallest side)``)
    turned by one of 8 transforms -- 0/90/180/270 degrees in the axial (y, x)
    plane, with or without a superior-inferior flip -- and a linear head must
    name the transform (Gidaris et al. 2018; Taleb et al. 2020). Only the
    encoder is kept. Deterministic for a given ``seed`` on one platform.

    Parameters
    ----------
    real_arrays : sequence of np.ndarray
        Real (training) volumes ``(z, y, x)``; never the fakes being evaluated.
    steps, batch_size, lr : int, int, float
        Adam steps (300 x 8 crops of 32^3: one to four minutes on 2 busy CPU cores).
    intensity_range : (float, float), optional
        Default: the real set's 0.5-99.5 percentiles; stored with the weights.

    Returns
    -------
    FeatureExtractor
        ``info["training"]`` records objective, steps, seed, final loss/accuracy.
    """
    vols = [np.asarray(getattr(a, "array", a), dtype=np.float32) for a in real_arrays]
    if not vols or any(v.ndim != 3 for v in vols):
        raise ValueError("real_arrays must be a non-empty list of 3D (z, y, x) volumes")
    if int(steps) < 1 or int(batch_size) < 1 or int(patch_size) < 4:
        raise ValueError(
            "steps, batch_size >= 1 and patch_size >= 4 needed, "
            f"got {steps}, {batch_size}, {patch_size}"
        )
    lo, hi = (
        _check_range(intensity_range) if intensity_range is not None else intensity_range_of(vols)
    )
    side = min(int(patch_size), min(min(v.shape) for v in vols))
    rng = np.random.default_rng(seed)
    encoder = FeatureEncoder3D(1, channels, kernel_size)
    encoder.reset_parameters(seed)
    head = nn.Linear(encoder.out_features, N_PRETEXT_CLASSES)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(int(seed) + 1)
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
        head.bias.zero_()
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=float(lr))
    loss_fn = nn.CrossEntropyLoss()
    encoder.train()
    history = []
    for _ in range(int(steps)):
        crops, labels = [], rng.integers(0, N_PRETEXT_CLASSES, size=int(batch_size))
        for label in labels:
            v = vols[int(rng.integers(len(vols)))]
            z, y, x = (int(rng.integers(0, s - side + 1)) for s in v.shape)
            crop = torch.from_numpy(
                (v[z : z + side, y : y + side, x : x + side] - lo) / (hi - lo) * 2 - 1
            )
            crops.append(_pretext_transform(crop[None], int(label)))
        logits = head(encoder(torch.stack(crops)))
        target = torch.as_tensor(labels, dtype=torch.long)
        loss = loss_fn(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((loss.item(), (logits.argmax(1) == target).float().mean().item()))
    tail = history[-min(20, len(history)) :]
    info = {
        "name": "ssl-rotation-conv3d",
        "seed": int(seed),
        "training": {
            "objective": "3D rotation prediction (8 classes: 4 axial rotations x "
            "superior-inferior flip)",
            "data": f"{len(vols)} real volumes",
            "steps": int(steps),
            "batch_size": int(batch_size),
            "patch_size": side,
            "lr": float(lr),
            "final_loss": float(np.mean([h[0] for h in tail])),
            "final_accuracy": float(np.mean([h[1] for h in tail])),
        },
    }
    return FeatureExtractor(encoder.eval(), info, (lo, hi))
