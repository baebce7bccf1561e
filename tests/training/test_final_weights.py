"""Non-finite weights are never saved: the trainer rolls back to the last finite state
before a checkpoint, or refuses with one line when there is none."""

from __future__ import annotations

import pytest
import torch

from napari_medgan.training import events as ev
from napari_medgan.training.checkpoint import load_checkpoint
from napari_medgan.training.lock import LOCK_FILE
from napari_medgan.training.trainer import Trainer, TrainingError


def _poison(state: dict) -> None:
    """NaN into the first floating-point entry of a state dict (live or snapshot)."""
    with torch.no_grad():
        next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))


def _train_poisoned_at_the_end(trainer, nets, snapshot=False) -> list:
    """Run, poisoning ``nets`` (and the rollback snapshot) after the last step."""
    events = []
    for event in trainer.run():
        events.append(event)
        if isinstance(event, ev.StepEvent) and event.step == event.total:
            for name in nets:
                _poison(getattr(trainer, name).state_dict())
                if snapshot:
                    _poison(trainer._snapshot[name])
    return events


def _finite(checkpoint) -> bool:
    return all(bool(torch.isfinite(t).all()) for k, t in checkpoint.tensors.items()
               if k.split(".")[0] in ("generator", "ema") and t.is_floating_point())


@pytest.mark.parametrize("nets", [["G"], ["ema"], ["G", "ema"]])
def test_non_finite_weights_at_the_end_are_rolled_back_before_the_final_save(
        tmp_path, tiny_run, nets):
    events = _train_poisoned_at_the_end(Trainer(tiny_run(tmp_path / "run", steps=4)), nets)
    warnings = [e.text for e in events if isinstance(e, ev.MessageEvent)
                and e.level == "warning"]
    assert warnings == ["non-finite generator weights at step 4; rolled back to step 4, the "
                        "last finite state, before saving (learning rates halved)"]
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "final")
    assert final.step == 4 and _finite(final)
    assert events[-1].reason == "finished" and events[-1].step == 4


def test_with_no_finite_state_to_roll_back_to_nothing_is_saved(tmp_path, tiny_run):
    run = tmp_path / "run"
    trainer = Trainer(tiny_run(run, steps=4))  # a checkpoint at step 3
    with pytest.raises(TrainingError) as info:
        _train_poisoned_at_the_end(trainer, ["G", "ema"], snapshot=True)
    text = str(info.value)
    assert text.startswith(f"{run}: the generator's weights are not finite at step 4 and "
                           "there is no finite state to roll back to") and "\n" not in text
    assert not (run / "checkpoints" / "final").exists()
    assert not (run / "checkpoints" / "step-000004").exists()
    assert load_checkpoint(run).step == 3 and _finite(load_checkpoint(run))
    assert not (run / LOCK_FILE).exists()
