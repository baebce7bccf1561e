"""The model that ships with napari-medgan, so a new user can synthesize before training.

``synthetic-head.zip`` is a model bundle (:mod:`napari_medgan.training.bundle`): twostage3d,
a tissue label map and the image computed from it, at 64^3 on the built-in head-phantom
distribution (the demo's model, 3000 steps), trained with
``resources/pretrained_head.yaml`` (the command is in the bundle's model card,
``docs/README.md``). It opens under *File > Open Sample > napari-medgan > Synthetic head
(pretrained)* and is the default model of *Synthesize & Compare*.
"""

from __future__ import annotations

from pathlib import Path

#: The shipped bundle (a few MB; package data).
PRETRAINED_HEAD = Path(__file__).with_name("synthetic-head.zip")
