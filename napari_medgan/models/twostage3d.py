"""Two-stage image + label pair synthesis: a label map from noise, then an image from it.

The design of MAISI (MONAI) and brainSPADE (Fernandez et al., "Can segmentation models be
trained with fully synthetically generated data?", SASHIMI 2022): instead of one network
drawing image and labels together (``dcgan3d`` joint), two easier problems.

* **Stage 1**, the label-map generator: a DCGAN generator (:class:`LabelGenerator3D`,
  nearest upsampling + convolution blocks) from noise to class probabilities (softmax),
  judged by a DCGAN critic on label maps alone, which also sees the spread of its
  features over groups of samples (minibatch standard deviation), so maps that are all
  alike are told apart from real ones. With ``model.label_scale`` 2 it
  works at half the patch side, on real label maps box-averaged to that grid (partial-volume
  class fractions), and its probabilities are upsampled (trilinear) to the patch before the
  argmax: the anatomy's layout is learnt on a grid 8x smaller, the boundaries come back
  smooth, and stage 2 adds the full-resolution appearance.
  The critic judges the map a sample is made of, not the probabilities
  (:func:`sampled_map`): the one-hot argmax on the patch grid, pooled to stage 1's grid like
  the real maps, with the probabilities' gradient passed straight through (Bengio et al.
  2013, arXiv:1308.3432). Judged on soft probabilities, the critic told fakes by their
  softness, and a thin class between two others (the CSF between skull and grey matter)
  lost the argmax wherever the generator hedged: at 32^3 the sampled maps had 45% of the
  real CSF volume and a segmenter trained on the pairs scored CSF Dice 0.45 on real heads;
  judged on the sampled map, 0.71 (``benchmarks/augmentation.py``).
* **Stage 2**, the image generator: the SPADE generator of ``pix2pix3d`` label2image
  (:class:`napari_medgan.models.spade3d.SPADEGenerator3D`, which starts from the per-class
  mean intensity and learns the correction), trained on the *real* pairs with the
  conditional losses (two-scale PatchGAN on label map + image, L1, feature matching).
  It is fully convolutional and learns local appearance, so it trains on random crops of
  a quarter of the patch side, at least 16 voxels (:func:`stage2_crop`), and draws whole
  maps: at 32^3 a trainer step is 2.2x faster on a CPU (0.54 -> 0.24 s), and stage 1 gets
  that many more steps.

A sample is the stage-1 label map made one-hot (argmax), and the stage-2 image computed from
exactly that map: image and labels agree by construction. The two stages train together,
one step each per trainer step, in one generator and one discriminator module (one optimiser
each, one DDP wrapper each): their parameters are disjoint, so this is two independent GANs
on one clock.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from napari_medgan.models.dcgan3d import Discriminator3D, Generator3D
from napari_medgan.models.pix2pix3d import MultiScalePatchDiscriminator3D
from napari_medgan.models.spade3d import SPADEGenerator3D
from napari_medgan.tasks import FAMILIES

#: Tasks this family serves (declared with the task registry).
TASKS = FAMILIES["twostage3d"]

#: Network layout stored in checkpoints as ``model_layout``.
LAYOUT_VERSION = 2
LAYOUT_NOTE = "DCGAN label-map generator and critic (with the minibatch standard-deviation " \
    "feature); SPADE image generator and two-scale PatchGAN on label map + image"


class LabelGenerator3D(Generator3D):
    """Latent -> class probabilities ``(B, K, S, S, S)`` (softmax over the channels, in
    float32 so they sum to 1 under bf16 autocast). The DCGAN generator with ``K`` output
    channels."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.logits(z)
        return torch.softmax(logits.float(), dim=1).to(logits.dtype)


