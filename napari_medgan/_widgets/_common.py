"""Shared pieces of the three widgets.

* :class:`Session` -- one per viewer: the chosen dataset, the model/task picked
  in "Train GAN", and the last run/checkpoint, so the widgets cooperate.
* Layer <-> :class:`~napari_medgan.io.volume.Volume` glue, which goes through
  ``Volume.from_layer_data`` / ``Volume.to_layer_kwargs`` only.
* Small Qt helpers: layer pickers, a path picker, one-line error reporting.

Nothing here imports torch.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QMenu,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_medgan.io.volume import Volume


# ---------------------------------------------------------------------------- session
@dataclass
class DatasetChoice:
    """What the "Dataset" widget chose; "Train GAN" turns it into ``RunConfig.data``."""

    source: str = "phantom"  # "phantom" | "layers" | "folder"
    image_layers: list[str] = field(default_factory=list)
    label_layers: list[str] = field(default_factory=list)
    target_layers: list[str] = field(default_factory=list)
    folder: str = ""
    label_folder: str = ""
    target_folder: str = ""
    preset: str = "mr"
    target_preset: str | None = None
    patch_size: int = 32
    phantom_count: int = 24
    phantom_size: int = 48
    phantom_modality: str = "mr"

    def summary(self) -> str:
        if self.source == "layers":
            return f"{len(self.image_layers)} image layer(s): {', '.join(self.image_layers)}"
        if self.source == "folder":
            return f"folder {self.folder}"
        return (f"phantom: {self.phantom_count} x {self.phantom_size}^3 "
                f"{self.phantom_modality.upper()}")

    def apply(self, run, viewer) -> tuple[list | None, list | None, list | None]:
        """Fill ``run.data`` / ``run.model.patch_size``; return ``(images, labels, targets)``
        volumes for layer sources (None otherwise), read on the main thread."""
        d = run.data
        d.preset, d.target_preset = self.preset, self.target_preset
        run.model.patch_size = int(self.patch_size)
        if self.source == "folder":
            d.source = self.folder
            d.labels, d.target = self.label_folder or None, self.target_folder or None
            return None, None, None
        if self.source == "phantom":
            d.source = "phantom"
            d.phantom_count, d.phantom_size = int(self.phantom_count), int(self.phantom_size)
            d.phantom_modality = self.phantom_modality
            return None, None, None
        if not self.image_layers:
            raise ValueError("dataset: no image layer selected in the Dataset widget")
        layers = [[layer_to_volume(find_layer(viewer, n)) for n in names] or None
                  for names in (self.image_layers, self.label_layers, self.target_layers)]
        return layers[0], layers[1], layers[2]


class Session:
    """State shared by the widgets of one viewer.

    ``changed`` is emitted with ``"dataset"``, ``"model"`` or ``"run"``.
    """

    changed = Signal(str)

    def __init__(self) -> None:
        self.dataset = DatasetChoice()
        self.model_name = "dcgan3d"
        self.task = "synthesis"
        self.run_dir: str | None = None
        self.checkpoint: str | None = None


_SESSIONS: dict[int, Session] = {}


def session_for(viewer) -> Session:
    """The session of ``viewer`` (created on first use, dropped with the viewer).

    Keyed weakly so a closed viewer is not kept alive by the plugin.
    """
    real = getattr(viewer, "__wrapped__", viewer)  # napari hands plugins a proxy
    key = id(real)
    if key not in _SESSIONS:
        _SESSIONS[key] = Session()
        weakref.finalize(real, _SESSIONS.pop, key, None)
    return _SESSIONS[key]


def follow_session(widget, slot) -> None:
    """Call ``slot(what)`` on session changes while ``widget`` exists (a closed dock's
    widget must not be called back by the other widgets of its viewer)."""
    from functools import partial

    changed = widget.session.changed
    changed.connect(slot)
    widget.destroyed.connect(partial(_disconnect, changed, slot))


def _disconnect(signal, slot, *_) -> None:
    signal.disconnect(slot, missing_ok=True)


# ------------------------------------------------------------------ layers <-> volumes
def find_layer(viewer, name: str):
    if name not in viewer.layers:
        raise ValueError(f"layer {name!r} not found in the viewer (renamed or deleted?)")
    return viewer.layers[name]


def layer_kind(layer) -> str:
    """``"image"``, ``"labels"`` or ``"other"`` (without napari's private type string)."""
    from napari.layers import Image, Labels

    if isinstance(layer, Labels):
        return "labels"
    return "image" if isinstance(layer, Image) else "other"


def layer_to_volume(layer, copy: bool = True) -> Volume:
    """The layer's voxels (a copy, unless ``copy=False``) with its physical geometry."""
    return Volume.from_layer_data(
        np.array(layer.data, copy=copy), layer.metadata, layer.scale, layer.translate,
        layer.affine.affine_matrix, is_label=layer_kind(layer) == "labels", name=layer.name,
    )


def add_volume_layer(viewer, volume: Volume, name: str, **kwargs):
    """Add ``volume`` as an Image or Labels layer placed by its geometry."""
    layer_kwargs = volume.to_layer_kwargs()
    layer_kwargs["metadata"].update(kwargs.pop("metadata", {}))
    add = viewer.add_labels if volume.is_label else viewer.add_image
    return add(volume.array, name=name, **layer_kwargs, **kwargs)


def update_volume_layer(viewer, volume: Volume, name: str, **kwargs):
    """Replace the data and geometry of layer ``name`` in place (add it if missing)."""
    if name not in viewer.layers:
        return add_volume_layer(viewer, volume, name, **kwargs)
    layer = viewer.layers[name]
    layer_kwargs = volume.to_layer_kwargs()
    for key in ("scale", "translate"):  # each assignment re-slices: skip when unchanged
        if not np.allclose(getattr(layer, key), layer_kwargs[key]):
            setattr(layer, key, layer_kwargs[key])
    layer.metadata = {**layer.metadata, **layer_kwargs["metadata"]}
    layer.data = volume.array
    return layer


# -------------------------------------------------------------------------- errors
#: Errors caused by input (bad path, bad data, bad settings): one line, no traceback.
def expected_errors() -> tuple[type[BaseException], ...]:
    from napari_medgan.training.trainer import TrainingError

    return (ValueError, OSError, TrainingError)


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def report_error(context: str, exc: BaseException) -> str:
    """Show ``exc`` as a napari notification; bugs keep their traceback. Returns the line."""
    from napari.utils.notifications import notification_manager, show_error

    message = f"{context}: {one_line(exc)}"
    if isinstance(exc, expected_errors()):
        show_error(message)
    else:
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)
    return message


