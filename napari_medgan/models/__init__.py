"""Model families and the name -> module registry.

A model family is one module (one file) that provides, for a
:class:`napari_medgan.config.ModelConfig` ``cfg``:

* ``build_generator(cfg)``, ``build_discriminator(cfg)`` and
  ``channels_for(cfg) -> (generator input channels, image channels)``;
* ``TASKS``: the tasks it serves (names from :mod:`napari_medgan.tasks`), its
  default first;
* ``LAYOUT_VERSION`` (int) and ``LAYOUT_NOTE`` (str): the network layout
  stored in checkpoints, so one written by another layout is refused with a
  line that says why;
* optionally ``train_step(trainer, batch) -> dict of losses``: one
  optimisation step of its own (the trainer keeps the loop, events,
  checkpoints, EMA, validation, divergence guard and DDP); without it the
  trainer's adversarial step is used (non-saturating GAN loss, lazy R1, and
  L1 + feature matching for conditional families).

Adding a family is that file plus one line, :func:`register_model`. The
networks themselves take explicit keyword arguments; only the ``build_*``
functions read a config.
"""

from __future__ import annotations

from types import ModuleType

from torch import nn

from napari_medgan.models import dcgan3d, pix2pix3d

__all__ = ["MODELS", "build_generator", "build_discriminator", "channels_for", "get_model",
           "register_model"]

#: model name (``ModelConfig.name``) -> module implementing it.
MODELS: dict[str, ModuleType] = {}

_REQUIRED = ("build_generator", "build_discriminator", "channels_for", "TASKS",
             "LAYOUT_VERSION", "LAYOUT_NOTE")


def register_model(name: str, module: ModuleType) -> None:
    """Register family ``module`` as ``ModelConfig.name == name`` (and its tasks in the task
    registry); ValueError naming what the module lacks."""
    from napari_medgan.tasks import register_family

    missing = [a for a in _REQUIRED if not hasattr(module, a)]
    if missing:
        raise ValueError(f"{name}: a model family needs {', '.join(missing)}")
    register_family(name, tuple(module.TASKS))
    MODELS[name] = module


register_model("dcgan3d", dcgan3d)
register_model("pix2pix3d", pix2pix3d)


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
