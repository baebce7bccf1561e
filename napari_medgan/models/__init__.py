"""Network architectures and the name -> module registry.

Each model is one module exposing ``build_generator(cfg)``,
``build_discriminator(cfg)`` and ``channels_for(cfg)``, where ``cfg`` is a
:class:`napari_medgan.config.ModelConfig`. Adding a model means adding that
file and one line to :data:`MODELS` (and its tasks to
``napari_medgan.config.MODEL_TASKS``). The networks themselves take explicit
keyword arguments; only the ``build_*`` functions read a config.
"""

from __future__ import annotations

from types import ModuleType

from torch import nn

from napari_medgan.models import dcgan3d, pix2pix3d

__all__ = ["MODELS", "build_generator", "build_discriminator", "channels_for", "get_model"]

#: model name (``ModelConfig.name``) -> module implementing it.
MODELS: dict[str, ModuleType] = {
    "dcgan3d": dcgan3d,
    "pix2pix3d": pix2pix3d,
}


def get_model(name: str) -> ModuleType:
    """The module registered as ``name``; ValueError naming the known ones otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"model.name: expected one of {tuple(MODELS)}, got {name!r}") from None


def build_generator(cfg) -> nn.Module:
    """Generator for ``cfg``: latent -> image (dcgan3d) or condition -> image (pix2pix3d)."""
    return get_model(cfg.name).build_generator(cfg)


def build_discriminator(cfg) -> nn.Module:
    """Discriminator for ``cfg``; returns logits ``(B, 1)`` or a patch map ``(B, 1, d, h, w)``."""
    return get_model(cfg.name).build_discriminator(cfg)


def channels_for(cfg) -> tuple[int, int]:
    """``(generator input channels, image output channels)`` for ``cfg``.

    The input is the latent length for unconditional models and the number of
    condition channels for conditional ones; the output is 1, or
    ``1 + num_classes`` for joint image + label synthesis.
    """
    return get_model(cfg.name).channels_for(cfg)
