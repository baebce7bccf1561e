"""Differentiable 3D augmentations for the discriminator's inputs.

Following Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
GAN Training" (NeurIPS), the *same* random augmentation policy is applied to
real and generated batches right before the discriminator, and every
operation is differentiable with respect to its input, so the generator is
trained through it. With few training volumes (the usual case in medical
imaging) this keeps the discriminator from memorising them. The per-sample
probability ``p`` and the "apply, then pick a random group element" form of
the flip follow Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data" (ADA, NeurIPS): for ``p`` below ~0.8 the augmentations do
not leak into the generated distribution.

Tensors are ``(B, C, D, H, W)``. Geometric operations (flip, translation,
cutout) act on all channels together so a condition, an image and its one-hot
labels stay aligned; brightness/contrast act only on the channels the caller
names as intensities (never on one-hot label channels or masks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IntensityChannels = int | slice | Sequence[int] | None


def _channel_mask(spec: IntensityChannels, channels: int) -> torch.Tensor:
    """Boolean ``(C,)`` mask of the channels that get intensity changes."""
    mask = torch.zeros(channels, dtype=torch.bool)
    if spec is None:
        mask[:] = True
    elif isinstance(spec, bool):
        raise ValueError(f"intensity_channels: expected a count, slice or indices, got {spec!r}")
    elif isinstance(spec, int):
        if not 0 <= spec <= channels:
            raise ValueError(f"intensity_channels: count must be in 0..{channels}, got {spec}")
        mask[:spec] = True
    elif isinstance(spec, slice):
        mask[spec] = True
    else:
        idx = [int(i) for i in spec]
        if any(not -channels <= i < channels for i in idx):
            raise ValueError(f"intensity_channels: indices must be in 0..{channels - 1}, got {idx}")
        mask[idx] = True
    return mask


class DiffAugment3D:
    """Random, differentiable flips, brightness/contrast, translation and cutout for 3D batches.

    Parameters
    ----------
    p : float
        Probability that each operation is applied to each sample (ADA's ``p``;
        may be changed between steps for adaptive schedules).
    flip : bool
        Per spatial axis: with probability ``p`` pick a random flip (so a flip
        happens with probability ``p / 2``, which never leaks an orientation).
    intensity : bool
        Brightness shift ``U(-0.25, 0.25)`` and contrast factor
        ``exp(U(-0.35, 0.35))`` around each sample's channel mean, on intensity
        channels only (data normalised to about ``[-1, 1]``).
    translate : float
        Largest integer shift as a fraction of each spatial size; vacated voxels
        are zero-filled (DiffAugment's choice). 0 disables.
    cutout : float
        Edge of the zeroed box as a fraction of each spatial size. 0 disables.

    Examples
    --------
    >>> aug = DiffAugment3D(p=0.5)
    >>> y = aug(x, generator=torch.Generator().manual_seed(0), intensity_channels=1)
    """

    def __init__(self, p: float = 0.6, flip: bool = True, intensity: bool = True,
                 translate: float = 0.125, cutout: float = 0.25) -> None:
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        if not 0.0 <= float(translate) < 1.0:
            raise ValueError(f"translate: expected a fraction in [0, 1), got {translate!r}")
        if not 0.0 <= float(cutout) < 1.0:
            raise ValueError(f"cutout: expected a fraction in [0, 1), got {cutout!r}")
        self.p = float(p)
        self.flip = bool(flip)
        self.intensity = bool(intensity)
        self.translate = float(translate)
        self.cutout = float(cutout)

    def __repr__(self) -> str:
        return (f"DiffAugment3D(p={self.p}, flip={self.flip}, intensity={self.intensity}, "
                f"translate={self.translate}, cutout={self.cutout})")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None,
                 intensity_channels: IntensityChannels = None) -> torch.Tensor:
        """Augment a batch.

        Parameters
        ----------
        x : torch.Tensor
            ``(B, C, D, H, W)`` batch (real or generated, possibly requiring grad).
        generator : torch.Generator, optional
            CPU generator for reproducible draws; the global RNG when None.
        intensity_channels : int, slice, sequence of int, or None
            Which channels carry intensities: a count of leading channels, a
            slice, or indices. ``None`` means all channels.

        Returns
        -------
        torch.Tensor
            Same shape, dtype and device; differentiable with respect to ``x``.
        """
        if x.ndim != 5:
            raise ValueError(f"x: expected 5-D input (B, C, D, H, W), got shape {tuple(x.shape)}")
        if self.p <= 0:
            return x
        b = x.shape[0]

        def rand(*shape: int) -> torch.Tensor:
            # drawn on the CPU (where the generator lives): the same numbers on any device,
            # and the decisions below read them without waiting for the GPU
            return torch.rand(*shape, generator=generator)

        if self.flip:
            for dim in (2, 3, 4):
                do = (rand(b) < self.p) & (rand(b) < 0.5)
                x = torch.where(do.view(b, 1, 1, 1, 1).to(x.device), x.flip(dim), x)
        if self.intensity:
            x = self._intensity(x, _channel_mask(intensity_channels, x.shape[1]), rand)
        if self.translate > 0:
            x = self._translate(x, rand)
        if self.cutout > 0:
            x = self._cutout(x, rand)
        return x

    def _intensity(self, x, channels, rand) -> torch.Tensor:
        b = x.shape[0]
        if not bool(channels.any()):  # a CPU mask: no device sync
            return x
        channels = channels.to(x.device)
        apply_b = (rand(b) < self.p).float().view(b, 1, 1, 1, 1)
        apply_c = (rand(b) < self.p).float().view(b, 1, 1, 1, 1)
        shift = (rand(b) - 0.5).mul(0.5).view(b, 1, 1, 1, 1) * apply_b
        gain = torch.exp((rand(b) - 0.5) * 0.7).view(b, 1, 1, 1, 1)
        gain = 1.0 + (gain - 1.0) * apply_c
        shift, gain = shift.to(x.device, x.dtype), gain.to(x.device, x.dtype)
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        changed = (x - mean) * gain + mean + shift
        return torch.where(channels.view(1, -1, 1, 1, 1), changed, x)

    def _translate(self, x, rand) -> torch.Tensor:
        b, sizes = x.shape[0], x.shape[2:]
        apply = rand(b) < self.p
        out = []
        for i in range(b):
            xi = x[i]
            if bool(apply[i]):
                for axis, n in enumerate(sizes):
                    reach = int(n * self.translate)
                    if reach == 0:
                        continue
                    shift = int((rand(1) * (2 * reach + 1)).floor().item()) - reach
                    if shift == 0:
                        continue
                    dim = axis + 1  # (C, D, H, W) inside the loop
                    rolled = torch.roll(xi, shifts=shift, dims=dim)
                    keep = torch.ones(n, dtype=x.dtype, device=x.device)
                    # zero what wrapped around, so it reads as a shift with zero padding
                    if shift > 0:
                        keep[:shift] = 0
                    else:
                        keep[shift:] = 0
                    view = [1, 1, 1, 1]
                    view[dim] = n
                    xi = rolled * keep.view(view)
            out.append(xi)
        return torch.stack(out, 0)

    def _cutout(self, x, rand) -> torch.Tensor:
        b, sizes = x.shape[0], x.shape[2:]
        apply = rand(b) < self.p
        mask = torch.ones(b, 1, *sizes, dtype=x.dtype, device=x.device)
        for i in range(b):
            if not bool(apply[i]):
                continue
            box = []
            for n in sizes:
                edge = max(1, int(round(n * self.cutout)))
                centre = int((rand(1) * n).floor().item())
                box.append(slice(max(0, centre - edge // 2), min(n, centre - edge // 2 + edge)))
            mask[(i, 0, *box)] = 0
        return x * mask