def run_in_thread(func, *args, returned=None, errored=None, finished=None,
                  progress: str | None = None):
    """Run ``func(*args)`` in a napari worker thread; the callbacks run on the main thread.

    superqt's plain worker classes are used so that an error reaches ``errored`` only
    (napari's own class would also raise a second, traceback notification). With
    ``progress`` (a description), ``func`` also gets ``progress=callback`` and its
    ``callback(done, total)`` calls drive a bar in napari's activity dock.
    """
    from napari.qt.threading import create_worker
    from superqt.utils import FunctionWorker, GeneratorWorker

    connect = {"errored": errored or (lambda exc: report_error("napari-medgan", exc))}
    if returned is not None:
        connect["returned"] = returned
    if finished is not None:
        connect["finished"] = finished
    if progress is None:
        return create_worker(func, *args, _connect=connect, _worker_class=FunctionWorker)
    worker = create_worker(_with_ticks, func, *args, _connect=connect,
                           _worker_class=GeneratorWorker,
                           _progress={"total": 0, "desc": progress})
    pbar = worker.pbar  # total 0: napari does not advance it per yield; tick does

    def tick(update: tuple[int, int]) -> None:  # main thread: the bar's Qt parent lives here
        pbar.total, pbar.n = update[1], update[0]
        pbar.refresh()

    worker.yielded.connect(tick)
    return worker


def _with_ticks(func, *args):
    """Generator for a worker: run ``func(*args, progress=callback)`` in a helper thread and
    yield its ``(done, total)`` reports (a worker can only hand values to the main thread by
    yielding); return what ``func`` returns, or raise what it raised."""
    import queue
    import threading

    reports: queue.Queue = queue.Queue()
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = func(*args, progress=lambda done, total: reports.put((done, total)))
        except BaseException as exc:  # noqa: BLE001 - handed to the worker, raised there
            outcome["error"] = exc
        finally:
            reports.put(None)

    threading.Thread(target=target, name="napari-medgan-synthesis", daemon=True).start()
    while (report := reports.get()) is not None:
        yield report
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ----------------------------------------------------------------------- Qt helpers
class _DockScroll(QScrollArea):
    """A vertical scroll area as wide as its content: docks scroll, never clip sideways."""

    #: Height a dock asks for (px): two of them share a 1000 px screen.
    PREFERRED_HEIGHT = 420

    def _width(self) -> int:
        body = self.widget()
        return body.minimumSizeHint().width() + self.verticalScrollBar().sizeHint().width() + 2

    def minimumSizeHint(self):  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        hint.setWidth(self._width())
        return hint

    def sizeHint(self):  # noqa: N802 - Qt's name
        hint = super().sizeHint()
        hint.setWidth(max(self._width(), self.widget().sizeHint().width()))
        hint.setHeight(min(self.widget().sizeHint().height() + 2, self.PREFERRED_HEIGHT))
        return hint

    def eventFilter(self, watched, event):  # noqa: N802 - Qt's name
        # The body's controls change after the dock is laid out (labels filled in, fields
        # shown): tell the dock's layout that this area's width hint changed with them,
        # or the dock keeps its first width and clips the controls sideways.
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)


