"""The reader's side of a Reader Study: its own napari window with the trial layers and a
panel of answer buttons, driven by the keyboard.

The user's viewer is never touched: its layers stay where they are, and the study window
holds only the trial layers ("Trial 3/20", or "A" and "B" side by side), whose data is
swapped in place from one trial to the next (adding and removing layers costs napari a
garbage collection each, 0.7-1.2 s per answer). Every case arrives on one grid with one
window (:meth:`napari_medgan.study.ReaderStudy.prepare`), so nothing here depends on where
a case came from.
"""

from __future__ import annotations

import inspect

from qtpy.QtCore import QEvent, QObject, Qt, Signal
from qtpy.QtWidgets import QButtonGroup, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

#: Answer buttons and their keys, per mode.
BUTTONS = {"single": ("Real", "Synthetic"), "2afc": ("A is synthetic", "B is synthetic")}
KEYS = {"single": ("R", "S"), "2afc": ("A", "B")}
CONFIDENCE = {1: "guess", 2: "", 3: "", 4: "", 5: "sure"}
TITLE = "napari-medgan reader study"


class ReaderPanel(QWidget):
    """Trial number, answer buttons (``R``/``S`` or ``A``/``B``), confidence 1-5 (keys
    ``1``-``5``) and *Stop and save*; emits ``answered(choice_index)`` and ``stop``."""

    answered = Signal(int)
    stop = Signal()

    def __init__(self, mode: str, parent=None) -> None:
        super().__init__(parent)
        self.mode = mode
        self.trial_label = QLabel("")
        self.trial_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.answer_btns = tuple(QPushButton(f"{text}   [{key}]")
                                 for text, key in zip(BUTTONS[mode], KEYS[mode]))
        self.confidence_btns = QButtonGroup(self)
        conf_row = QHBoxLayout()
        for value, word in CONFIDENCE.items():
            button = QPushButton(f"{value} {word}".strip())
            button.setCheckable(True)
            button.setToolTip(f"confidence {value} (key {value}): 1 = guess, 5 = sure")
            self.confidence_btns.addButton(button, value)
            conf_row.addWidget(button)
        self.stop_btn = QPushButton("Stop and save")
        layout = QVBoxLayout(self)
        layout.addWidget(self.trial_label)
        layout.addWidget(QLabel("Confidence (keys 1-5), then your answer:"))
        layout.addLayout(conf_row)
        answers = QHBoxLayout()
        for i, button in enumerate(self.answer_btns):
            button.clicked.connect(lambda _=False, i=i: self.answered.emit(i))
            answers.addWidget(button)
        layout.addLayout(answers)
        layout.addWidget(self.stop_btn)
        layout.addStretch(1)
        self.stop_btn.clicked.connect(self.stop.emit)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.set_confidence(3)

    def confidence(self) -> int:
        return self.confidence_btns.checkedId()

    def set_confidence(self, value: int) -> None:
        self.confidence_btns.button(int(value)).setChecked(True)

    def press(self, key: str) -> bool:
        """Act on a key (``"r"``, ``"S"``, ``"3"``...); False when it means nothing here."""
        key = key.upper()
        if key in KEYS[self.mode]:
            self.answered.emit(KEYS[self.mode].index(key))
        elif key in ("1", "2", "3", "4", "5"):
            self.set_confidence(int(key))
        else:
            return False
        return True

    def keyPressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not (event.text() and self.press(event.text())):
            super().keyPressEvent(event)


class _CloseWatcher(QObject):
    """Calls ``callback`` when the window it watches is closed by the reader."""

    def __init__(self, callback) -> None:
        super().__init__()
        self.callback = callback

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Close and self.callback is not None:
            callback, self.callback = self.callback, None
            callback()
        return False


class StudyWindow:
    """A napari viewer of its own showing one trial at a time, with a :class:`ReaderPanel`.

    ``make_viewer`` builds the viewer (``napari.Viewer``; tests pass their fixture);
    ``on_close`` is called when the reader closes the window (not on :meth:`close`).
    """

    def __init__(self, make_viewer, mode: str, window: tuple[float, float],
                 show: bool = True, on_close=None) -> None:
        self.viewer = make_viewer(title=TITLE, show=show)
        self._watcher = _CloseWatcher(on_close)
        qt_window = getattr(self.viewer.window, "_qt_window", None)
        if qt_window is not None:
            qt_window.installEventFilter(self._watcher)
        self.mode, self.window = mode, tuple(window)
        self.panel = ReaderPanel(mode)
        self.viewer.window.add_dock_widget(self.panel, area="right", name="Reader")
        for key in (*KEYS[mode], "1", "2", "3", "4", "5"):  # also with the canvas in focus
            self.viewer.bind_key(key, lambda _viewer, key=key: self.panel.press(key),
                                 overwrite=True)
        self.layers: list = []

    def show(self, view) -> None:
        """Put a :class:`~napari_medgan.study.TrialView` on screen (layers updated in place)."""
        pairs = list(zip(view.layer_names, view.volumes))
        if not self.layers:
            self._add_layers(pairs)
        else:
            for layer, (name, volume) in zip(self.layers, self._order(pairs)):
                layer.data = volume.array
                layer.name = name
                layer.contrast_limits = self.window
        dims = self.viewer.dims
        dims.current_step = tuple(n // 2 for n in view.volumes[0].shape)  # same slice each trial
        self.panel.trial_label.setText(view.title + ("" if view.mode == "single"
                                                     else ": A on the left, B on the right"))
        self.panel.set_confidence(3)

    def _order(self, pairs: list) -> list:
        # napari >= 0.6 fills the grid from the first layer of the list (hidden layers
        # skipped); older versions from the top one. "A" must land in the top-left cell.
        if "layers" not in inspect.signature(self.grid().position).parameters:
            return list(reversed(pairs))
        return pairs

    def _add_layers(self, pairs: list) -> None:
        for name, volume in self._order(pairs):  # no metadata: not even the common geometry
            self.layers.append(self.viewer.add_image(
                volume.array, name=name, scale=volume.napari_scale(), units=("mm",) * 3,
                colormap="gray", contrast_limits=self.window, blending="translucent"))
        if self.mode == "2afc":
            grid = self.grid()
            grid.shape, grid.enabled = (1, 2), True
        self.viewer.reset_view()

    def grid(self):
        canvas = getattr(self.viewer, "canvas", None)
        return canvas.grid if canvas is not None and hasattr(canvas, "grid") else \
            self.viewer.grid

    def close(self) -> None:
        self._watcher.callback = None
        self.layers = []
        self.viewer.close()
