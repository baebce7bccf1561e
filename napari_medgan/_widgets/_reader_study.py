"""The "Reader Study" widget: a blinded visual Turing test on real vs synthetic volumes.

The study itself (shuffling, truth, statistics, CSV) lives in :mod:`napari_medgan.study`;
this widget only shows each trial and records the answers. While a study runs, every
other layer is set aside (taken out of the layer list, so no name gives a hint, and put
back at the end), trial layers are named "Trial 3/20" (single) or "A"/"B" (2afc,
side by side in grid mode) and share one grey window pooled over all study volumes.
"""

from __future__ import annotations

import inspect
import re
import time
from pathlib import Path

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medgan._widgets._common import (
    PathPicker,
    add_volume_layer,
    layer_kind,
    layer_to_volume,
    report_error,
    scrolling_body,
)
from napari_medgan.study import (
    MODES,
    geometry_cues,
    list_study_files,
    make_study,
    pooled_contrast,
)

SOURCES = ("folders", "viewer layers")
BUTTONS = {"single": ("Real", "Synthetic"), "2afc": ("A is synthetic", "B is synthetic")}


def is_synthetic_layer(layer) -> bool:
    """Synthetic by name (``synthetic...``) or by ``metadata["medgan_synthetic"]``."""
    return (layer.name.lower().startswith("synthetic")
            or bool(layer.metadata.get("medgan_synthetic", False)))


