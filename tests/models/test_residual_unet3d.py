"""Residual U-Net: an untrained network equals its classical estimate; inpainting keeps every
known voxel exactly; the intensity map is the histogram-matching map of the training pairs;
in training as when evaluated, nothing comes out darker than the darkest training target,
and a checkpoint from before that floor loads unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medgan.models.residual_unet3d import ResidualUNet3D, apply_intensity_map
from napari_medgan.training.checkpoint import load_checkpoint, save_checkpoint


@pytest.mark.parametrize("base, in_channels", [("identity", 1), ("intensity_map", 1),
                                               ("inpaint", 2)])
def test_untrained_network_is_its_estimate(base, in_channels):
    g = ResidualUNet3D(in_channels, channels=4, base=base)
    x = torch.rand(2, in_channels, 16, 16, 16) * 2 - 1
    torch.testing.assert_close(g(x), x[:, :1], atol=1e-6, rtol=0)


def test_inpaint_keeps_known_voxels_bit_identical_even_after_training():
    torch.manual_seed(0)
    g = ResidualUNet3D(2, channels=4, base="inpaint")
    for p in g.parameters():  # a trained (non-zero) network must still not touch known voxels
        torch.nn.init.normal_(p, std=0.1)
    image = torch.rand(1, 1, 16, 16, 16)
    mask = torch.zeros_like(image)
    mask[..., 4:10, 5:11, 3:9] = 1
    out = g(torch.cat([image, mask], 1))  # channel 0: the (already filled) image
    known = mask == 0
    assert torch.equal(out[known], image[known])
    assert not torch.equal(out[~known], image[~known])  # the hole gets the correction


def test_intensity_map_matches_histograms():
    class Data:
        condition_volumes = [np.linspace(-1, 1, 4096, dtype=np.float32).reshape(16, 16, 16)]
        volumes = [np.linspace(-1, 1, 4096, dtype=np.float32).reshape(16, 16, 16) ** 3]

    g = ResidualUNet3D(1, channels=4, base="intensity_map")
    g.fit_to_data(Data())
    src = torch.from_numpy(Data.condition_volumes[0])[None, None]
    out = g(src)
    torch.testing.assert_close(out, src ** 3, atol=2e-3, rtol=0)  # source -> target quantiles
    y = apply_intensity_map(torch.linspace(-2, 2, 101), g.map_x, g.map_y)
    assert bool((y[1:] >= y[:-1]).all())  # monotone, constant beyond the knots


class _Air:
    """Training targets whose darkest voxel (the air) is -1.1 in normalised units."""
    volumes = [np.concatenate([np.full((8, 16, 16), -1.1, np.float32),
                               np.linspace(-1, 1, 2048, dtype=np.float32).reshape(8, 16, 16)])]
    condition_volumes = volumes


@pytest.mark.parametrize("base, in_channels", [("identity", 1), ("inpaint", 2)])
def test_output_is_raised_to_the_darkest_training_target(base, in_channels):
    """Noise below the air's level is error, so the network raises it to the floor, in
    training as when evaluated; training passes the gradient straight through, so a voxel
    below the floor whose target is above it is pulled up; inpainting's known voxels stay
    exactly as given, even below the floor."""
    torch.manual_seed(0)
    g = ResidualUNet3D(in_channels, channels=4, base=base)
    g.fit_to_data(_Air())
    assert g.floor.value.item() == pytest.approx(-1.1)
    noisy = -1.1 + 0.1 * torch.randn(1, 1, 16, 16, 16)  # air with noise, half below the floor
    x = torch.cat([noisy, torch.ones_like(noisy)], 1) if base == "inpaint" else noisy
    g.eval()
    with torch.no_grad():
        torch.testing.assert_close(g(x), noisy.clamp_min(-1.1))
        if base == "inpaint":
            known = torch.cat([noisy, torch.zeros_like(noisy)], 1)
            assert torch.equal(g(known), noisy)
    g.train()
    out = g(x)
    torch.testing.assert_close(out, noisy.clamp_min(-1.1))
    (out - (-0.5)).abs().mean().backward()  # every target above the floor: all pull upwards
    assert g.head.bias.grad.item() < 0  # descending it raises the output, below the floor too
    below = noisy < -1.1  # air everywhere: what is at the floor is right
    grad = torch.autograd.grad((g(x) - (-1.1)).abs().sum(), g.head.bias)[0]
    only_above = torch.autograd.grad((g(x)[~below] - (-1.1)).abs().sum(), g.head.bias)[0]
    torch.testing.assert_close(grad, only_above)  # voxels at the floor add no gradient


def test_checkpoint_from_before_the_floor_loads_without_one(tmp_path):
    """A checkpoint saved before the floor existed (no ``floor.value``) loads, and its
    network is the one it was: no floor."""
    old = ResidualUNet3D(1, channels=4)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("floor.")}

    class Before(torch.nn.Module):
        def state_dict(self, *args, **kwargs):
            return dict(state)

    ckpt = load_checkpoint(save_checkpoint(tmp_path / "old", modules={"generator": Before()}))
    new = ResidualUNet3D(1, channels=4)
    ckpt.load_module("generator", new)
    assert new.floor.value.item() == torch.finfo(torch.float32).min
    x = -3 + torch.rand(1, 1, 16, 16, 16)
    torch.testing.assert_close(new.eval()(x), x)


@pytest.mark.parametrize("kwargs, field", [
    (dict(in_channels=2, base="identity"), "in_channels"),
    (dict(in_channels=1, base="inpaint"), "in_channels"),
    (dict(in_channels=1, base="nearest"), "base"),
    (dict(in_channels=1, out_channels=2), "out_channels"),
])
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ResidualUNet3D(channels=4, **kwargs)


def test_rejects_indivisible_input():
    with pytest.raises(ValueError, match="divisible by 4"):
        ResidualUNet3D(1, channels=4)(torch.rand(1, 1, 18, 16, 16))