def upsample(probabilities: torch.Tensor, scale: int) -> torch.Tensor:
    """Stage 1's class probabilities on the patch grid: trilinear ``x scale``, channels-last
    in memory (at 64^3 the upsampling and the argmax over the classes then take 30 ms instead
    of 150 ms on a CPU)."""
    if scale == 1:
        return probabilities
    return F.interpolate(probabilities.contiguous(memory_format=torch.channels_last_3d),
                         scale_factor=scale, mode="trilinear", align_corners=False)


def one_hot(probabilities: torch.Tensor) -> torch.Tensor:
    """Class probabilities ``(B, K, ...)`` -> the one-hot map of their argmax, same dtype."""
    index = probabilities.argmax(1, keepdim=True)
    return torch.zeros_like(probabilities).scatter_(1, index, 1)


class TwoStageGenerator3D(nn.Module):
    """Stage 1 (:attr:`labels`) and stage 2 (:attr:`image`) in one module.

    ``forward(z)`` samples pairs: ``(B, 1 + K, S, S, S)``, the image (normalised units)
    then the one-hot label map it was computed from, the output of every joint generator.
    ``forward(z, labels)`` is the training pass, both stages in one call (one DDP pass):
    ``(stage-1 probabilities for z on its own grid, stage-2 image for the given one-hot
    labels)``.
    """

    def __init__(self, latent_dim: int, num_classes: int, channels: int,
                 spatial_size: int, label_scale: int = 1) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"num_classes: expected >= 2, got {num_classes!r}")
        if int(label_scale) not in (1, 2) or int(spatial_size) % int(label_scale):
            raise ValueError(f"label_scale: expected 1 or 2 (dividing {spatial_size}), got "
                             f"{label_scale!r}")
        self.latent_dim, self.num_classes = int(latent_dim), int(num_classes)
        self.out_channels = 1 + self.num_classes
        self.spatial_size, self.label_scale = int(spatial_size), int(label_scale)
        self.labels = LabelGenerator3D(latent_dim=latent_dim, out_channels=self.num_classes,
                                       channels=channels,
                                       spatial_size=self.spatial_size // self.label_scale)
        self.image = SPADEGenerator3D(in_channels=self.num_classes, channels=channels)

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """``(n, latent_dim)`` standard-normal latents (see :meth:`Generator3D.sample_latent`)."""
        return self.labels.sample_latent(n, generator=generator, device=device)

    def fit_to_data(self, data) -> None:
        """Stage 2 starts from the per-class mean intensity of the training pairs."""
        self.image.fit_to_data(data)

    def label_probabilities(self, z: torch.Tensor) -> torch.Tensor:
        """Stage 1's class probabilities for ``z`` on the patch grid (upsampled from the
        coarse grid when ``label_scale`` is 2)."""
        return upsample(self.labels(z), self.label_scale)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None):
        if labels is not None:
            return self.labels(z), self.image(labels)
        hard = one_hot(self.label_probabilities(z))
        image = self.image(hard)
        return torch.cat([image, hard.to(image.dtype)], dim=1)


class TwoStageDiscriminator3D(nn.Module):
    """The two critics in one module: :attr:`labels` (DCGAN critic on one-hot label maps)
    and :attr:`pair` (two-scale PatchGAN on label map + image).
    ``forward(label_maps, pairs)`` returns ``(logits (B, 1), patch logits (B, N))``."""

    def __init__(self, num_classes: int, channels: int, spatial_size: int,
                 spectral_norm: bool = True, label_scale: int = 1) -> None:
        super().__init__()
        self.labels = Discriminator3D(in_channels=int(num_classes), channels=channels,
                                      spatial_size=int(spatial_size) // int(label_scale),
                                      spectral_norm=spectral_norm, minibatch_std=True)
        self.pair = MultiScalePatchDiscriminator3D(in_channels=int(num_classes) + 1,
                                                   channels=channels,
                                                   spectral_norm=spectral_norm)

    def forward(self, label_maps: torch.Tensor, pairs: torch.Tensor, splits: int = 1):
        """``splits``: the batch is that many equal parts (real, fake) that the label
        critic's minibatch statistics never mix."""
        return self.labels(label_maps, splits), self.pair(pairs)


