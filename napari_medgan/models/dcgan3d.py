"""3D DCGAN: unconditional synthesis of image patches, or of image + label map jointly.

The architecture follows Radford, Metz & Chintala, "Unsupervised Representation
Learning with Deep Convolutional Generative Adversarial Networks", ICLR 2016
(arXiv:1511.06434), carried to 3D, with two common changes:

* the generator upsamples by nearest-neighbour interpolation + convolution
  instead of transposed convolutions, which avoids checkerboard artefacts
  (Odena, Dumoulin & Olah, "Deconvolution and Checkerboard Artifacts",
  Distill 2016); the two are computed together as one transposed convolution
  with the kernel they make (:class:`napari_medgan.models.blocks.UpsampleConv3d`),
  the same output for 3.4x fewer multiply-adds;
* the discriminator uses spectral normalisation (Miyato et al., "Spectral
  Normalization for Generative Adversarial Networks", ICLR 2018) instead of
  batch normalisation, which keeps it Lipschitz-bounded and makes it
  compatible with the R1 gradient penalty.

Tensors are ``(B, C, D, H, W)``; patches are cubic with side ``spatial_size``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from napari_medgan.models.blocks import spectral_norm as _spectral_norm
from napari_medgan.models.blocks import upsample_block
from napari_medgan.tasks import FAMILIES, get_task

__all__ = [
    "Generator3D",
    "Discriminator3D",
    "build_generator",
    "build_discriminator",
    "channels_for",
    "base_size",
]

_MIN_BASE = 4


#: Tasks this family serves, the default first (declared with the task registry).
TASKS = FAMILIES["dcgan3d"]

#: Network layout stored in checkpoints as ``model_layout`` (see ``Checkpoint.model_config``).
LAYOUT_VERSION = 1
LAYOUT_NOTE = "DCGAN generator and discriminator"


def base_size(spatial_size: int) -> tuple[int, int]:
    """Starting side length and number of 2x stages for a patch of ``spatial_size``.

    Halves ``spatial_size`` while the result stays an integer >= 4, so powers of
    two start from 4^3 (DCGAN's 4x4 seed) and e.g. 48 starts from 6^3.

    Returns
    -------
    (base, stages) with ``base * 2**stages == spatial_size``.
    """
    size = int(spatial_size)
    if size < 16 or size % 16 != 0:
        raise ValueError(f"spatial_size: expected a multiple of 16, at least 16, "
                         f"got {spatial_size!r}")
    stages = 0
    while size % 2 == 0 and size // 2 >= _MIN_BASE:
        size //= 2
        stages += 1
    return size, stages


def _init_dcgan(module: nn.Module) -> None:
    """DCGAN initialisation: conv/linear weights ~ N(0, 0.02), norm scales ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm3d, nn.GroupNorm, nn.InstanceNorm3d)):
        if module.weight is not None:
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)


def _group_count(channels: int, most: int = 8) -> int:
    """Largest group count <= ``most`` that divides ``channels`` (GroupNorm needs one)."""
    return max(g for g in range(1, most + 1) if channels % g == 0)


