"""3D pix2pix: conditional image-to-image translation with a U-Net and a PatchGAN.

Isola, Zhu, Zhou & Efros, "Image-to-Image Translation with Conditional
Adversarial Networks", CVPR 2017 (arXiv:1611.07004), in 3D and built from MONAI
networks: the generator is :class:`monai.networks.nets.UNet` (Ronneberger et al.
2015; residual units after Kerfoot et al. 2018) with a tanh output, the
discriminator :class:`monai.networks.nets.PatchDiscriminator` judging
``cat(condition, image)`` patch by patch, optionally spectrally normalised
(Miyato et al., ICLR 2018).

Condition channels by task (see :func:`channels_for`):

========== ==================== =====================================
task       condition channels   condition
========== ==================== =====================================
label2image num_classes         one-hot label map
translate  1                    source-modality image
denoise    1                    noisy image
superres   1                    low-resolution image resampled to the output grid
inpaint    2                    masked image, mask (1 = missing)
========== ==================== =====================================

Tensors are ``(B, C, D, H, W)``. MONAI is imported when a network is built, not
when this module is imported, because importing it takes seconds.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

__all__ = [
    "UNetGenerator3D",
    "PatchDiscriminator3D",
    "build_generator",
    "build_discriminator",
    "channels_for",
    "CONDITION_CHANNELS",
]

#: task -> number of condition channels (``None``: ``num_classes``).
CONDITION_CHANNELS: dict[str, int | None] = {
    "label2image": None,
    "translate": 1,
    "denoise": 1,
    "superres": 1,
    "inpaint": 2,
}

_LEAKY = ("LEAKYRELU", {"negative_slope": 0.2})


def _check_input(x: torch.Tensor, channels: int, multiple: int, what: str) -> None:
    if x.ndim != 5 or x.shape[1] != channels:
        raise ValueError(f"{what}: expected 5-D input (B, {channels}, D, H, W), got shape "
                         f"{tuple(x.shape)}")
    if any(s % multiple for s in x.shape[2:]):
        raise ValueError(f"{what}: expected spatial sizes divisible by {multiple}, got shape "
                         f"{tuple(x.shape)}")


class UNetGenerator3D(nn.Module):
    """pix2pix generator: a 3D U-Net from condition to image (Isola et al. 2017).

    MONAI ``UNet(spatial_dims=3, channels=(c, 2c, 4c, 8c), strides=(2, 2, 2))``
    followed by tanh, so outputs lie in [-1, 1] like the normalised images.

    Parameters
    ----------
    in_channels : int
        Condition channels (see the module table).
    out_channels : int
        Image channels produced, 1.
    channels : int
        Width ``c`` of the first level; the levels are ``(c, 2c, 4c, 8c)``.
    num_res_units : int
        Residual units per level (MONAI), 0-2.
    norm : str or tuple
        MONAI norm spec; instance norm as in pix2pix (batch size is often 1).
    dropout : float
        Dropout in the U-Net; pix2pix uses it as the generator's noise source.
    residual : bool
        Predict a correction to condition channel 0 instead of the image itself:
        ``tanh(net(x) + atanh(x[:, :1]))``, the identity when ``net`` outputs 0.
        Suits denoise / superres / inpaint, where the output is close to the input.

    Input ``(B, in_channels, D, H, W)`` with D, H, W divisible by 8 -> output
    ``(B, out_channels, D, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int = 1, channels: int = 32,
                 num_res_units: int = 2, norm: str | tuple = "INSTANCE", dropout: float = 0.0,
                 residual: bool = False) -> None:
        super().__init__()
        from monai.networks.nets import UNet

        if int(in_channels) < 1:
            raise ValueError(f"in_channels: expected >= 1, got {in_channels!r}")
        if int(channels) < 1:
            raise ValueError(f"channels: expected >= 1, got {channels!r}")
        if residual and out_channels != 1:
            raise ValueError(f"out_channels: a residual generator predicts 1 channel, got "
                             f"{out_channels!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.residual = bool(residual)
        strides = (2, 2, 2)
        self.size_multiple = 2 ** len(strides)
        self.net = UNet(spatial_dims=3, in_channels=self.in_channels,
                        out_channels=self.out_channels,
                        channels=tuple(int(channels) * m for m in (1, 2, 4, 8)), strides=strides,
                        num_res_units=int(num_res_units), act=_LEAKY, norm=norm,
                        dropout=float(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.in_channels, self.size_multiple, "UNetGenerator3D")
        y = self.net(x)
        if self.residual:
            # Residual in pre-tanh space keeps the output in [-1, 1]; clamp keeps atanh finite.
            y = y + torch.atanh(x[:, :1].clamp(-0.999, 0.999))
        return torch.tanh(y)


class PatchDiscriminator3D(nn.Module):
    """pix2pix PatchGAN discriminator on ``cat(condition, image)`` (Isola et al. 2017).

    Wraps MONAI ``PatchDiscriminator(spatial_dims=3, num_layers_d=...)``, which
    returns a list of intermediate features ending with the logits, so that
    ``forward`` returns only the logit map. Three stride-2 stages make the map
    1/8 of the input side; each logit judges one receptive field.

    Parameters
    ----------
    in_channels : int
        Condition channels + image channels.
    channels : int
        Width of the first convolution (doubled per layer).
    num_layers_d : int
        Convolution layers after the first (MONAI); all but the last are strided.
    kernel_size : int
        3 (not pix2pix's 4) so that with padding 1 every stride-2 layer halves
        the side exactly and the stride-1 layers keep it: the output is exactly
        ``(D, H, W) / 2**num_layers_d`` and a 16^3 patch still gives a 2^3 map
        (kernel 4 shrinks stride-1 layers by one voxel and fails at 16^3).
    spectral_norm : bool
        Spectrally normalise every convolution (Miyato et al. 2018). Then no
        norm layers are used (biases instead); otherwise instance norm.
    norm : str or tuple, optional
        Override the MONAI norm spec chosen from ``spectral_norm``.

    Input ``(B, in_channels, D, H, W)``, or ``forward(image, condition)`` which
    concatenates them -> logits ``(B, 1, D / 2**n, H / 2**n, W / 2**n)``.
    """

    def __init__(self, in_channels: int, channels: int = 32, num_layers_d: int = 3,
                 kernel_size: int = 3, spectral_norm: bool = True,
                 norm: str | tuple | None = "auto") -> None:
        super().__init__()
        from monai.networks.nets import PatchDiscriminator

        if int(in_channels) < 1:
            raise ValueError(f"in_channels: expected >= 1, got {in_channels!r}")
        if int(num_layers_d) < 1:
            raise ValueError(f"num_layers_d: expected >= 1, got {num_layers_d!r}")
        if int(kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd size (keeps shapes exact), "
                             f"got {kernel_size!r}")
        if norm == "auto":
            norm = None if spectral_norm else "INSTANCE"
        self.in_channels = int(in_channels)
        self.spectral_norm = bool(spectral_norm)
        self.size_multiple = 2 ** int(num_layers_d)
        self.net = PatchDiscriminator(
            spatial_dims=3, num_layers_d=int(num_layers_d), channels=int(channels),
            in_channels=self.in_channels, out_channels=1, kernel_size=int(kernel_size),
            activation=_LEAKY, norm=norm, bias=norm is None, padding=int(kernel_size) // 2,
            last_conv_kernel_size=int(kernel_size),
        )  # MONAI initialises conv weights ~ N(0, 0.02) itself (normal_init).
        if spectral_norm:
            for module in list(self.net.modules()):
                if isinstance(module, nn.Conv3d):
                    _spectral_norm(module)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if condition is not None:
            x = torch.cat([condition, x], dim=1)
        _check_input(x, self.in_channels, 1, "PatchDiscriminator3D")
        return self.net(x)[-1]

    def features(self, x: torch.Tensor,
                 condition: torch.Tensor | None = None) -> list[torch.Tensor]:
        """All intermediate feature maps, logits last (for feature-matching losses)."""
        if condition is not None:
            x = torch.cat([condition, x], dim=1)
        _check_input(x, self.in_channels, 1, "PatchDiscriminator3D")
        return self.net(x)


def channels_for(cfg) -> tuple[int, int]:
    """``(condition channels, image channels)`` for a ModelConfig."""
    cond = CONDITION_CHANNELS.get(cfg.task, 0)
    if cfg.task not in CONDITION_CHANNELS:
        raise ValueError(f"model.task: expected one of {tuple(CONDITION_CHANNELS)} for "
                         f"pix2pix3d, got {cfg.task!r}")
    if cond is None:
        cond = int(cfg.num_classes)
        if cond < 2:
            raise ValueError(f"model.num_classes: expected >= 2 to build task {cfg.task!r} (0 "
                             f"means 'from the data' and must be resolved first), got "
                             f"{cfg.num_classes!r}")
    return cond, 1


def build_generator(cfg) -> UNetGenerator3D:
    """U-Net generator for ``cfg`` (a :class:`napari_medgan.config.ModelConfig`)."""
    cond, out = channels_for(cfg)
    return UNetGenerator3D(in_channels=cond, out_channels=out, channels=int(cfg.channels))


def build_discriminator(cfg) -> PatchDiscriminator3D:
    """PatchGAN discriminator for ``cfg``; it sees condition and image channels."""
    cond, out = channels_for(cfg)
    return PatchDiscriminator3D(in_channels=cond + out, channels=int(cfg.channels),
                                spectral_norm=bool(cfg.spectral_norm))
