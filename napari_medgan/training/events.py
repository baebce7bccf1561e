"""Events yielded by :meth:`napari_medgan.training.trainer.Trainer.run`.

The trainer's run is an iterator of these; the CLI prints them, the napari
widget turns them into plot points and layer updates. They hold plain Python
and numpy values only (no tensors), so they can cross threads safely.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from napari_medgan.io.volume import Volume


@dataclass
class StepEvent:
    """One optimisation step finished."""

    step: int
    total: int
    losses: dict[str, float]
    seconds: float
    lr_g: float
    lr_d: float


@dataclass
class PreviewEvent:
    """Fixed-seed samples from the EMA generator, in original intensity units and geometry.

    ``volumes`` holds ``train.preview_count`` images; ``labels`` the matching
    label maps for joint models (else empty); ``conditions`` the inputs for
    conditional models (else empty).
    """

    step: int
    volumes: list[Volume]
    labels: list[Volume] = field(default_factory=list)
    conditions: list[Volume] = field(default_factory=list)


@dataclass
class CheckpointEvent:
    step: int
    path: str
    kind: str = "last"  # "last" | "best" | "final"


@dataclass
class MessageEvent:
    """Something the user should know (divergence rollback, device chosen, ...)."""

    step: int
    level: str  # "info" | "warning" | "progress" (periodic figures: a status line, not a pop-up)
    text: str


@dataclass
class DoneEvent:
    """The run ended; ``reason`` is ``"finished"`` or ``"stopped"``."""

    step: int
    reason: str
    checkpoint: str | None


Event = StepEvent | PreviewEvent | CheckpointEvent | MessageEvent | DoneEvent
