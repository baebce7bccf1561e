"""Hierarchical 3D GAN: whole volumes at clinical sizes in bounded training memory.

After HA-GAN (Sun, Chen, Sun, Batmanghelich & Liu, "Hierarchical Amortized GAN for
3D High Resolution Medical Image Synthesis", IEEE JBHI 2022): a generator trunk maps the
latent to features at 1/4 resolution; a low-resolution head turns them into the whole
volume at 1/4 resolution, and a high-resolution branch turns one *slab* of them (a few
full-resolution z planes) into full-resolution voxels. Each training step generates the
whole low-resolution volume and one random slab, and two discriminators judge them: one
the low-resolution volume, one the slab with its position (a z-coordinate channel).
Training memory therefore grows with the low-resolution volume and the slab, not with the
full volume; at inference the high-resolution branch runs over every slab (with two
feature planes of context each side, which makes the result exactly the one-pass result)
and returns the whole volume.

One addition to the paper: a consistency term (L1 between the 4x average-pooled slab and
the matching planes of the low-resolution output, which is not moved by it) ties the
slab's content to the whole volume's layout. The optional encoder of HA-GAN is not built.

Tensors are ``(B, C, D, H, W)`` with D the z axis; the volume shape ``(x, y, z)`` of the
config is ``(W, H, D)`` here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from napari_medgan.models.blocks import spectral_norm as _spectral_norm
from napari_medgan.models.blocks import upsample_block
from napari_medgan.models.dcgan3d import _init_dcgan
from napari_medgan.tasks import FAMILIES, get_task

__all__ = ["HierarchicalGenerator3D", "HierarchicalDiscriminator3D", "build_generator",
           "build_discriminator", "channels_for", "memory_voxels", "patch_shape", "train_step"]

#: Tasks this family serves, the default first (declared with the task registry).
TASKS = FAMILIES["hagan3d"]

#: Network layout stored in checkpoints as ``model_layout``.
LAYOUT_VERSION = 2
LAYOUT_NOTE = "HA-GAN trunk to 1/4 resolution, low-resolution head, slab branch; " \
    "critics with a linear output layer"

FACTOR = 4  # full resolution / low resolution, per axis
MARGIN = 2  # feature planes of context on each side of a slab
CONSISTENCY_WEIGHT = 5.0


def _up_block(c_in: int, c_out: int) -> nn.Sequential:
    return upsample_block(c_in, c_out, nn.BatchNorm3d(c_out))


def _head(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Channel 0 an image in [-1, 1] (tanh); the rest a softmax over the label classes."""
    image = torch.tanh(x[:, :1])
    if not num_classes:
        return image
    labels = torch.softmax(x[:, 1:].float(), dim=1).to(image.dtype)  # sums to 1 under bf16
    return torch.cat([image, labels], dim=1)


