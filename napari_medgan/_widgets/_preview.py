"""The preview layers of "Train GAN": added hidden and empty when Start is clicked, then
updated in place with each :class:`~napari_medgan.training.events.PreviewEvent`.

Adding a layer costs napari 100-200 ms on a loaded 2-core machine (layer controls,
vispy visual, layer list row); done at the first preview it would freeze the viewer
mid-training (benchmarks/ui_latency.py), so it is done at the click instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial

import numpy as np
from qtpy.QtCore import QTimer

from napari_medgan._widgets._common import update_volume_layer
from napari_medgan.provenance import PROVENANCE_KEY, make_provenance
from napari_medgan.tasks import TASKS

PREVIEW = "GAN preview"
PLACEHOLDER = "medgan_placeholder"  # metadata flag of a preview layer still waiting for data
STAGGER_MS = 30  # between one piece of preview work and the next (see show_preview)


def add_placeholders(viewer, model) -> bool:
    """Add the preview layers ``model`` will produce (hidden, zeros of the patch size).

    Returns True when the viewer was empty: the camera then fits the placeholders, and
    must be reset once the first preview gives them their real geometry.
    """
    fit_view = not len(viewer.layers)
    names = {PREVIEW: False}
    task = TASKS[model.task]
    if task.outputs_labels:
        names[f"{PREVIEW} labels"] = True
    elif task.conditional:
        names[f"{PREVIEW} condition"] = task.condition == "labels"
    shape = (model.patch_size,) * 3
    selection = viewer.layers.selection
    chosen = set(selection)
    for name, is_label in names.items():
        if name not in viewer.layers:
            add = viewer.add_labels if is_label else viewer.add_image
            # in mm like every other layer: napari drops units from its axes and scale bar
            # as soon as one layer has none
            add(np.zeros(shape, np.uint8 if is_label else np.float32), name=name,
                visible=False, units=("mm",) * 3,
                metadata={PLACEHOLDER: True, PROVENANCE_KEY: _drawn(model)})
    # napari selects what is added: keep the user's layers selected and their controls shown
    # (a single selected layer becomes the active one again as the selection is restored)
    if chosen:
        selection.clear()
        selection.update(chosen)
    return fit_view


def _drawn(model, step: int | None = None) -> dict:
    """Provenance of a preview layer: synthetic, drawn by ``model`` (a ModelConfig, or the
    name its placeholder recorded) at ``step``."""
    name = getattr(model, "name", model)
    return make_provenance("synthetic", model=f"{name} (training preview)" if name else
                           "training preview", step=step)


class Turns:
    """GUI-thread work done one piece per turn of the event loop, ``STAGGER_MS`` apart, in
    order. A piece added under a key replaces a waiting piece with the same key (a newer
    preview's data supersedes an older one's that has not been put yet)."""

    def __init__(self, parent=None) -> None:
        self.pieces: OrderedDict = OrderedDict()
        self.when_done: list[Callable] = []  # called once the last piece has been drawn
        self.timer = QTimer(parent)
        self.timer.setInterval(STAGGER_MS)
        self.timer.timeout.connect(self._next)

    def add(self, pieces: list[tuple[tuple, Callable]], then: Callable | None = None) -> None:
        """Queue ``pieces``; ``then`` runs a turn after the last of them (once napari has
        drawn it), or at :meth:`flush`."""
        if then is not None:
            self.when_done.append(then)
        for key, piece in pieces:
            self.pieces.pop(key, None)
            self.pieces[key] = piece
        if not self.timer.isActive():
            self.timer.start()
            self._next()  # the first piece now

    def flush(self) -> None:
        """Do every waiting piece now (the run has ended)."""
        self.timer.stop()
        while self.pieces:
            self.pieces.popitem(last=False)[1]()
        self._done()

    def _next(self) -> None:
        if not self.pieces:
            self.timer.stop()
            self._done()
            return
        self.pieces.popitem(last=False)[1]()

    def _done(self) -> None:
        done, self.when_done = self.when_done, []
        for then in done:
            then()


def show_preview(viewer, event, fit_view: bool = False, turns: Turns | None = None,
                 then: Callable | None = None) -> None:
    """Put the first sample of ``event`` into the preview layers (data, geometry, contrast),
    make the placeholders among them visible, and fit the camera when ``fit_view``.

    With ``turns`` (the Train dock's), one piece of work per turn of the event loop: each
    changed part of a layer's geometry, its data, then each placeholder made visible, then
    the camera. Every one of them makes napari recompute the viewer's dimensions and
    re-slice (20-35 ms on a loaded 2-core machine), and a layer's first draw (shaders
    linked, under software OpenGL) costs 10-25 ms; done in one handler, the first preview
    froze the viewer for 45-80 ms (benchmarks/ui_latency.py). Without ``turns``, all now.
    ``then`` is called once the preview is in (with ``turns``, a turn after its last piece).
    """
    pairs = [(event.volumes, PREVIEW), (event.labels, f"{PREVIEW} labels"),
             (event.conditions, f"{PREVIEW} condition")]
    pairs = [(volumes[0], name) for volumes, name in pairs if volumes]
    # placeholders (or layers the user removed) are shown once filled; others keep the
    # visibility the user gave them
    waiting = [name for _, name in pairs
               if name not in viewer.layers or viewer.layers[name].metadata.get(PLACEHOLDER)]
    pieces = []
    for volume, name in pairs:
        if name in viewer.layers:  # a placeholder's geometry changes once, at the first preview
            layer, wanted = viewer.layers[name], volume.to_layer_kwargs()
            pieces += [((key, name), partial(_set_geometry, viewer, name, key, wanted[key]))
                       for key in ("scale", "translate")
                       if not np.allclose(getattr(layer, key), wanted[key])]
        pieces.append((("data", name), partial(_put, viewer, volume, name, event.step)))
    pieces += [(("show", name), partial(_show, viewer, name)) for name in waiting]
    if fit_view:
        pieces.append((("fit",), viewer.reset_view))
    if turns is None:
        for _, piece in pieces:
            piece()
        if then is not None:
            then()
    else:
        turns.add(pieces, then)


def _set_geometry(viewer, name: str, key: str, value) -> None:
    if name in viewer.layers and not np.allclose(getattr(viewer.layers[name], key), value):
        setattr(viewer.layers[name], key, value)


def _put(viewer, volume, name: str, step: int) -> None:
    """One preview layer's data, geometry, contrast and provenance (from ``step``)."""
    old = viewer.layers[name].metadata.get(PROVENANCE_KEY) or {} \
        if name in viewer.layers else {}
    model = str(old.get("model", "")).removesuffix(" (training preview)") or None
    # a condition is the model's input (cut from the training data), not its output
    record = _drawn(model, step) if name != f"{PREVIEW} condition" else \
        make_provenance("derived", method="training condition", step=step)
    layer = update_volume_layer(viewer, volume, name, visible=False)
    if not volume.is_label:
        layer.reset_contrast_limits()
    layer.metadata = {**{k: v for k, v in layer.metadata.items() if k != PLACEHOLDER},
                      PROVENANCE_KEY: record}


def _show(viewer, name: str) -> None:
    if name in viewer.layers:
        viewer.layers[name].visible = True


def remove_placeholders(viewer) -> None:
    for layer in [ly for ly in viewer.layers if ly.metadata.get(PLACEHOLDER)]:
        viewer.layers.remove(layer)