def sampled_map(probabilities: torch.Tensor, scale: int) -> torch.Tensor:
    """What the label critic sees of stage 1's ``probabilities`` (on its own grid): the
    one-hot map a sample is made of (the argmax on the patch grid, as
    :meth:`TwoStageGenerator3D.forward` draws it), box-averaged back to stage 1's grid when
    ``scale`` is 2 (as the real maps are). Its gradient is the probabilities' own
    (straight-through estimator): the upsampling and pooling are left out of the backward
    pass, where at 64^3 they had doubled the time of a demo step. Float32."""
    probabilities = probabilities.float()
    with torch.no_grad():
        if scale == 1:
            hard = one_hot(probabilities)
        else:
            hard = pooled_one_hot(upsample(probabilities, scale).argmax(1),
                                  probabilities.shape[1], scale)
    return hard + probabilities - probabilities.detach()


def pooled_one_hot(index: torch.Tensor, num_classes: int, scale: int) -> torch.Tensor:
    """``avg_pool3d(one-hot of index, scale)`` without the full-size one-hot map: each coarse
    voxel counts the classes of its ``scale**3`` fine voxels (``(B, D, H, W)`` class indices
    -> ``(B, K, D/s, H/s, W/s)`` float32 fractions). At the demo's 64^3, upsampling included, the
    pooled map takes 44 ms this way and 83 ms through the one-hot map on a 2-core CPU."""
    b, d, h, w = index.shape
    s = int(scale)
    blocks = index.reshape(b, d // s, s, h // s, s, w // s, s).permute(0, 2, 4, 6, 1, 3, 5)
    blocks = blocks.reshape(b, s ** 3, d // s, h // s, w // s)
    out = torch.zeros((b, num_classes, d // s, h // s, w // s), dtype=torch.float32,
                      device=index.device)
    share = torch.full((b, 1, d // s, h // s, w // s), 1.0 / s ** 3, device=index.device)
    for j in range(s ** 3):
        out.scatter_add_(1, blocks[:, j:j + 1], share)
    return out


def stage2_crop(pairs: torch.Tensor, rng) -> torch.Tensor:
    """Random cubic crops of a quarter of the side (at least 16 voxels, a multiple of 4 for
    the SPADE generator), one per sample, from ``(B, C, S, S, S)`` real pairs; ``rng`` is the
    trainer's NumPy generator (its state is checkpointed, so a resumed run crops the same)."""
    side = pairs.shape[-1]
    size = min(side, max(16, side // 4 // 4 * 4))
    if size == side:
        return pairs
    corners = rng.integers(0, side - size + 1, size=(pairs.shape[0], 3))
    return torch.stack([p[:, z:z + size, y:y + size, x:x + size]
                        for p, (z, y, x) in zip(pairs, corners.tolist())])


def channels_for(cfg) -> tuple[int, int]:
    """``(latent_dim, 1 + num_classes)``: noise in, image + label map out."""
    from napari_medgan.models.dcgan3d import channels_for as dcgan_channels

    return dcgan_channels(cfg)


def build_generator(cfg) -> TwoStageGenerator3D:
    latent, out = channels_for(cfg)
    return TwoStageGenerator3D(latent_dim=latent, num_classes=out - 1,
                               channels=int(cfg.channels), spatial_size=int(cfg.patch_size),
                               label_scale=int(cfg.label_scale))


def image_stage(generator: TwoStageGenerator3D) -> SPADEGenerator3D:
    """Stage 2 alone: one-hot label map ``(B, K, D, H, W)`` -> image (normalised units), for
    a label map the user gives (``napari-medgan generate --condition``, Synthesize &
    Compare's label layer)."""
    return generator.image


def build_discriminator(cfg) -> TwoStageDiscriminator3D:
    _, out = channels_for(cfg)
    return TwoStageDiscriminator3D(num_classes=out - 1, channels=int(cfg.channels),
                                   spatial_size=int(cfg.patch_size),
                                   spectral_norm=bool(cfg.spectral_norm),
                                   label_scale=int(cfg.label_scale))


def train_step(trainer, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One step of each stage. Stage 1: the non-saturating GAN loss on label maps (real
    one-hot maps against the sampled maps, :func:`sampled_map`). Stage 2: the conditional
    GAN loss on the real label maps with L1 and feature matching, as ``pix2pix3d``
    label2image. One discriminator update (lazy R1 on both critics), one generator update
    through the updated critics; the EMA follows. Returns the losses on the device."""
    from napari_medgan.training.device import autocast
    from napari_medgan.training.ema import unwrap, update_ema
    from napari_medgan.training.losses import discriminator_loss, generator_loss

    cfg = trainer.config.train
    real = trainer.to_device(batch["image"])
    gen, d_module = unwrap(trainer.G), unwrap(trainer.D)
    real_labels = real[:, 1:]
    if gen.label_scale > 1:  # stage 1's grid: the class fractions of each coarse voxel
        real_labels = F.avg_pool3d(real_labels, gen.label_scale)
    crop = stage2_crop(real, trainer.rng)  # stage 2 learns on crops of the real pairs
    crop_labels = crop[:, 1:]
    with autocast(trainer.device, trainer.amp_dtype):
        fake_labels, fake_image = trainer.G(
            gen.sample_latent(real.shape[0], device=trainer.device), crop_labels)
    fake_labels = sampled_map(fake_labels, gen.label_scale)  # what a sample is made of
    # the pair critic sees [label map, image], as pix2pix3d's does
    real_pair = torch.cat([crop_labels, crop[:, :1]], 1)

    labels_in = trainer._augment(torch.cat([real_labels, fake_labels.detach().float()]))
    pair_in = trainer._augment(torch.cat([real_pair, torch.cat(
        [crop_labels, fake_image.detach().float()], 1)]))
    do_r1 = trainer.r1_due()
    if do_r1:
        labels_in = labels_in.detach().requires_grad_(True)
        pair_in = pair_in.detach().requires_grad_(True)
    with autocast(trainer.device, trainer.amp_dtype):
        logits_labels, logits_pair = trainer.D(labels_in, pair_in, 2)
    real_l, fake_l = logits_labels.float().chunk(2)
    real_p, fake_p = logits_pair.float().chunk(2)
    loss_d = discriminator_loss(cfg.loss, real_l, fake_l) + \
        discriminator_loss(cfg.loss, real_p, fake_p)
    losses = {"D": loss_d.detach()}
    if do_r1:
        # per sample: the label critic's logit plus the pair critic's summed patch logits
        loss_d = trainer.with_r1(loss_d, real_l.flatten(1).sum(1) + real_p.flatten(1).sum(1),
                                 (labels_in, pair_in), losses)
    trainer._update(trainer.opt_d, loss_d, trainer.D)

    d_module.requires_grad_(False)
    fake_pair = torch.cat([crop_labels, fake_image], 1)
    with autocast(trainer.device, trainer.amp_dtype):
        g_labels, g_pair = d_module(trainer._augment(fake_labels), trainer._augment(fake_pair))
    loss_g = generator_loss(cfg.loss, g_labels.float()) + \
        generator_loss(cfg.loss, g_pair.float())
    losses["G"] = loss_g.detach()
    loss_g = loss_g + trainer.conditional_terms(fake_image, crop[:, :1], d_module.pair.features,
                                                real_pair, fake_pair, losses)
    trainer._update(trainer.opt_g, loss_g, trainer.G)
    d_module.requires_grad_(True)
    update_ema(trainer.ema, trainer.G, cfg.ema_decay, trainer.step)
    return losses