class HierarchicalGenerator3D(nn.Module):
    """Latent -> whole volume, trained one slab at a time.

    ``z (B, latent_dim)`` -> linear -> ``(B, 8c, S/32)`` -> three [2x nearest upsample,
    3^3 conv, batch norm, ReLU] blocks -> features ``(B, 2c, S/4)``. The low-resolution
    head is [conv, BN, ReLU, conv] at S/4; the slab branch two more upsampling blocks and a
    conv, at S/2 and S.

    Parameters
    ----------
    latent_dim : int
        Length of z.
    out_channels : int
        1, or ``1 + num_classes`` for image + label synthesis.
    channels : int
        ``c`` above: the width at full resolution is ``c // 2``.
    shape : tuple of 3 ints
        Full-resolution volume ``(D, H, W)``, each a multiple of 32.
    slab_size : int
        Full-resolution z planes per training slab, a multiple of 8, at most D.
    num_classes : int
        0 for image only, else the label classes of the joint output.

    ``forward(z)`` returns the whole volume ``(B, out_channels, D, H, W)``;
    ``forward(z, slab_start)`` (training) returns ``(low, slab)``: the low-resolution
    volume ``(B, out_channels, D/4, H/4, W/4)`` and the full-resolution planes
    ``slab_start : slab_start + slab_size``.
    """

    def __init__(self, latent_dim: int, out_channels: int, channels: int,
                 shape: tuple[int, int, int], slab_size: int, num_classes: int = 0) -> None:
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or any(s < 32 or s % 32 for s in shape):
            raise ValueError(f"shape: expected (D, H, W), each a multiple of 32, got {shape}")
        if int(slab_size) < 8 or int(slab_size) % 8 or int(slab_size) > shape[0]:
            raise ValueError(f"slab_size: expected a multiple of 8 between 8 and the depth "
                             f"{shape[0]}, got {slab_size!r}")
        if num_classes and out_channels != 1 + num_classes:
            raise ValueError(f"out_channels: expected 1 + num_classes = {1 + num_classes}, "
                             f"got {out_channels!r}")
        c = int(channels)
        if c < 4 or c % 2:
            raise ValueError(f"channels: expected an even number >= 4, got {channels!r}")
        self.latent_dim, self.out_channels = int(latent_dim), int(out_channels)
        self.num_classes, self.shape, self.slab_size = int(num_classes), shape, int(slab_size)
        self.base = tuple(s // 32 for s in shape)
        self.low_shape = tuple(s // FACTOR for s in shape)
        self.fc = nn.Linear(self.latent_dim, 8 * c * self.base[0] * self.base[1] * self.base[2])
        # group norm on the seed: a 32^3 target has a 1^3 seed, where batch norm would see
        # one value per channel at batch size 1
        self.seed = nn.Sequential(nn.GroupNorm(8, 8 * c), nn.ReLU(inplace=True))
        self.trunk = nn.Sequential(_up_block(8 * c, 4 * c), _up_block(4 * c, 2 * c),
                                   _up_block(2 * c, 2 * c))
        self.low = nn.Sequential(
            nn.Sequential(nn.Conv3d(2 * c, c, 3, padding=1, bias=False), nn.BatchNorm3d(c),
                          nn.ReLU(inplace=True)),
            nn.Conv3d(c, self.out_channels, 3, padding=1))
        self.high = nn.Sequential(_up_block(2 * c, c), _up_block(c, c // 2),
                                  nn.Conv3d(c // 2, self.out_channels, 3, padding=1))
        self.apply(_init_dcgan)

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """``(n, latent_dim)`` standard-normal latents, drawn on ``generator``'s device."""
        if device is None:
            device = next(self.parameters()).device
        source = generator.device if generator is not None else device
        return torch.randn(int(n), self.latent_dim, generator=generator, device=source).to(device)

    def features(self, z: torch.Tensor) -> torch.Tensor:
        """The shared trunk: ``(B, 2c, D/4, H/4, W/4)``."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"HierarchicalGenerator3D: expected latent of shape "
                             f"(B, {self.latent_dim}), got {tuple(z.shape)}")
        x = self.fc(z).view(z.shape[0], -1, *self.base)
        return self.trunk(self.seed(x))

    def low_volume(self, features: torch.Tensor) -> torch.Tensor:
        return _head(self.low(features), self.num_classes)

    def slab(self, features: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Full-resolution z planes ``start:stop`` from the features, with :data:`MARGIN`
        feature planes of context on each side (fewer at the volume's ends, as in one pass)."""
        lo = max(0, start // FACTOR - MARGIN)
        hi = min(features.shape[2], -(-stop // FACTOR) + MARGIN)
        out = _head(self.high(features[:, :, lo:hi]), self.num_classes)
        return out[:, :, start - FACTOR * lo: stop - FACTOR * lo]

    def forward(self, z: torch.Tensor, slab_start: int | None = None):
        feats = self.features(z)
        if slab_start is not None:
            start = int(slab_start)
            if not 0 <= start <= self.shape[0] - self.slab_size:
                raise ValueError(f"slab_start: expected 0..{self.shape[0] - self.slab_size}, "
                                 f"got {slab_start!r}")
            return self.low_volume(feats), self.slab(feats, start, start + self.slab_size)
        depth = self.shape[0]
        return torch.cat([self.slab(feats, s, min(s + self.slab_size, depth))
                          for s in range(0, depth, self.slab_size)], dim=2)


def _critic(in_channels: int, channels: int, shape: tuple[int, ...],
            spectral_norm: bool) -> nn.Sequential:
    """Strided 4^3 convolutions (LeakyReLU 0.2) while the smallest side stays >= 4 (at most
    four), then flatten and one linear layer: one logit per sample that sees the whole input
    (as DCGAN's discriminator does; a patch critic this shallow judged texture, not anatomy)."""
    layers: list[nn.Module] = []
    c_in, dims, c_out = in_channels, [int(s) for s in shape], channels
    for _ in range(4):
        if min(dims) < 8:
            break
        layers += [nn.Conv3d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        c_in, dims, c_out = c_out, [d // 2 for d in dims], min(2 * c_out, 8 * channels)
    layers += [nn.Flatten(), nn.Linear(c_in * math.prod(dims), 1)]
    net = nn.Sequential(*layers)
    net.apply(_init_dcgan)
    if spectral_norm:
        for module in net.modules():
            if isinstance(module, (nn.Conv3d, nn.Linear)):
                _spectral_norm(module)
    return net


class HierarchicalDiscriminator3D(nn.Module):
    """Two critics in one module (one DDP wrapper): the low-resolution volume, and the slab
    with a z-coordinate channel (each plane's centre in the whole volume, scaled to
    (-1, 1)). ``forward(low, slab, slab_start)`` returns the logits
    ``((B, 1), (B, 1))``."""

    def __init__(self, in_channels: int, channels: int, shape: tuple[int, int, int],
                 slab_size: int, spectral_norm: bool = True) -> None:
        super().__init__()
        self.in_channels, self.depth = int(in_channels), int(shape[0])
        low_shape = tuple(int(s) // FACTOR for s in shape)
        self.low = _critic(self.in_channels, int(channels), low_shape, spectral_norm)
        slab_shape = (int(slab_size), int(shape[1]), int(shape[2]))
        self.high = _critic(self.in_channels + 1, max(int(channels) // 2, 4), slab_shape,
                            spectral_norm)

    def forward(self, low: torch.Tensor, slab: torch.Tensor, slab_start: int):
        for x, what in ((low, "low"), (slab, "slab")):
            if x.ndim != 5 or x.shape[1] != self.in_channels:
                raise ValueError(f"HierarchicalDiscriminator3D: expected {what} input "
                                 f"(B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        b, _, d, h, w = slab.shape
        planes = torch.arange(int(slab_start), int(slab_start) + d, device=slab.device)
        zc = ((planes.to(slab.dtype) + 0.5) / self.depth * 2 - 1).view(1, 1, d, 1, 1)
        slab = torch.cat([slab, zc.expand(b, 1, d, h, w).to(slab.dtype)], dim=1)
        return self.low(low), self.high(slab)


def patch_shape(cfg) -> tuple[int, int, int]:
    """What the data pipeline samples for this family: the whole volume ``(z, y, x)``."""
    shape = cfg.volume_shape or (int(cfg.patch_size),) * 3
    return tuple(int(s) for s in shape[::-1])  # config (x, y, z) -> arrays (z, y, x)


def memory_voxels(cfg) -> int:
    """What a training step's activations grow with (the memory planner's size): the
    full-resolution planes the slab branch computes (the slab and its context planes), plus
    the whole volume at 1/4 resolution, whose trunk features are about four times wider
    than the slab's (counted as 1/16 of the full volume)."""
    d, h, w = patch_shape(cfg)
    planes = min(int(cfg.slab_size) + 2 * MARGIN * FACTOR, d)
    return int(planes * h * w + d * h * w // 16)


def channels_for(cfg) -> tuple[int, int]:
    """``(latent_dim, image channels)``: 1, or ``1 + num_classes`` for task joint."""
    from napari_medgan.models.dcgan3d import channels_for as dcgan_channels

    return dcgan_channels(cfg)


def build_generator(cfg) -> HierarchicalGenerator3D:
    latent, out = channels_for(cfg)
    return HierarchicalGenerator3D(
        latent_dim=latent, out_channels=out, channels=int(cfg.channels), shape=patch_shape(cfg),
        slab_size=int(cfg.slab_size),
        num_classes=int(cfg.num_classes) if get_task(cfg.task).outputs_labels else 0)


def build_discriminator(cfg) -> HierarchicalDiscriminator3D:
    _, out = channels_for(cfg)
    return HierarchicalDiscriminator3D(in_channels=out, channels=int(cfg.channels),
                                       shape=patch_shape(cfg), slab_size=int(cfg.slab_size),
                                       spectral_norm=bool(cfg.spectral_norm))


def train_step(trainer, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One HA-GAN step: a random slab position (a multiple of 4, from the trainer's data
    RNG), one discriminator update on the low-resolution volumes and the slabs (lazy R1 on
    both), one generator update through both critics plus the consistency term; the EMA
    follows. Returns the losses on the device."""
    from napari_medgan.training.device import autocast
    from napari_medgan.training.ema import unwrap, update_ema
    from napari_medgan.training.losses import discriminator_loss, generator_loss

    cfg = trainer.config.train
    real = trainer.to_device(batch["image"])
    gen = unwrap(trainer.G)
    slab = gen.slab_size
    start = FACTOR * int(trainer.rng.integers(0, (real.shape[2] - slab) // FACTOR + 1))
    low_planes = slice(start // FACTOR, (start + slab) // FACTOR)
    real_low = F.avg_pool3d(real, FACTOR)
    real_slab = real[:, :, start:start + slab]
    with autocast(trainer.device, trainer.amp_dtype):
        fake_low, fake_slab = trainer.G(gen.sample_latent(real.shape[0], device=trainer.device),
                                        start)

    d_module = unwrap(trainer.D)
    low_in = trainer._augment(torch.cat([real_low, fake_low.detach().float()]))
    slab_in = trainer._augment(torch.cat([real_slab, fake_slab.detach().float()]))
    do_r1 = trainer.r1_due()
    if do_r1:
        low_in, slab_in = low_in.detach().requires_grad_(True), \
            slab_in.detach().requires_grad_(True)
    with autocast(trainer.device, trainer.amp_dtype):
        logits_low, logits_slab = trainer.D(low_in, slab_in, start)
    real_l, fake_l = logits_low.float().chunk(2)
    real_s, fake_s = logits_slab.float().chunk(2)
    loss_d = discriminator_loss(cfg.loss, real_l, fake_l) + \
        discriminator_loss(cfg.loss, real_s, fake_s)
    losses = {"D": loss_d.detach()}
    if do_r1:
        loss_d = trainer.with_r1(loss_d, real_l + real_s, (low_in, slab_in), losses)
    trainer._update(trainer.opt_d, loss_d, trainer.D)

    d_module.requires_grad_(False)
    with autocast(trainer.device, trainer.amp_dtype):
        g_low, g_slab = d_module(trainer._augment(fake_low), trainer._augment(fake_slab), start)
    loss_g = generator_loss(cfg.loss, g_low.float()) + generator_loss(cfg.loss, g_slab.float())
    losses["G"] = loss_g.detach()
    pooled = F.avg_pool3d(fake_slab.float(), FACTOR)
    consistency = F.l1_loss(pooled, fake_low[:, :, low_planes].detach().float())
    losses["C"] = consistency.detach()
    trainer._update(trainer.opt_g, loss_g + CONSISTENCY_WEIGHT * consistency, trainer.G)
    d_module.requires_grad_(True)
    update_ema(trainer.ema, trainer.G, cfg.ema_decay, trainer.step)
    return losses
