"""DiffAugment3D: shapes, determinism, differentiability, label channels untouched."""

from __future__ import annotations

import pytest
import torch

from napari_medgan.data.augment import DiffAugment3D


def _batch(b=4, c=3, n=16):
    torch.manual_seed(1)
    return torch.rand(b, c, n, n, n) * 2 - 1


@pytest.mark.parametrize("shape", [(2, 1, 16, 16, 16), (3, 4, 8, 12, 16), (1, 2, 16, 16, 16)])
def test_shape_dtype_device_kept(shape):
    x = torch.randn(shape)
    y = DiffAugment3D(p=1.0)(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device


def test_deterministic_with_a_generator():
    x = _batch()
    aug = DiffAugment3D(p=0.8)
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = aug(x, generator=torch.Generator().manual_seed(3))
    c = aug(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_p_zero_is_identity_and_p_one_changes():
    x = _batch()
    assert torch.equal(DiffAugment3D(p=0.0)(x), x)
    assert not torch.equal(DiffAugment3D(p=1.0)(x, generator=torch.Generator().manual_seed(0)), x)


def test_gradient_flows_to_the_input():
    x = _batch().requires_grad_(True)
    y = DiffAugment3D(p=1.0)(x, generator=torch.Generator().manual_seed(0), intensity_channels=1)
    (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("spec", [1, slice(0, 1), [0]])
def test_intensity_only_on_named_channels(spec):
    """One-hot label channels keep exactly 0/1 values: only geometry touches them."""
    x = _batch(c=1)
    labels = (torch.rand(4, 3, 16, 16, 16) > 0.5).float()
    both = torch.cat([x, labels], 1)
    aug = DiffAugment3D(p=1.0, flip=False, translate=0.0, cutout=0.0)
    y = aug(both, generator=torch.Generator().manual_seed(0), intensity_channels=spec)
    assert torch.equal(y[:, 1:], labels)
    assert not torch.allclose(y[:, :1], x)


def test_geometry_moves_all_channels_together():
    """An image copied into a second channel stays identical to it after flips/shift/cutout."""
    x = _batch(c=1)
    both = torch.cat([x, x], 1)
    y = DiffAugment3D(p=1.0, intensity=False)(both, generator=torch.Generator().manual_seed(2))
    assert torch.equal(y[:, 0], y[:, 1])


def test_translation_pads_with_zeros_and_cutout_zeroes_a_box():
    x = torch.ones(2, 1, 16, 16, 16)
    g = torch.Generator().manual_seed(0)
    shifted = DiffAugment3D(p=1.0, flip=False, intensity=False, cutout=0.0, translate=0.25)(
        x, generator=g)
    assert set(shifted.unique().tolist()) <= {0.0, 1.0} and (shifted == 0).any()
    cut = DiffAugment3D(p=1.0, flip=False, intensity=False, translate=0.0, cutout=0.25)(
        x, generator=g)
    zeros = (cut == 0).sum(dim=(1, 2, 3, 4))
    assert torch.all(zeros > 0) and torch.all(zeros <= 4 ** 3)


def test_flip_probability_is_half_p():
    """ADA-style flips: applied with p, then a random choice, so at most 50% flipped."""
    x = torch.arange(8.0).view(1, 1, 2, 2, 2).repeat(400, 1, 1, 1, 1)
    y = DiffAugment3D(p=1.0, intensity=False, translate=0.0, cutout=0.0)(
        x, generator=torch.Generator().manual_seed(0))
    flipped_d = (y[:, 0, 0, 0, 0] >= 4).float().mean().item()  # first voxel came from D end
    assert 0.4 < flipped_d < 0.6


@pytest.mark.parametrize("kwargs, field", [
    ({"p": 1.5}, "p"), ({"translate": 1.0}, "translate"), ({"cutout": -0.1}, "cutout"),
])
def test_bad_settings(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DiffAugment3D(**kwargs)


def test_bad_input():
    aug = DiffAugment3D()
    with pytest.raises(ValueError, match=r"\(B, C, D, H, W\)"):
        aug(torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="intensity_channels"):
        aug(torch.zeros(1, 2, 8, 8, 8), intensity_channels=5)
