"""3D conditional GAN: a generator chosen per task and a multi-scale PatchGAN.

The adversarial set-up of pix2pix (Isola, Zhu, Zhou & Efros, "Image-to-Image
Translation with Conditional Adversarial Networks", CVPR 2017) with the
multi-scale discriminator and feature-matching loss of pix2pixHD (Wang et al.,
"High-Resolution Image Synthesis and Semantic Manipulation with Conditional
GANs", CVPR 2018), in 3D. The discriminators are MONAI
:class:`monai.networks.nets.PatchDiscriminator` networks judging
``cat(condition, image)`` patch by patch, optionally spectrally normalised
(Miyato et al., ICLR 2018).

The generator is chosen per task in one place, :data:`GENERATORS`; each starts
from the classical answer and learns a correction to it:

=========== =========== =========================== ==============================
task        condition   condition                   generator
            channels
=========== =========== =========================== ==============================
label2image num_classes one-hot label map           SPADE (lookup + correction)
translate   1           source-modality image       residual U-Net (intensity map)
denoise     1           noisy image                 residual U-Net (identity)
superres    1           thick voxels upsampled      residual U-Net (identity)
                        tricubically onto the thin
                        grid
inpaint     2           hole-filled image, mask     residual U-Net (hole fill)
                        (1 = missing)
=========== =========== =========================== ==============================

Tensors are ``(B, C, D, H, W)``. MONAI is imported when a network is built, not
when this module is imported, because importing it takes seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from napari_medgan.models.blocks import spectral_norm as _spectral_norm
from napari_medgan.models.checks import check_input
from napari_medgan.models.residual_unet3d import ResidualUNet3D
from napari_medgan.models.spade3d import SPADEGenerator3D
from napari_medgan.tasks import FAMILIES

__all__ = [
    "PatchDiscriminator3D",
    "MultiScalePatchDiscriminator3D",
    "GENERATORS",
    "build_generator",
    "build_discriminator",
    "channels_for",
]

_LEAKY = ("LEAKYRELU", {"negative_slope": 0.2})


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
        check_input(x, self.in_channels, 1, "PatchDiscriminator3D")
        return self.net(x)[-1]

    def features(self, x: torch.Tensor,
                 condition: torch.Tensor | None = None) -> list[torch.Tensor]:
        """All intermediate feature maps, logits last (for feature-matching losses)."""
        if condition is not None:
            x = torch.cat([condition, x], dim=1)
        check_input(x, self.in_channels, 1, "PatchDiscriminator3D")
        return self.net(x)


class MultiScalePatchDiscriminator3D(nn.Module):
    """PatchGANs at full and at half resolution (pix2pixHD, Wang et al. 2018, section 3.2).

    The coarse one sees the input average-pooled by 2, so its patches cover
    twice the extent: global consistency at the same cost as one more small
    network. ``forward`` returns the logits of every scale flattened and
    concatenated, ``(B, N)``, which the GAN losses average like one map;
    :meth:`features` returns the intermediate feature maps of both scales for
    the feature-matching loss.
    """

    def __init__(self, in_channels: int, channels: int = 32, num_scales: int = 2,
                 spectral_norm: bool = True) -> None:
        super().__init__()
        if int(num_scales) < 1:
            raise ValueError(f"num_scales: expected >= 1, got {num_scales!r}")
        self.in_channels = int(in_channels)
        self.spectral_norm = bool(spectral_norm)
        self.scales = nn.ModuleList(
            PatchDiscriminator3D(in_channels, channels=channels, spectral_norm=spectral_norm)
            for _ in range(int(num_scales)))

    def _inputs(self, x: torch.Tensor, condition: torch.Tensor | None):
        if condition is not None:
            x = torch.cat([condition, x], dim=1)
        for i, _ in enumerate(self.scales):
            yield x
            if i + 1 < len(self.scales):
                x = F.avg_pool3d(x, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        inputs = self._inputs(x, condition)
        return torch.cat([d(xi).flatten(1) for d, xi in zip(self.scales, inputs)], dim=1)

    def features(self, x: torch.Tensor,
                 condition: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Intermediate feature maps of every scale (logits excluded)."""
        feats: list[torch.Tensor] = []
        for d, xi in zip(self.scales, self._inputs(x, condition)):
            feats += d.features(xi)[:-1]
        return feats


def channels_for(cfg) -> tuple[int, int]:
    """``(condition channels, image channels)`` for a ModelConfig."""
    from napari_medgan.tasks import CONDITIONAL_TASKS, get_task

    if cfg.task not in CONDITIONAL_TASKS:
        raise ValueError(f"model.task: expected one of {CONDITIONAL_TASKS} for "
                         f"pix2pix3d, got {cfg.task!r}")
    task = get_task(cfg.task)
    cond = task.condition_channels(cfg.num_classes)
    if task.condition == "labels" and cond < 2:
        raise ValueError(f"model.num_classes: expected >= 2 to build task {cfg.task!r} (0 "
                         f"means 'from the data' and must be resolved first), got "
                         f"{cfg.num_classes!r}")
    return cond, 1


#: Tasks this family serves, the default first (declared with the task registry).
TASKS = FAMILIES["pix2pix3d"]

#: Network layout stored in checkpoints as ``model_layout``. Layout 1 (napari-medgan 0.1) was
#: one instance-normalised U-Net for every task and cannot be loaded into these networks.
LAYOUT_VERSION = 2
LAYOUT_NOTE = "SPADE for label2image, residual U-Nets for restoration, two-scale PatchGAN"

#: task -> generator builder ``(cfg, condition channels) -> nn.Module``: the one place a
#: conditional task's architecture is chosen.
GENERATORS: dict[str, Callable[[Any, int], nn.Module]] = {
    "label2image": lambda cfg, cond: SPADEGenerator3D(in_channels=cond, channels=int(cfg.channels)),
    "translate": lambda cfg, cond: ResidualUNet3D(cond, channels=int(cfg.channels),
                                                  base="intensity_map"),
    "denoise": lambda cfg, cond: ResidualUNet3D(cond, channels=int(cfg.channels)),
    "superres": lambda cfg, cond: ResidualUNet3D(cond, channels=int(cfg.channels)),
    "inpaint": lambda cfg, cond: ResidualUNet3D(cond, channels=int(cfg.channels), base="inpaint"),
}


def build_generator(cfg) -> nn.Module:
    """The generator of ``cfg.task`` (see :data:`GENERATORS`)."""
    cond, _ = channels_for(cfg)
    return GENERATORS[cfg.task](cfg, cond)


def build_discriminator(cfg) -> MultiScalePatchDiscriminator3D:
    """Two-scale PatchGAN for ``cfg``; it sees condition and image channels."""
    cond, out = channels_for(cfg)
    return MultiScalePatchDiscriminator3D(in_channels=cond + out, channels=int(cfg.channels),
                                          spectral_norm=bool(cfg.spectral_norm))
