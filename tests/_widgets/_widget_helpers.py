"""Helpers shared by the widget tests (a top-level module, like tests/training/_tiny.py)."""

from __future__ import annotations


def error_messages(notifications) -> list[str]:
    from napari.utils.notifications import NotificationSeverity

    return [n.message for n in notifications if n.severity == NotificationSeverity.ERROR]


def tiny_dataset(viewer, count: int = 2) -> None:
    """Point the viewer's session at a tiny phantom set (16^3 heads, 16^3 patches)."""
    from napari_medgan._widgets._common import session_for

    d = session_for(viewer).dataset
    d.source, d.phantom_count, d.phantom_size, d.patch_size = "phantom", count, 16, 16


def configure_tiny(widget, out, steps: int, preview_every: int = 2) -> None:
    """A 16^3, width-8 run on the CPU in ``out``."""
    tiny_dataset(widget.viewer)
    widget.steps.setValue(steps)
    widget.batch.setValue(2)
    widget.channels.setValue(8)
    widget.preview_every.setValue(preview_every)
    widget.device.setCurrentText("cpu")
    widget.memory_check.setCurrentText("off")  # planned in its own test
    widget.out.edit.setText(str(out))


def add_phantom_layers(viewer, size: int = 16, seed: int = 0):
    """A phantom head as Image + Labels layers placed by their geometry, real by provenance
    (as the sample data opens it)."""
    from napari_medgan._widgets._common import add_volume_layer
    from napari_medgan.data.phantom import make_head_phantom
    from napari_medgan.provenance import provenance_metadata

    image, labels = make_head_phantom((size,) * 3, seed=seed)
    real = provenance_metadata("real", source=f"head phantom (seed {seed})")
    return (add_volume_layer(viewer, image, "head", metadata=real),
            add_volume_layer(viewer, labels, "head labels", metadata=real))