def scrolling_body(dock: QWidget) -> QWidget:
    """The widget a dock's controls go into, inside a scroll area that fills the dock: a
    tall dock scrolls instead of growing napari's window, so any two docks fit a 1000 px
    screen with *Start* and *Synthesize* in reach."""
    from qtpy.QtCore import Qt

    area = _DockScroll(dock)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    body = QWidget()
    area.setWidget(body)
    outer = QVBoxLayout(dock)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(area)
    return body


class LayerList(QListWidget):
    """Multi-select list of layers of some kinds (``"image"``, ``"labels"``)."""

    def __init__(self, kinds: tuple[str, ...], rows: int = 3, parent=None) -> None:
        super().__init__(parent)
        self.kinds = kinds
        self.setSelectionMode(QAbstractItemView.SelectionMode.MultiSelection)
        self.setFixedHeight(8 + 18 * rows)

    def refresh(self, viewer) -> None:
        chosen = set(self.selected())
        self.clear()
        for layer in viewer.layers:
            if layer_kind(layer) in self.kinds:
                self.addItem(layer.name)
                self.item(self.count() - 1).setSelected(layer.name in chosen)

    def selected(self) -> list[str]:
        return [self.item(i).text() for i in range(self.count()) if self.item(i).isSelected()]

    def select(self, names: list[str]) -> None:
        for i in range(self.count()):
            self.item(i).setSelected(self.item(i).text() in names)


class LayerCombo(QComboBox):
    """Single layer picker with an optional "none" entry (returned as None)."""

    def __init__(self, kinds: tuple[str, ...], none: str | None = None, parent=None) -> None:
        super().__init__(parent)
        self.kinds, self.none = kinds, none

    def refresh(self, viewer) -> None:
        current = self.currentText()
        self.clear()
        if self.none:
            self.addItem(self.none)
        self.addItems([ly.name for ly in viewer.layers if layer_kind(ly) in self.kinds])
        index = self.findText(current)
        self.setCurrentIndex(max(index, 0))

    def layer_name(self) -> str | None:
        text = self.currentText()
        return None if not text or text == self.none else text

    def set_layer(self, name: str | None) -> None:
        self.setCurrentIndex(max(self.findText(name or self.none or ""), 0))


class PathPicker(QWidget):
    """Line edit plus a browse button; ``mode`` is ``"dir"``, ``"file"``, ``"file_or_dir"``
    or ``"save"``."""

    def __init__(self, mode: str = "dir", placeholder: str = "", file_filter: str = "",
                 parent=None) -> None:
        super().__init__(parent)
        self.mode, self.filter = mode, file_filter
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        button = QToolButton()
        button.setText("...")
        if mode == "file_or_dir":
            menu = QMenu(button)
            menu.addAction("Choose folder...", lambda: self._browse("dir"))
            menu.addAction("Choose file...", lambda: self._browse("file"))
            button.setMenu(menu)
            button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        else:
            button.clicked.connect(lambda: self._browse(mode))
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.edit)
        layout.addWidget(button)

    def _browse(self, mode: str) -> None:
        start = self.path()
        if mode == "dir":
            path = QFileDialog.getExistingDirectory(self, "Choose folder", start)
        elif mode == "save":
            path = QFileDialog.getSaveFileName(self, "Save as", start, self.filter)[0]
        else:
            path = QFileDialog.getOpenFileName(self, "Choose file", start, self.filter)[0]
        if path:
            self.set_path(path)

    def path(self) -> str:
        return self.edit.text().strip()

    def set_path(self, path: str | None) -> None:
        self.edit.setText(str(path or ""))
        self.edit.editingFinished.emit()


def combo(items, on_change=None) -> QComboBox:
    box = QComboBox()
    box.addItems(list(items))
    if on_change is not None:
        box.currentTextChanged.connect(on_change)
    return box


def spin(lo: int, hi: int, value: int, step: int = 1) -> QSpinBox:
    box = QSpinBox()
    box.setRange(lo, hi)
    box.setValue(value)
    box.setSingleStep(step)
    return box


def lr_spin(value: float) -> QDoubleSpinBox:
    """A learning-rate field (1e-6 .. 0.1)."""
    box = QDoubleSpinBox()
    box.setDecimals(6)
    box.setRange(1e-6, 0.1)
    box.setSingleStep(1e-5)
    box.setValue(value)
    return box


def button_row(*buttons) -> "QHBoxLayout":
    """A horizontal row of buttons."""
    row = QHBoxLayout()
    for button in buttons:
        row.addWidget(button)
    return row


def results_table(headers: list[str], stretch: int, height: int):
    """A read-only table: the first ``stretch`` columns share the width, the rest fit
    their contents; no row numbers; fixed height so the dock does not jump."""
    from qtpy.QtWidgets import QHeaderView, QTableWidget

    table = QTableWidget(0, len(headers))
    table.setHorizontalHeaderLabels(headers)
    header = table.horizontalHeader()
    for column in range(len(headers)):
        mode = QHeaderView.ResizeMode.Stretch if column < stretch else \
            QHeaderView.ResizeMode.ResizeToContents
        header.setSectionResizeMode(column, mode)
    table.verticalHeader().setVisible(False)
    table.setFixedHeight(height)
    return table
