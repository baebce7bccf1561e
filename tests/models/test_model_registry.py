"""Model registry: every (model, task) builds from a ModelConfig and the pieces fit together."""

from __future__ import annotations

import pytest
import torch

from napari_medgan import models
from napari_medgan.config import MODEL_TASKS, ModelConfig

# (config kwargs, channels_for, generator output shape at batch 1, D output shape)
CASES = [
    (dict(name="dcgan3d", task="synthesis", patch_size=16), (128, 1), (1, 1, 16, 16, 16), (1, 1)),
    (dict(name="dcgan3d", task="synthesis", patch_size=32), (128, 1), (1, 1, 32, 32, 32), (1, 1)),
    (dict(name="dcgan3d", task="joint", num_classes=4, patch_size=16), (128, 5),
     (1, 5, 16, 16, 16), (1, 1)),
    (dict(name="dcgan3d", task="joint", num_classes=3, patch_size=32), (128, 4),
     (1, 4, 32, 32, 32), (1, 1)),
    (dict(name="pix2pix3d", task="label2image", num_classes=8, patch_size=16), (8, 1),
     (1, 1, 16, 16, 16), (1, 9)),  # two-scale PatchGAN: 2^3 + 1^3 logits
    (dict(name="pix2pix3d", task="translate", patch_size=32), (1, 1), (1, 1, 32, 32, 32),
     (1, 72)),  # 4^3 + 2^3
    (dict(name="pix2pix3d", task="denoise", patch_size=16), (1, 1), (1, 1, 16, 16, 16),
     (1, 9)),
    (dict(name="pix2pix3d", task="superres", patch_size=32), (1, 1), (1, 1, 32, 32, 32),
     (1, 72)),
    (dict(name="pix2pix3d", task="inpaint", patch_size=16), (2, 1), (1, 1, 16, 16, 16),
     (1, 9)),
    (dict(name="pix2pix3d", task="inpaint", patch_size=32, spectral_norm=False), (2, 1),
     (1, 1, 32, 32, 32), (1, 72)),
]


def test_registry_names_match_config():
    assert set(models.MODELS) == set(MODEL_TASKS) == {"dcgan3d", "hagan3d", "pix2pix3d",
                                                      "twostage3d"}
    for module in models.MODELS.values():
        for fn in ("build_generator", "build_discriminator", "channels_for"):
            assert callable(getattr(module, fn))


@pytest.mark.parametrize("kwargs, channels, g_shape, d_shape", CASES)
def test_build_every_task(kwargs, channels, g_shape, d_shape):
    cfg = ModelConfig(channels=8, **kwargs)
    assert models.channels_for(cfg) == channels
    g, d = models.build_generator(cfg), models.build_discriminator(cfg)
    if cfg.conditional:
        cond = torch.randn(1, channels[0], *g_shape[2:])
        fake = g(cond)
        logits = d(fake, cond)
    else:
        fake = g(g.sample_latent(1))
        logits = d(fake)
    assert fake.shape == g_shape
    assert logits.shape == d_shape


def test_discriminator_input_channels_follow_the_task():
    joint = ModelConfig(name="dcgan3d", task="joint", num_classes=4, channels=8, patch_size=16)
    assert models.build_discriminator(joint).in_channels == 5
    inpaint = ModelConfig(name="pix2pix3d", task="inpaint", channels=8, patch_size=16)
    assert models.build_discriminator(inpaint).in_channels == 3


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("kwargs, g_range, d_range", [
    # Sensible sizes at the default patch 32 / channels 32 (millions of parameters).
    (dict(name="dcgan3d"), (2.5e6, 4.5e6), (0.4e6, 1.0e6)),
    (dict(name="pix2pix3d", task="translate"), (0.4e6, 1.0e6), (1.8e6, 3.0e6)),
])
def test_parameter_counts_are_sensible(kwargs, g_range, d_range):
    cfg = ModelConfig(patch_size=32, channels=32, **kwargs)
    n_g, n_d = _count(models.build_generator(cfg)), _count(models.build_discriminator(cfg))
    assert g_range[0] < n_g < g_range[1]
    assert d_range[0] < n_d < d_range[1]


def test_spectral_norm_flag_reaches_the_discriminator():
    for name, task in (("dcgan3d", "synthesis"), ("pix2pix3d", "translate")):
        kw = dict(name=name, task=task, channels=8)
        on = models.build_discriminator(ModelConfig(spectral_norm=True, **kw))
        off = models.build_discriminator(ModelConfig(spectral_norm=False, **kw))
        assert on.spectral_norm and not off.spectral_norm


@pytest.mark.parametrize("kwargs, field", [
    (dict(name="stylegan3d"), "model.name"),
    (dict(name="dcgan3d", task="translate"), "model.task"),
    (dict(name="pix2pix3d", task="joint"), "model.task"),
    (dict(name="dcgan3d", patch_size=24), "model.patch_size"),
    (dict(name="dcgan3d", task="joint", num_classes=1), "model.num_classes"),
    (dict(name="pix2pix3d", task="label2image", num_classes=0), "model.num_classes"),
    (dict(name="dcgan3d", channels=2), "model.channels"),
    # num_classes=0 means "from the data": valid config, but it cannot be built as is.
    (dict(name="dcgan3d", task="joint", num_classes=0), "model.num_classes"),
])
def test_invalid_configs_raise(kwargs, field):
    with pytest.raises(ValueError, match=field):
        models.build_generator(ModelConfig(**kwargs))
    if kwargs.get("num_classes") == 0:
        with pytest.raises(ValueError, match=field):
            models.build_discriminator(ModelConfig(**kwargs))


def test_unknown_model_name_in_registry():
    class Fake:
        name = "nope"
        task = "synthesis"

    with pytest.raises(ValueError, match="model.name.*'nope'"):
        models.build_generator(Fake())
