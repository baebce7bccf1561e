"""The hierarchical family: whole non-cubic volumes, slab by slab, exactly as in one pass."""

from __future__ import annotations

import pytest
import torch

from napari_medgan import models
from napari_medgan.config import ModelConfig
from napari_medgan.models.hagan3d import (
    FACTOR,
    HierarchicalDiscriminator3D,
    HierarchicalGenerator3D,
    _head,
)


def _generator(**kw):
    args = dict(latent_dim=8, out_channels=1, channels=8, shape=(64, 32, 96), slab_size=16)
    args.update(kw)
    return HierarchicalGenerator3D(**args).eval()


def test_shapes_of_the_training_and_the_whole_volume_outputs():
    gen = _generator(out_channels=4, num_classes=3).train()
    z = gen.sample_latent(2)
    low, slab = gen(z, 8)
    assert low.shape == (2, 4, 16, 8, 24) and slab.shape == (2, 4, 16, 32, 96)
    torch.testing.assert_close(slab[:, 1:].sum(1), torch.ones(2, 16, 32, 96))  # softmax
    gen.eval()
    with torch.no_grad():
        assert gen(z).shape == (2, 4, 64, 32, 96)


def test_slab_by_slab_equals_one_pass():
    """The whole volume is made slab by slab with context planes; in eval mode (batch norm
    on running statistics) that is exactly the high-resolution branch run in one pass."""
    gen = _generator()
    with torch.no_grad():
        for p in gen.parameters():  # move off the DCGAN init so the test has teeth
            p.add_(0.05 * torch.randn_like(p))
        z = gen.sample_latent(1)
        feats = gen.features(z)
        whole = _head(gen.high(feats), 0)
        torch.testing.assert_close(gen(z), whole, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gen(z, 24)[1], whole[:, :, 24:40], rtol=1e-5, atol=1e-6)
        # the low-resolution head sees the same features: its volume lines up with the slab
        assert gen(z, 24)[0].shape[2] * FACTOR == whole.shape[2]


def test_discriminator_sees_where_the_slab_is():
    disc = HierarchicalDiscriminator3D(in_channels=1, channels=8, shape=(64, 32, 32),
                                       slab_size=16)
    low, slab = torch.randn(2, 1, 16, 8, 8), torch.randn(2, 1, 16, 32, 32)
    l0, s0 = disc(low, slab, 0)
    l1, s1 = disc(low, slab, 48)
    assert l0.shape == s0.shape == (2, 1)
    torch.testing.assert_close(l0, l1)
    assert not torch.allclose(s0, s1)  # same voxels at another depth: another judgement
    with pytest.raises(ValueError, match="expected slab input"):
        disc(low, torch.randn(2, 3, 16, 32, 32), 0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(shape=(64, 32, 48)), "multiple of 32"),
    (dict(slab_size=12), "slab_size"),
    (dict(slab_size=128), "slab_size"),
    (dict(channels=5), "channels"),
])
def test_bad_arguments_name_what_is_wrong(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _generator(**kwargs)


def test_bad_slab_start_and_latent():
    gen = _generator()
    with pytest.raises(ValueError, match="slab_start"):
        gen(gen.sample_latent(1), 60)
    with pytest.raises(ValueError, match="latent of shape"):
        gen(torch.randn(1, 3))


def test_config_volume_shape_is_x_y_z_and_only_for_whole_volume_families():
    cfg = ModelConfig(name="hagan3d", volume_shape="96,32,64", slab_size=16, channels=8)
    assert models.patch_shape(cfg) == (64, 32, 96)  # arrays are (z, y, x)
    assert models.build_generator(cfg).shape == (64, 32, 96)
    assert models.patch_shape(ModelConfig(name="hagan3d", patch_size=32)) == (32, 32, 32)
    with pytest.raises(ValueError, match="model.volume_shape: dcgan3d trains on cubic patches"):
        models.patch_shape(ModelConfig(name="dcgan3d", volume_shape=(64, 64, 64)))
    with pytest.raises(ValueError, match="model.slab_size"):
        ModelConfig(name="hagan3d", slab_size=20)
