"""A model family is one file plus one line: a family defined in this test module, with a
training step of its own, registers with ``register_model`` and trains, checkpoints and
generates through the same trainer, CLI config checks and inference as the built-in ones."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from napari_medgan import models
from napari_medgan.config import ModelConfig
from napari_medgan.tasks import FAMILIES
from napari_medgan.training import events as ev
from napari_medgan.training.inference import generate, load_generator
from napari_medgan.training.trainer import Trainer


class _Generator(nn.Module):
    """Latent -> a 16^3 volume through one linear layer (tiny on purpose)."""

    def __init__(self, latent_dim: int, size: int) -> None:
        super().__init__()
        self.latent_dim, self.size = latent_dim, size
        self.net = nn.Linear(latent_dim, size ** 3)

    def sample_latent(self, n, generator=None, device=None):
        return torch.randn(n, self.latent_dim, generator=generator).to(device or "cpu")

    def forward(self, z):
        return torch.tanh(self.net(z)).view(-1, 1, self.size, self.size, self.size)


def _module() -> types.ModuleType:
    fam = types.ModuleType("tinyfam")
    fam.TASKS = ("synthesis",)
    fam.LAYOUT_VERSION, fam.LAYOUT_NOTE = 1, "one linear layer"
    fam.calls = 0
    fam.channels_for = lambda cfg: (int(cfg.latent_dim), 1)
    fam.build_generator = lambda cfg: _Generator(int(cfg.latent_dim), int(cfg.patch_size))
    fam.build_discriminator = lambda cfg: nn.Sequential(nn.Flatten(),
                                                        nn.Linear(int(cfg.patch_size) ** 3, 1))

    def train_step(trainer, batch):
        """Its own step: plain L2 to the batch mean (not a GAN), through the trainer's
        generator, optimiser and EMA."""
        from napari_medgan.training.ema import update_ema

        fam.calls += 1
        if fam.calls == 1:
            fam.first_weight = trainer.G.net.weight.detach().clone()
        real = batch["image"]
        fake = trainer.G(trainer.G.sample_latent(real.shape[0]))
        loss = ((fake - real.mean(0, keepdim=True)) ** 2).mean()
        trainer.opt_g.zero_grad()
        loss.backward()
        trainer.opt_g.step()
        update_ema(trainer.ema, trainer.G, trainer.config.train.ema_decay, trainer.step)
        return {"G": loss.item()}

    fam.train_step = train_step
    return fam


@pytest.fixture
def tinyfam():
    fam = _module()
    sys.modules["tinyfam"] = fam
    models.register_model("tinyfam", fam)  # the one line
    yield fam
    models.MODELS.pop("tinyfam", None)
    FAMILIES.pop("tinyfam", None)
    sys.modules.pop("tinyfam", None)


def test_a_new_family_trains_through_the_same_trainer(tmp_path, tiny_run, tinyfam):
    run = tiny_run(tmp_path / "run", steps=4)
    run.model = ModelConfig(name="tinyfam", patch_size=16, latent_dim=8)
    assert run.model.task == "synthesis"  # its default task, from its TASKS
    trainer = Trainer(run)
    events = list(trainer.run())
    steps = [e for e in events if isinstance(e, ev.StepEvent)]
    assert [e.step for e in steps] == [1, 2, 3, 4] and set(steps[0].losses) == {"G"}
    assert tinyfam.calls == 4  # its step, not the adversarial one (no "D" loss above)
    assert not torch.equal(trainer.G.net.weight, tinyfam.first_weight)  # it trained
    loaded = load_generator(events[-1].checkpoint, device="cpu")
    images, _ = generate(loaded, 2, seed=0)
    assert images[0].shape == (16, 16, 16)


def test_a_family_must_provide_the_protocol():
    with pytest.raises(ValueError, match="needs .*LAYOUT_VERSION"):
        models.register_model("broken", types.ModuleType("broken"))
    fam = _module()
    fam.TASKS = ("segment",)
    with pytest.raises(ValueError, match="registered tasks"):
        models.register_model("badtasks", fam)
    assert "broken" not in models.MODELS and "badtasks" not in FAMILIES
