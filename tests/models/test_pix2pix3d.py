"""3D pix2pix U-Net generator and PatchGAN discriminator: shapes, sizes, overfit sanity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_medgan.models.pix2pix3d import PatchDiscriminator3D, UNetGenerator3D

# (kwargs, input shape, expected output shape)
GENERATOR_CASES = [
    (dict(in_channels=1, channels=4), (2, 1, 16, 16, 16), (2, 1, 16, 16, 16)),
    (dict(in_channels=1, channels=4), (1, 1, 32, 32, 32), (1, 1, 32, 32, 32)),
    (dict(in_channels=2, channels=4), (2, 2, 16, 16, 16), (2, 1, 16, 16, 16)),   # inpaint
    (dict(in_channels=8, channels=4), (1, 8, 32, 32, 32), (1, 1, 32, 32, 32)),   # label2image
    (dict(in_channels=1, channels=4), (1, 1, 16, 32, 48), (1, 1, 16, 32, 48)),   # non-cubic
    (dict(in_channels=1, channels=4, num_res_units=1), (1, 1, 64, 64, 64), (1, 1, 64, 64, 64)),
    (dict(in_channels=1, channels=4, num_res_units=0, dropout=0.2), (2, 1, 16, 16, 16),
     (2, 1, 16, 16, 16)),
    (dict(in_channels=2, channels=4, residual=True), (1, 2, 16, 16, 16), (1, 1, 16, 16, 16)),
]

DISCRIMINATOR_CASES = [
    (dict(in_channels=2, channels=4), (2, 2, 16, 16, 16), (2, 1, 2, 2, 2)),
    (dict(in_channels=2, channels=4, spectral_norm=False), (2, 2, 16, 16, 16), (2, 1, 2, 2, 2)),
    (dict(in_channels=2, channels=4), (1, 2, 32, 32, 32), (1, 1, 4, 4, 4)),
    (dict(in_channels=3, channels=4, spectral_norm=False), (1, 3, 32, 32, 32), (1, 1, 4, 4, 4)),
    (dict(in_channels=9, channels=4), (1, 9, 16, 32, 48), (1, 1, 2, 4, 6)),
    (dict(in_channels=2, channels=4, num_layers_d=2), (1, 2, 16, 16, 16), (1, 1, 4, 4, 4)),
]


@pytest.mark.parametrize("kwargs, in_shape, expected", GENERATOR_CASES)
def test_unet_generator_shape_and_range(kwargs, in_shape, expected):
    g = UNetGenerator3D(**kwargs)
    out = g(torch.randn(in_shape))
    assert out.shape == expected
    assert out.min() >= -1 and out.max() <= 1


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
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in with_sn.modules())


def test_residual_generator_starts_near_identity():
    g = UNetGenerator3D(in_channels=1, channels=4, residual=True)
    for p in g.net.parameters():  # a zero network makes the residual path exact
        nn.init.zeros_(p)
    x = torch.rand(1, 1, 16, 16, 16) * 1.6 - 0.8
    torch.testing.assert_close(g(x), x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape, match", [
    ((1, 1, 20, 16, 16), "divisible by 8"),
    ((1, 2, 16, 16, 16), r"\(B, 1, D, H, W\)"),
    ((1, 16, 16, 16), "5-D"),
])
def test_generator_rejects_bad_input(shape, match):
    g = UNetGenerator3D(in_channels=1, channels=4)
    with pytest.raises(ValueError, match=match):
        g(torch.randn(shape))


@pytest.mark.parametrize("kwargs, field", [
    (dict(in_channels=0), "in_channels"),
    (dict(in_channels=1, out_channels=2, residual=True), "out_channels"),
])
def test_generator_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        UNetGenerator3D(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    (dict(in_channels=0), "in_channels"),
    (dict(in_channels=2, kernel_size=4), "kernel_size"),
    (dict(in_channels=2, num_layers_d=0), "num_layers_d"),
])
def test_discriminator_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PatchDiscriminator3D(**kwargs)


def test_generator_overfits_a_fixed_pair():
    """A few Adam steps with L1 on one (condition, target) pair must lower the L1."""
    g = UNetGenerator3D(in_channels=1, channels=4, num_res_units=1)
    cond = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    target = -cond  # an easy, spatially aligned mapping
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = (g(cond) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0], losses