def _make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm3d(channels)
    if norm == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(_group_count(channels), channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm: expected 'batch', 'instance', 'group' or 'none', got {norm!r}")


def _check_5d(x: torch.Tensor, channels: int, size: int | None, what: str) -> None:
    cube = (size,) * 3 if size is not None else None
    if x.ndim != 5 or x.shape[1] != channels or (cube and tuple(x.shape[2:]) != cube):
        want = f"(B, {channels}, {size}, {size}, {size})" if cube else f"(B, {channels}, D, H, W)"
        raise ValueError(f"{what}: expected input of shape {want}, got {tuple(x.shape)}")


class Generator3D(nn.Module):
    """DCGAN generator: latent vector -> cubic volume (Radford et al. 2016, in 3D).

    ``z (B, latent_dim)`` -> linear -> ``(B, C0, b, b, b)`` with ``b = 4`` for
    power-of-two sizes -> ``stages`` blocks of [2x nearest upsample, 3^3 conv,
    norm, ReLU] halving the width from ``C0 = channels * 2**stages`` down to
    ``channels`` -> 3^3 conv to ``out_channels``.

    Parameters
    ----------
    latent_dim : int
        Length of the latent vector z.
    out_channels : int
        1 for image synthesis; ``1 + num_classes`` for joint image + label synthesis.
    channels : int
        Width of the last (full-resolution) block; earlier blocks are 2x wider each.
    spatial_size : int
        Side of the output cube, a multiple of 16.
    num_classes : int
        0 for image only. Otherwise channel 0 is the image (tanh, in [-1, 1]) and
        channels ``1:`` are a softmax over ``num_classes`` label classes.
    norm : {"batch", "instance", "group", "none"}
        Normalisation in the upsampling blocks; DCGAN uses batch norm.
    max_channels : int, optional
        Cap on the block width (the seed width grows as ``2**stages``).

    Output
    ------
    ``(B, out_channels, S, S, S)`` with ``S = spatial_size``.
    """

    def __init__(self, latent_dim: int, out_channels: int, channels: int, spatial_size: int,
                 num_classes: int = 0, norm: str = "batch",
                 max_channels: int | None = None) -> None:
        super().__init__()
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim: expected >= 1, got {latent_dim!r}")
        if int(channels) < 1:
            raise ValueError(f"channels: expected >= 1, got {channels!r}")
        if num_classes == 1 or num_classes < 0:
            raise ValueError(f"num_classes: expected 0 (image only) or >= 2, got {num_classes!r}")
        if num_classes and out_channels != 1 + num_classes:
            raise ValueError(f"out_channels: expected 1 + num_classes = {1 + num_classes} for a "
                             f"joint generator, got {out_channels!r}")
        if int(out_channels) < 1:
            raise ValueError(f"out_channels: expected >= 1, got {out_channels!r}")
        self.latent_dim = int(latent_dim)
        self.out_channels = int(out_channels)
        self.num_classes = int(num_classes)
        self.spatial_size = int(spatial_size)
        self.base, stages = base_size(spatial_size)

        def width(level: int) -> int:  # level 0 = full resolution
            w = channels * 2**level
            return min(w, max_channels) if max_channels else w

        self.seed_channels = width(stages)
        self.fc = nn.Linear(self.latent_dim, self.seed_channels * self.base**3)
        # Normalise + activate the seed too, as DCGAN does after its first projection.
        self.seed = nn.Sequential(_make_norm(norm, self.seed_channels), nn.ReLU(inplace=True))
        blocks = []
        for level in range(stages, 0, -1):
            c_in, c_out = width(level), width(level - 1)
            blocks.append(upsample_block(c_in, c_out, _make_norm(norm, c_out),
                                         bias=norm == "none"))
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv3d(width(0), self.out_channels, kernel_size=3, padding=1)
        self.apply(_init_dcgan)

    def sample_latent(self, n: int, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """Draw ``(n, latent_dim)`` standard-normal latents.

        Drawn on ``generator``'s device (so a seeded CPU generator gives the same
        latents whatever the model's device), then moved to ``device`` (default:
        the model's device).
        """
        if device is None:
            device = next(self.parameters()).device
        source = generator.device if generator is not None else device
        z = torch.randn(int(n), self.latent_dim, generator=generator, device=source)
        return z.to(device)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """The head's output ``(B, out_channels, S, S, S)`` before its activations."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"Generator3D: expected latent of shape (B, {self.latent_dim}), "
                             f"got {tuple(z.shape)}")
        b = self.base
        x = self.fc(z).view(z.shape[0], self.seed_channels, b, b, b)
        return self.head(self.blocks(self.seed(x)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.logits(z)
        image = torch.tanh(x[:, :1])
        if self.out_channels == 1:
            return image
        if not self.num_classes:
            return torch.cat([image, torch.tanh(x[:, 1:])], dim=1)
        # Softmax in float32: label probabilities must sum to 1 even under bf16 autocast.
        labels = torch.softmax(x[:, 1:].float(), dim=1).to(image.dtype)
        return torch.cat([image, labels], dim=1)


class Discriminator3D(nn.Module):
    """DCGAN discriminator: cubic volume -> one real/fake logit (Radford et al. 2016, in 3D).

    ``stages`` strided 4^3 convolutions (LeakyReLU 0.2) halve the side from
    ``spatial_size`` down to 4 (for power-of-two sizes) while the width doubles
    from ``channels``; then flatten -> linear -> ``(B, 1)`` logits.

    Parameters
    ----------
    in_channels : int
        1 for images; ``1 + num_classes`` when it judges image + label map jointly.
    channels : int
        Width of the first convolution.
    spatial_size : int
        Side of the input cube, a multiple of 16.
    spectral_norm : bool
        Spectrally normalise every conv and the linear layer (Miyato et al. 2018);
        without it, GroupNorm follows each conv but the first (no batch norm: it
        couples samples in a batch, which breaks per-sample gradient penalties).
    max_channels : int, optional
        Cap on the width of the deeper convolutions.
    minibatch_std : bool
        Add the minibatch standard-deviation feature before the linear layer (Karras et
        al. 2018, ProGAN): the spread of the features over groups of up to 4 samples, so the
        critic sees when generated samples are too alike (mode collapse). ``forward``'s
        ``splits`` keeps groups inside each part of a batch that concatenates real and fake.
    """

    def __init__(self, in_channels: int, channels: int, spatial_size: int,
                 spectral_norm: bool = True, max_channels: int | None = None,
                 minibatch_std: bool = False) -> None:
        super().__init__()
        if int(in_channels) < 1:
            raise ValueError(f"in_channels: expected >= 1, got {in_channels!r}")
        if int(channels) < 1:
            raise ValueError(f"channels: expected >= 1, got {channels!r}")
        self.in_channels = int(in_channels)
        self.spatial_size = int(spatial_size)
        self.base, stages = base_size(spatial_size)
        self.spectral_norm = bool(spectral_norm)
        layers: list[nn.Module] = []
        c_in = self.in_channels
        for level in range(stages):
            c_out = channels * 2**level
            c_out = min(c_out, max_channels) if max_channels else c_out
            layers.append(nn.Conv3d(c_in, c_out, kernel_size=4, stride=2, padding=1))
            if level > 0 and not spectral_norm:
                layers.append(nn.GroupNorm(_group_count(c_out), c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.minibatch_std = bool(minibatch_std)
        self.fc = nn.Linear((c_in + int(self.minibatch_std)) * self.base**3, 1)
        self.apply(_init_dcgan)
        if spectral_norm:
            for module in list(self.modules()):
                if isinstance(module, (nn.Conv3d, nn.Linear)):
                    _spectral_norm(module)

    def forward(self, x: torch.Tensor, splits: int = 1) -> torch.Tensor:
        _check_5d(x, self.in_channels, self.spatial_size, "Discriminator3D")
        h = self.features(x)
        if self.minibatch_std:
            h = torch.cat([h, minibatch_std(h, splits)], 1)
        return self.fc(h.flatten(1))


def minibatch_std(h: torch.Tensor, splits: int = 1, group: int = 4) -> torch.Tensor:
    """``(B, 1, ...)``: per sample, the mean over features and positions of the standard
    deviation across its group (contiguous samples, up to ``group`` of them, never across
    the ``splits`` equal parts of the batch), computed in float32."""
    b = h.shape[0]
    if b % splits:
        raise ValueError(f"splits: {splits} does not divide the batch of {b}")
    g = math.gcd(group, b // splits)
    y = h.float().reshape(b // g, g, *h.shape[1:])
    std = (y.var(1, unbiased=False) + 1e-8).sqrt().flatten(1).mean(1)  # (b // g,)
    std = std.repeat_interleave(g).to(h.dtype)
    return std.view(b, 1, *([1] * (h.dim() - 2))).expand(b, 1, *h.shape[2:])


def channels_for(cfg) -> tuple[int, int]:
    """``(latent_dim, image channels)`` for a ModelConfig: the generator's input and output.

    For ``task="joint"`` the config's ``num_classes`` must be known (>= 2): a
    config with 0 ("take it from the data") is resolved by the trainer first.
    """
    if get_task(cfg.task).outputs_labels:
        if int(cfg.num_classes) < 2:
            raise ValueError(f"model.num_classes: expected >= 2 to build a joint model (0 means "
                             f"'from the data' and must be resolved first), "
                             f"got {cfg.num_classes!r}")
        return int(cfg.latent_dim), 1 + int(cfg.num_classes)
    return int(cfg.latent_dim), 1


def build_generator(cfg) -> Generator3D:
    """Generator for ``cfg`` (a :class:`napari_medgan.config.ModelConfig`)."""
    latent, out = channels_for(cfg)
    return Generator3D(latent_dim=latent, out_channels=out, channels=int(cfg.channels),
                       spatial_size=int(cfg.patch_size),
                       num_classes=int(cfg.num_classes) if get_task(cfg.task).outputs_labels else 0)


def build_discriminator(cfg) -> Discriminator3D:
    """Discriminator for ``cfg``; for joint synthesis it sees image + label channels."""
    _, out = channels_for(cfg)
    return Discriminator3D(in_channels=out, channels=int(cfg.channels),
                           spatial_size=int(cfg.patch_size), spectral_norm=bool(cfg.spectral_norm))

