"""Train on synthetic, test on real: does a set of image + label pairs teach a segmenter?

The figure researchers care about when they augment an annotated dataset. A
small MONAI 3D U-Net (``monai.networks.nets.UNet``) is trained with Dice +
cross-entropy (``monai.losses.DiceCELoss``) on one set of pairs and scored
with ``monai.metrics.DiceMetric`` on real pairs it never saw, per foreground
class. Every image is scaled by its own 1st/99th intensity percentiles, so a
segmenter trained on synthetic intensities is tested on real ones without a
shared normaliser that would hide a mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Width of the segmenter's levels (two downsamplings: patches of 16 voxels or more).
SEGMENTER_CHANNELS = (16, 32, 64)


def scale_image(image: np.ndarray) -> np.ndarray:
    """``image`` scaled so its 1st/99th percentiles map to 0/1 (float32)."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(image, [1, 99])
    return ((image - lo) / max(float(hi - lo), 1e-6)).astype(np.float32)


def _check_pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], what: str) -> None:
    if not len(images) or len(images) != len(labels):
        raise ValueError(f"{what}: expected as many label maps as images (at least one), got "
                         f"{len(images)} images and {len(labels)} label maps")
    for i, (img, lab) in enumerate(zip(images, labels)):
        if np.shape(img) != np.shape(lab) or np.ndim(img) != 3:
            raise ValueError(f"{what}[{i}]: image {np.shape(img)} and labels {np.shape(lab)} "
                             "must be the same 3D shape")


def build_segmenter(num_classes: int) -> torch.nn.Module:
    from monai.networks.nets import UNet

    return UNet(spatial_dims=3, in_channels=1, out_channels=int(num_classes),
                channels=SEGMENTER_CHANNELS, strides=(2, 2), num_res_units=1)


def train_segmenter(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    num_classes: int, *, steps: int = 300, batch_size: int = 4,
                    patch: int = 32, lr: float = 3e-3, seed: int = 0,
                    weights: Sequence[float] | None = None,
                    net: torch.nn.Module | None = None) -> torch.nn.Module:
    """Train a segmenter on ``(z, y, x)`` image/label pairs (random crops of ``patch``
    voxels, random flips) and return it in eval mode, on the CPU. Each crop comes from a
    pair drawn uniformly, or with probability proportional to ``weights``. Given ``net``
    (one this function returned), training goes on from it with a fresh optimiser: the
    second phase of a schedule, e.g. pre-training on synthetic pairs, fine-tuning on real."""
    from monai.losses import DiceCELoss

    _check_pairs(images, labels, "images")
    torch.manual_seed(int(seed))
    rng = np.random.default_rng(int(seed))
    xs = [scale_image(a) for a in images]
    ys = [np.asarray(a, dtype=np.int64) for a in labels]
    if min(min(a.shape) for a in xs) < patch:
        raise ValueError(f"patch: {patch} voxels is larger than the smallest volume "
                         f"{min(a.shape for a in xs)}")
    p = None
    if weights is not None:
        p = np.asarray(weights, dtype=np.float64)
        if p.shape != (len(xs),) or (p < 0).any() or not p.sum() > 0:
            raise ValueError(f"weights: {len(p)} non-negative values with a positive sum "
                             f"are needed, one per pair ({len(xs)})")
        p = p / p.sum()
    net = build_segmenter(num_classes) if net is None else net
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    net.train()
    for _ in range(int(steps)):
        bx, by = [], []
        for _ in range(int(batch_size)):
            i = int(rng.integers(len(xs))) if p is None else int(rng.choice(len(xs), p=p))
            start = [int(rng.integers(0, n - patch + 1)) for n in xs[i].shape]
            win = tuple(slice(s, s + patch) for s in start)
            flip = tuple(a for a in range(3) if rng.random() < 0.5)
            x, y = xs[i][win], ys[i][win]
            if flip:
                x, y = np.flip(x, flip), np.flip(y, flip)
            bx.append(np.ascontiguousarray(x))
            by.append(np.ascontiguousarray(y))
        x = torch.from_numpy(np.stack(bx))[:, None]
        y = torch.from_numpy(np.stack(by))[:, None]
        loss = loss_fn(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def dice_per_class(net: torch.nn.Module, images: Sequence[np.ndarray],
                   labels: Sequence[np.ndarray], num_classes: int,
                   patch: int = 32) -> np.ndarray:
    """Mean Dice over the cases for each foreground class (``num_classes - 1`` values; a
    class absent from both a case's truth and its prediction is left out of that mean)."""
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric

    _check_pairs(images, labels, "images")
    metric = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=True)
    k = int(num_classes)
    for img, lab in zip(images, labels):
        x = torch.from_numpy(scale_image(img))[None, None]
        logits = sliding_window_inference(x, (patch,) * 3, 4, net, overlap=0.25, mode="gaussian")
        pred = torch.nn.functional.one_hot(logits.argmax(1), k).permute(0, 4, 1, 2, 3)
        truth = torch.nn.functional.one_hot(torch.from_numpy(np.asarray(lab, dtype=np.int64))[None],
                                            k).permute(0, 4, 1, 2, 3)
        metric(pred, truth)
    return metric.aggregate().cpu().numpy()


def segmenter_dice(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                   test_images: Sequence[np.ndarray], test_labels: Sequence[np.ndarray],
                   num_classes: int, *, steps: int = 300, seed: int = 0,
                   weights: Sequence[float] | None = None) -> np.ndarray:
    """Train on ``images``/``labels``, test on the real ``test_*`` pairs: per-class Dice
    (see :func:`train_segmenter` and :func:`dice_per_class`)."""
    net = train_segmenter(images, labels, num_classes, steps=steps, seed=seed, weights=weights)
    return dice_per_class(net, test_images, test_labels, num_classes)
