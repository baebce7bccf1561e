"""Conditional family: the per-task generator table, PatchGAN and two-scale discriminator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_medgan.config import ModelConfig
from napari_medgan.models.pix2pix3d import (
    GENERATORS,
    MultiScalePatchDiscriminator3D,
    PatchDiscriminator3D,
    build_discriminator,
    build_generator,
    channels_for,
)
from napari_medgan.models.residual_unet3d import ResidualUNet3D
from napari_medgan.models.spade3d import SPADEGenerator3D

DISCRIMINATOR_CASES = [
    (dict(in_channels=2, channels=4), (2, 2, 16, 16, 16), (2, 1, 2, 2, 2)),
    (dict(in_channels=2, channels=4, spectral_norm=False), (2, 2, 16, 16, 16), (2, 1, 2, 2, 2)),
    (dict(in_channels=2, channels=4), (1, 2, 32, 32, 32), (1, 1, 4, 4, 4)),
    (dict(in_channels=9, channels=4), (1, 9, 16, 32, 48), (1, 1, 2, 4, 6)),
    (dict(in_channels=2, channels=4, num_layers_d=2), (1, 2, 16, 16, 16), (1, 1, 4, 4, 4)),
]


@pytest.mark.parametrize("kwargs, in_shape, expected", DISCRIMINATOR_CASES)
def test_patch_discriminator_returns_logit_map(kwargs, in_shape, expected):
    d = PatchDiscriminator3D(**kwargs)
    x = torch.randn(in_shape, requires_grad=True)
    logits = d(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == expected
    logits.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_discriminator_concatenates_condition_first():
    d = PatchDiscriminator3D(in_channels=3, channels=4).eval()
    image, cond = torch.randn(1, 1, 16, 16, 16), torch.randn(1, 2, 16, 16, 16)
    torch.testing.assert_close(d(image, cond), d(torch.cat([cond, image], 1)))
    feats = d.features(image, cond)
    assert len(feats) == 5 and feats[-1].shape == (1, 1, 2, 2, 2)


def test_patch_discriminator_spectral_norm_on_off():
    with_sn = PatchDiscriminator3D(in_channels=2, channels=4, spectral_norm=True)
    without = PatchDiscriminator3D(in_channels=2, channels=4, spectral_norm=False)
    convs = [m for m in with_sn.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 5 and all(hasattr(m, "parametrizations") for m in convs)
    assert not any(hasattr(m, "parametrizations") for m in without.modules())
    assert any(isinstance(m, nn.InstanceNorm3d) for m in without.modules())


@pytest.mark.parametrize("in_shape, n_logits", [((2, 3, 16, 16, 16), 8 + 1),
                                                ((1, 3, 32, 32, 32), 64 + 8)])
def test_multiscale_discriminator_judges_two_scales(in_shape, n_logits):
    d = MultiScalePatchDiscriminator3D(in_channels=3, channels=4)
    x = torch.randn(in_shape, requires_grad=True)
    logits = d(x)
    assert logits.shape == (in_shape[0], n_logits)
    logits.sum().backward()
    assert torch.isfinite(x.grad).all()
    feats = d.features(x)
    assert len(feats) == 8  # 4 intermediate maps per scale, logits excluded
    assert feats[4].shape[2:] == tuple(s // 4 for s in in_shape[2:])  # coarse scale: half size


@pytest.mark.parametrize("task, kind, base", [
    ("label2image", SPADEGenerator3D, None),
    ("superres", ResidualUNet3D, "identity"),
    ("denoise", ResidualUNet3D, "identity"),
    ("inpaint", ResidualUNet3D, "inpaint"),
    ("translate", ResidualUNet3D, "intensity_map"),
])
def test_generator_chosen_per_task(task, kind, base):
    assert set(GENERATORS) == {"label2image", "superres", "denoise", "inpaint", "translate"}
    cfg = ModelConfig(name="pix2pix3d", task=task, num_classes=5, channels=4, patch_size=16)
    g, d = build_generator(cfg), build_discriminator(cfg)
    assert isinstance(g, kind) and getattr(g, "base", None) == base
    cond, out = channels_for(cfg)
    x = torch.rand(2, cond, 16, 16, 16)
    y = g(x)
    assert y.shape == (2, out, 16, 16, 16)
    assert d(y, x).shape[0] == 2


def test_channels_for_needs_resolved_classes():
    with pytest.raises(ValueError, match="num_classes"):
        channels_for(ModelConfig(name="pix2pix3d", task="label2image", num_classes=0))
