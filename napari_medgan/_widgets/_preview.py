"""The preview layers of "Train GAN": added hidden and empty when Start is clicked, then
updated in place with each :class:`~napari_medgan.training.events.PreviewEvent`.

Adding a layer costs napari 100-200 ms on a loaded 2-core machine (layer controls,
vispy visual, layer list row); done at the first preview it would freeze the viewer
mid-training (benchmarks/ui_latency.py), so it is done at the click instead.
"""

from __future__ import annotations

from functools import partial

import numpy as np
from qtpy.QtCore import QTimer

from napari_medgan._widgets._common import update_volume_layer
from napari_medgan.provenance import PROVENANCE_KEY, make_provenance
from napari_medgan.tasks import TASKS

PREVIEW = "GAN preview"
PLACEHOLDER = "medgan_placeholder"  # metadata flag of a preview layer still waiting for data
STAGGER_MS = 30  # between showing one placeholder and the next (see show_preview)


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


def show_preview(viewer, event, fit_view: bool = False) -> None:
    """Put the first sample of ``event`` into the preview layers (data, geometry, contrast).

    Placeholders are shown afterwards, one per turn of the event loop (``STAGGER_MS``
    apart): a layer's first draw (its shaders linked, under software OpenGL) and the
    viewer's reaction cost 10-25 ms each on a loaded 2-core machine, and shown together
    with this handler's work they froze the viewer for 55 ms (benchmarks/ui_latency.py).
    """
    shown = 0
    pairs = [(event.volumes, PREVIEW), (event.labels, f"{PREVIEW} labels"),
             (event.conditions, f"{PREVIEW} condition")]
    for volumes, name in pairs:
        if not volumes:
            continue
        waiting = name not in viewer.layers or viewer.layers[name].metadata.get(PLACEHOLDER)
        old = viewer.layers[name].metadata.get(PROVENANCE_KEY) or {} \
            if name in viewer.layers else {}
        model = str(old.get("model", "")).removesuffix(" (training preview)") or None
        # a condition is the model's input (cut from the training data), not its output
        record = _drawn(model, event.step) if name != f"{PREVIEW} condition" else \
            make_provenance("derived", method="training condition", step=event.step)
        layer = update_volume_layer(viewer, volumes[0], name, visible=False)
        if not volumes[0].is_label:
            layer.reset_contrast_limits()
        layer.metadata = {**{k: v for k, v in layer.metadata.items() if k != PLACEHOLDER},
                          PROVENANCE_KEY: record}
        if waiting:
            shown += 1
            QTimer.singleShot(STAGGER_MS * shown, partial(setattr, layer, "visible", True))
    if fit_view:
        QTimer.singleShot(STAGGER_MS * (shown + 1), viewer.reset_view)


def remove_placeholders(viewer) -> None:
    for layer in [ly for ly in viewer.layers if ly.metadata.get(PLACEHOLDER)]:
        viewer.layers.remove(layer)