class ReaderStudyWidget(QWidget):
    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.study = None
        self.csv_path: Path | None = None
        self._layers: list = []
        self._set_aside: list = []  # (index, layer) of the user's layers during a study
        self._grid_state: tuple | None = None
        self._limits = (0.0, 1.0)
        self._shown_at = 0.0
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.real_dir, self.synthetic_dir = PathPicker("dir", "real volumes"), PathPicker(
            "dir", "synthetic volumes")
        self.reader = QLineEdit()
        self.reader.setPlaceholderText("anonymous")
        self.mode = QComboBox()
        self.mode.addItems(MODES)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.output = PathPicker("save", "~/medgan_reader_study_<reader>_<time>.csv",
                                 "CSV (*.csv)")
        self.start_btn, self.stop_btn = QPushButton("Start"), QPushButton("Stop and save")
        self.answer_btns = (QPushButton(BUTTONS["single"][0]), QPushButton(BUTTONS["single"][1]))
        self.confidence = QSlider(Qt.Orientation.Horizontal)
        self.confidence.setRange(1, 5)
        self.confidence.setValue(3)
        self.confidence.setTickPosition(QSlider.TickPosition.TicksBelow)
        self.confidence_value = QLabel("3")
        self.trial_label, self.result = QLabel("No study running."), QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        form = QFormLayout()
        for label, w in (("Source", self.source), ("Real folder", self.real_dir),
                         ("Synthetic folder", self.synthetic_dir), ("Reader", self.reader),
                         ("Mode", self.mode), ("Seed", self.seed), ("Save CSV to", self.output)):
            form.addRow(label, w)
        answers, conf = QHBoxLayout(), QHBoxLayout()
        for button in self.answer_btns:
            answers.addWidget(button)
        conf.addWidget(QLabel("Confidence 1-5"))
        conf.addWidget(self.confidence)
        conf.addWidget(self.confidence_value)
        layout = QVBoxLayout(scrolling_body(self))
        layout.addLayout(form)
        layout.addWidget(self.start_btn)
        for item in (self.trial_label, answers, conf, self.stop_btn, self.result):
            (layout.addLayout if isinstance(item, QHBoxLayout) else layout.addWidget)(item)
        layout.addStretch(1)

        self.source.currentTextChanged.connect(self._on_source_changed)
        self.start_btn.clicked.connect(self._on_start)
        self.stop_btn.clicked.connect(self._finish)
        self.confidence.valueChanged.connect(lambda v: self.confidence_value.setText(str(v)))
        for i, button in enumerate(self.answer_btns):
            button.clicked.connect(lambda _=False, i=i: self._on_answer(self.study.choices[i]))
        self._on_source_changed(self.source.currentText())
        self._set_running(False)

    # ------------------------------------------------------------------ handlers
    def _on_source_changed(self, source: str) -> None:
        for picker in (self.real_dir, self.synthetic_dir):
            picker.setEnabled(source == "folders")

    def _on_start(self) -> None:
        try:
            real, synthetic = self._collect()
            reader = self.reader.text().strip() or "anonymous"
            study = make_study(real, synthetic, seed=self.seed.value(),
                               mode=self.mode.currentText(), reader=reader)
            self._limits = pooled_contrast(study)
            notes = study.notes + geometry_cues(study)
            self.csv_path = self._csv_path(reader)
        except Exception as exc:  # noqa: BLE001 - report_error keeps tracebacks for bugs
            report_error("Reader study", exc)
            return
        self.study = study
        for button, text in zip(self.answer_btns, BUTTONS[study.mode]):
            button.setText(text)
        self._set_aside = list(enumerate(self.viewer.layers))
        for _, layer in reversed(self._set_aside):
            self.viewer.layers.remove(layer)
        grid = self._grid()
        self._grid_state = (grid.enabled, tuple(grid.shape))
        if study.mode == "2afc":
            grid.shape, grid.enabled = (1, 2), True
        self.result.setText("\n".join(notes))
        self._set_running(True)
        self._show_trial()

    def _on_answer(self, answer: str) -> None:
        if self.study is None or self.study.done:
            return
        seconds = time.monotonic() - self._shown_at
        self.study.record(answer, self.confidence.value(), seconds)
        if self.study.done:
            self._finish()
        else:
            self._show_trial()

    # ------------------------------------------------------------------ helpers
    def _collect(self) -> tuple[list, list]:
        if self.source.currentText() == "folders":
            dirs = [Path(p.path()).expanduser() for p in (self.real_dir, self.synthetic_dir)]
            if not all(p.name for p in dirs):
                raise ValueError("choose a folder of real and a folder of synthetic volumes")
            return list_study_files(dirs[0]), list_study_files(dirs[1])
        layers = [ly for ly in self.viewer.layers if layer_kind(ly) == "image"]
        real = [layer_to_volume(ly) for ly in layers if not is_synthetic_layer(ly)]
        fake = [layer_to_volume(ly) for ly in layers if is_synthetic_layer(ly)]
        return real, fake

    def _csv_path(self, reader: str) -> Path:
        text = self.output.path()
        safe = re.sub(r"[^A-Za-z0-9_-]+", "_", reader).strip("_") or "anonymous"
        default = f"medgan_reader_study_{safe}_{time.strftime('%Y%m%d-%H%M%S')}.csv"
        if not text:
            return Path.home() / default
        path = Path(text).expanduser()
        if path.is_dir():
            return path / default
        return path if path.suffix.lower() == ".csv" else path.with_name(path.name + ".csv")

    def _grid(self):
        canvas = getattr(self.viewer, "canvas", None)
        return canvas.grid if canvas is not None and hasattr(canvas, "grid") else self.viewer.grid

    def _show_trial(self) -> None:
        self._remove_trial_layers()
        view = self.study.current()
        order = list(zip(view.layer_names, view.volumes))
        # napari >= 0.6 fills the grid from the first layer of the list (hidden layers skipped);
        # older versions from the top one. "A" must land in the top-left cell.
        if "layers" not in inspect.signature(self._grid().position).parameters:
            order.reverse()
        for name, volume in order:
            self._layers.append(add_volume_layer(
                self.viewer, volume, name, colormap="gray", contrast_limits=self._limits,
                blending="translucent"))
        self.viewer.reset_view()
        self.trial_label.setText(view.title + ("" if view.mode == "single"
                                               else ": A on the left, B on the right"))
        self.confidence.setValue(3)
        self._shown_at = time.monotonic()

    def _remove_trial_layers(self) -> None:
        for layer in self._layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._layers = []

    def _finish(self) -> None:
        if self.study is None:
            return
        self._remove_trial_layers()
        for index, layer in self._set_aside:
            if layer not in self.viewer.layers:
                self.viewer.layers.insert(min(index, len(self.viewer.layers)), layer)
        self._set_aside = []
        if self._grid_state is not None:
            grid = self._grid()
            grid.enabled, grid.shape = self._grid_state[0], self._grid_state[1]
        self._set_running(False)
        res = self.study.results()
        text = res["interpretation"]
        try:
            text += f"\nSaved: {self.study.save_csv(self.csv_path)}"
        except OSError as exc:
            report_error(f"Reader study: cannot save {self.csv_path}", exc)
        self.result.setText(text)
        self.trial_label.setText(f"Done: {res['n']} of {len(self.study.trials)} trials answered.")

    def _set_running(self, running: bool) -> None:
        for w in (self.source, self.real_dir, self.synthetic_dir, self.reader, self.mode,
                  self.seed, self.output, self.start_btn):
            w.setEnabled(not running)
        if not running:
            self._on_source_changed(self.source.currentText())
        for w in (*self.answer_btns, self.confidence, self.stop_btn):
            w.setEnabled(running)
