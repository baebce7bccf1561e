"""3D DCGAN generator / discriminator: shapes, joint outputs, spectral norm, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from napari_medgan.models.dcgan3d import Discriminator3D, Generator3D, base_size

# (kwargs, batch, expected output shape)
GENERATOR_CASES = [
    (dict(latent_dim=16, out_channels=1, channels=8, spatial_size=16), 2, (2, 1, 16, 16, 16)),
    (dict(latent_dim=16, out_channels=1, channels=8, spatial_size=32), 2, (2, 1, 32, 32, 32)),
    (dict(latent_dim=8, out_channels=1, channels=4, spatial_size=48), 1, (1, 1, 48, 48, 48)),
    (dict(latent_dim=8, out_channels=1, channels=4, spatial_size=64), 1, (1, 1, 64, 64, 64)),
    (dict(latent_dim=16, out_channels=4, channels=8, spatial_size=16, num_classes=3), 2,
     (2, 4, 16, 16, 16)),
    (dict(latent_dim=16, out_channels=6, channels=8, spatial_size=32, num_classes=5), 2,
     (2, 6, 32, 32, 32)),
    (dict(latent_dim=16, out_channels=1, channels=8, spatial_size=16, norm="group"), 2,
     (2, 1, 16, 16, 16)),
    (dict(latent_dim=16, out_channels=1, channels=8, spatial_size=16, norm="instance"), 2,
     (2, 1, 16, 16, 16)),
]

# (kwargs, input shape, expected output shape)
DISCRIMINATOR_CASES = [
    (dict(in_channels=1, channels=8, spatial_size=16, spectral_norm=True), (2, 1, 16, 16, 16),
     (2, 1)),
    (dict(in_channels=1, channels=8, spatial_size=16, spectral_norm=False), (2, 1, 16, 16, 16),
     (2, 1)),
    (dict(in_channels=1, channels=8, spatial_size=32, spectral_norm=True), (3, 1, 32, 32, 32),
     (3, 1)),
    (dict(in_channels=1, channels=8, spatial_size=32, spectral_norm=False), (1, 1, 32, 32, 32),
     (1, 1)),
    (dict(in_channels=5, channels=8, spatial_size=32, spectral_norm=True), (2, 5, 32, 32, 32),
     (2, 1)),
    (dict(in_channels=1, channels=4, spatial_size=48, spectral_norm=True), (1, 1, 48, 48, 48),
     (1, 1)),
]


@pytest.mark.parametrize("kwargs, batch, expected", GENERATOR_CASES)
def test_generator_shape_and_range(kwargs, batch, expected):
    g = Generator3D(**kwargs)
    out = g(g.sample_latent(batch))
    assert out.shape == expected
    image = out[:, :1]
    assert image.min() >= -1 and image.max() <= 1
    out.mean().backward()
    assert all(p.grad is not None for p in g.parameters())


@pytest.mark.parametrize("kwargs, in_shape, expected", DISCRIMINATOR_CASES)
def test_discriminator_shape(kwargs, in_shape, expected):
    d = Discriminator3D(**kwargs)
    x = torch.randn(in_shape, requires_grad=True)
    logits = d(x)
    assert logits.shape == expected
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_joint_generator_labels_are_probabilities():
    g = Generator3D(latent_dim=16, out_channels=4, channels=8, spatial_size=16, num_classes=3)
    out = g(g.sample_latent(3))
    image, labels = out[:, :1], out[:, 1:]
    assert image.abs().max() <= 1
    assert labels.min() >= 0
    torch.testing.assert_close(labels.sum(1), torch.ones(3, 16, 16, 16))


def test_joint_generator_under_bf16_autocast_keeps_label_sums():
    g = Generator3D(latent_dim=16, out_channels=3, channels=8, spatial_size=16, num_classes=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(g.sample_latent(2))
    assert out.shape == (2, 3, 16, 16, 16)
    torch.testing.assert_close(out[:, 1:].float().sum(1), torch.ones(2, 16, 16, 16),
                               atol=1e-2, rtol=0)


def test_sample_latent_is_reproducible_with_a_generator():
    g = Generator3D(latent_dim=12, out_channels=1, channels=4, spatial_size=16)
    a = g.sample_latent(4, generator=torch.Generator().manual_seed(7))
    b = g.sample_latent(4, generator=torch.Generator().manual_seed(7))
    assert a.shape == (4, 12)
    torch.testing.assert_close(a, b)
    assert g.sample_latent(2, device="cpu").device.type == "cpu"


def test_spectral_norm_on_off():
    with_sn = Discriminator3D(in_channels=1, channels=8, spatial_size=32, spectral_norm=True)
    without = Discriminator3D(in_channels=1, channels=8, spatial_size=32, spectral_norm=False)
    layers = [m for m in with_sn.modules() if isinstance(m, (nn.Conv3d, nn.Linear))]
    assert layers and all(hasattr(m, "parametrizations") for m in layers)
    assert not any(hasattr(m, "parametrizations") for m in without.modules())
    assert any(isinstance(m, nn.GroupNorm) for m in without.modules())
    assert not any(isinstance(m, nn.GroupNorm) for m in with_sn.modules())
    # The normalised weight has largest singular value ~1 after a few power iterations.
    for _ in range(20):
        with_sn(torch.randn(1, 1, 32, 32, 32))
    conv = layers[1]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.1)


def test_dcgan_weight_init():
    g = Generator3D(latent_dim=64, out_channels=1, channels=16, spatial_size=32)
    w = g.blocks[0][0].weight  # the block's (upsampling) convolution
    assert w.std().item() == pytest.approx(0.02, rel=0.05)
    assert abs(w.mean().item()) < 2e-3


def test_channel_widths_halve_to_channels():
    g = Generator3D(latent_dim=8, out_channels=1, channels=8, spatial_size=32)
    convs = [m for m in g.blocks.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [32, 16, 8]
    assert g.seed_channels == 64 and g.base == 4
    capped = Generator3D(latent_dim=8, out_channels=1, channels=8, spatial_size=32,
                         max_channels=16)
    assert capped.seed_channels == 16


@pytest.mark.parametrize("size, expected", [(16, (4, 2)), (32, (4, 3)), (48, (6, 3)),
                                            (64, (4, 4)), (128, (4, 5)), (80, (5, 4))])
def test_base_size(size, expected):
    assert base_size(size) == expected


@pytest.mark.parametrize("kwargs, field", [
    (dict(latent_dim=8, out_channels=1, channels=4, spatial_size=24), "spatial_size"),
    (dict(latent_dim=8, out_channels=1, channels=4, spatial_size=8), "spatial_size"),
    (dict(latent_dim=0, out_channels=1, channels=4, spatial_size=16), "latent_dim"),
    (dict(latent_dim=8, out_channels=3, channels=4, spatial_size=16, num_classes=3),
     "out_channels"),
    (dict(latent_dim=8, out_channels=2, channels=4, spatial_size=16, num_classes=1),
     "num_classes"),
    (dict(latent_dim=8, out_channels=1, channels=4, spatial_size=16, norm="layer"), "norm"),
])
def test_generator_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Generator3D(**kwargs)


def test_discriminator_bad_arguments():
    with pytest.raises(ValueError, match="spatial_size"):
        Discriminator3D(in_channels=1, channels=4, spatial_size=20)
    with pytest.raises(ValueError, match="in_channels"):
        Discriminator3D(in_channels=0, channels=4, spatial_size=16)


def test_wrong_input_shapes_name_the_expected_shape():
    g = Generator3D(latent_dim=8, out_channels=1, channels=4, spatial_size=16)
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        g(torch.randn(2, 9))
    d = Discriminator3D(in_channels=1, channels=4, spatial_size=16)
    with pytest.raises(ValueError, match=r"\(B, 1, 16, 16, 16\)"):
        d(torch.randn(2, 1, 32, 32, 32))
    with pytest.raises(ValueError, match=r"got \(2, 16, 16, 16\)"):
        d(torch.randn(2, 16, 16, 16))


def test_channels_last_3d_input_matches():
    d = Discriminator3D(in_channels=1, channels=4, spatial_size=16, spectral_norm=False).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    y = d(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(y, d(x), atol=1e-5, rtol=1e-4)


def test_upsampling_block_keeps_the_state_dict_keys_of_upsample_then_conv():
    """The fused block loads weights written when nn.Upsample sat at index 0 of the block,
    and computes what nn.Upsample + that conv computed."""
    g = Generator3D(latent_dim=8, out_channels=1, channels=4, spatial_size=32)
    keys = [k for k in g.state_dict() if k.startswith("blocks.0.")]
    assert "blocks.0.1.weight" in keys and "blocks.0.2.running_mean" in keys
    block, x = g.blocks[0], torch.randn(2, g.seed_channels, 2, 2, 2, dtype=torch.float64)
    conv = block[0].double()
    old = nn.functional.conv3d(nn.functional.interpolate(x, scale_factor=2), conv.weight,
                               conv.bias, padding=1)
    torch.testing.assert_close(conv(x), old)


def test_minibatch_std_sees_alike_samples_and_never_mixes_real_with_fake():
    from napari_medgan.models.dcgan3d import minibatch_std

    alike = torch.ones(4, 3, 2, 2, 2)  # four identical samples: no spread
    varied = torch.randn(4, 3, 2, 2, 2)
    feature = minibatch_std(torch.cat([alike, varied]), splits=2)
    assert feature.shape == (8, 1, 2, 2, 2)
    assert feature[:4].max() < 1e-3 < feature[4:].min()  # the halves are judged apart
    # two real + two fake: groups of two inside each half; as one part, one group of four
    pair = torch.cat([alike[:2], varied[:2]])
    assert minibatch_std(pair, splits=2)[:2].max() < 1e-3
    assert minibatch_std(pair, splits=1)[:2].min() > 1e-3
    with pytest.raises(ValueError, match="splits"):
        minibatch_std(torch.ones(3, 1, 2, 2, 2), splits=2)

    d = Discriminator3D(in_channels=2, channels=4, spatial_size=16, minibatch_std=True)
    assert d(torch.randn(4, 2, 16, 16, 16), 2).shape == (4, 1)
    assert d.fc.in_features == (4 * 2 + 1) * 4**3
