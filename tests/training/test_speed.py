"""Gradient checkpointing, memory formats and step timing (napari_medgan.training.speed)."""

import copy

import pytest
import torch

from napari_medgan.models.dcgan3d import Generator3D
from napari_medgan.training.speed import enable_grad_checkpointing, memory_format, time_steps


def _grads(model, z):
    model.zero_grad()
    model(z).square().mean().backward()
    return [p.grad.clone() for p in model.parameters()]


def test_checkpointing_gives_the_same_gradients_with_fewer_saved_tensors():
    torch.manual_seed(0)
    plain = Generator3D(latent_dim=8, out_channels=1, channels=4, spatial_size=16, norm="group")
    ckpt = copy.deepcopy(plain)
    assert enable_grad_checkpointing(ckpt) == 2  # the two upsampling blocks of a 16^3 DCGAN
    z = torch.randn(2, 8)
    for a, b in zip(_grads(plain, z), _grads(ckpt, z)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    def saved_bytes(model):
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(z).sum()
        return total

    assert saved_bytes(ckpt) < 0.5 * saved_bytes(plain)


def test_a_copy_of_a_checkpointed_model_runs_its_own_weights():
    """The EMA generator is a deep copy: its blocks must not call the original's weights."""
    model = Generator3D(latent_dim=8, out_channels=1, channels=4, spatial_size=16, norm="none")
    enable_grad_checkpointing(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            p.zero_()
    z = torch.randn(1, 8)
    assert torch.count_nonzero(twin(z)) == 0 and torch.count_nonzero(model(z)) > 0
    assert enable_grad_checkpointing(model) == 0  # not wrapped twice


def test_memory_format_names():
    assert memory_format("channels_last") is torch.channels_last_3d
    assert memory_format("contiguous") is torch.contiguous_format


def test_time_steps_separates_the_first_call():
    calls = []

    def step():
        calls.append(1)
        if len(calls) == 1:
            torch.randn(200, 200) @ torch.randn(200, 200)

    first, typical = time_steps(step, torch.device("cpu"), warmup=2, repeat=3)
    assert len(calls) == 5 and first >= 0 and typical >= 0


def test_speed_fields_refuse_unknown_values():
    from napari_medgan.config import TrainConfig

    for name in ("memory_format", "compile", "grad_checkpoint"):
        with pytest.raises(ValueError, match=f"train.{name}: expected one of"):
            TrainConfig(**{name: "fastest"})
    with pytest.raises(ValueError, match="train.grad_checkpoint"):
        TrainConfig(grad_checkpoint="auto")


def test_timing_a_choice_leaves_the_run_untouched(tmp_path, tiny_run):
    """The GPU's speed trial (Trainer._time_choice) runs real steps on copies: the run's
    weights, optimiser state, step and RNG streams are as they were."""
    from napari_medgan.training.trainer import Trainer

    trainer = Trainer(tiny_run(tmp_path / "run", steps=4))
    for _ in trainer._setup():
        pass
    before = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    d_before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    torch_state, data_state = torch.random.get_rng_state(), trainer.rng.bit_generator.state
    first, typical = trainer._time_choice(torch.channels_last_3d, compile_g=False)
    assert first > 0 and typical > 0
    for key, value in trainer.G.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    for key, value in trainer.D.state_dict().items():
        torch.testing.assert_close(value, d_before[key], rtol=0, atol=0)
    assert not trainer.opt_g.state and trainer.step == 0
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert trainer.rng.bit_generator.state == data_state
    assert next(trainer.G.parameters()).is_contiguous()  # the run's own format
