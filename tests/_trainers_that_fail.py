"""Trainers a training process builds in place of the real one (``process.TRAINER``), to
test how the process reports their end. Importable in the child: spawn passes sys.path."""

from __future__ import annotations

import os

from napari_medgan.training.trainer import Trainer, TrainingError


class FailsAtStep2(Trainer):
    """Raises the error the run's ``out`` folder name asks for at the second step."""

    def _train_step(self):
        if self.step >= 1:
            raise (TrainingError if self.out.name == "failed" else RuntimeError)(
                "a test failure")
        return super()._train_step()


class DiesAtStep2(Trainer):
    """The process ends at the second step without a word, as a crash in a library would."""

    def _train_step(self):
        if self.step >= 1:
            os._exit(3)
        return super()._train_step()
