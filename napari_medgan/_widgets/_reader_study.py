"""The "Reader Study" dock: set up a blinded visual Turing test, run it in a window of its
own, pool several readers' results.

This dock is for the person who runs the study. It lists the cases -- the viewer's image
layers with their provenance (:mod:`napari_medgan.provenance`, never their names), or the
files of two folders -- with an editable "use as" column, so the exact real and synthetic
sets are seen before anything starts. *Start* brings every case to one grid and window or
refuses with the reason, here; the reader then answers in a separate napari window
(:mod:`._reader_panel`) that shows nothing else. The study, its statistics, CSV, JSON and
HTML report live in :mod:`napari_medgan.study`.
"""

from __future__ import annotations

import re
import time
from functools import partial
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_medgan._widgets._common import (
    PathPicker,
    button_row,
    layer_kind,
    layer_to_volume,
    report_error,
    results_table,
    scrolling_body,
)
from napari_medgan._widgets._preview import PLACEHOLDER
from napari_medgan._widgets._reader_panel import StudyWindow
from napari_medgan.provenance import (
    PROVENANCE_KEY,
    describe_provenance,
    layer_class,
    layer_provenance,
    make_provenance,
)
from napari_medgan.study import (
    MODES,
    draw_seed,
    list_study_files,
    make_study,
    pool_csvs,
    report_path,
    resume_study,
)

SOURCES = ("folders", "viewer layers")
USES = ("real", "synthetic", "leave out")
SEED_TIP = "Trial order and A/B placement; 'new for each reader' draws a fresh seed at Start " \
           "(recorded in the CSV and JSON)"


def study_layers(viewer) -> list:
    """The viewer's 3D greyscale image layers (no placeholders): the candidate cases."""
    return [ly for ly in viewer.layers
            if layer_kind(ly) == "image" and not ly.metadata.get(PLACEHOLDER)
            and not getattr(ly, "rgb", False) and not getattr(ly, "multiscale", False)
            and np.ndim(ly.data) == 3]


class ReaderStudyWidget(QWidget):
    #: Show the reader's window (tests turn it off); ``make_viewer`` builds it.
    show_window = True
    make_viewer = None

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.study = None
        self.window: StudyWindow | None = None
        self.csv_path: Path | None = None
        self.last_study = None  # the last study finished, for a look at its figures
        self.pooled: dict | None = None  # the last pooled result
        self._shown_at = 0.0
        self._rows: list[tuple[str, object]] = []  # (key, layer or Path) per table row
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.real_dir, self.synthetic_dir = PathPicker("dir", "real volumes"), PathPicker(
            "dir", "synthetic volumes")
        self.cases = results_table(["case", "provenance", "use as"], stretch=2, height=170)
        self.refresh_btn = QPushButton("Refresh list")
        self.reader = QLineEdit()
        self.reader.setPlaceholderText("anonymous")
        self.mode = QComboBox()
        self.mode.addItems(MODES)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)
        self.seed.setSpecialValueText("new for each reader")
        self.seed.setValue(-1)
        self.seed.setToolTip(SEED_TIP)
        self.output = PathPicker("save", "~/medgan_reader_study_<reader>_<time>.csv",
                                 "CSV (*.csv)")
        self.start_btn = QPushButton("Start")
        self.resume_from = PathPicker("file", "a stopped study's CSV", "CSV (*.csv)")
        self.resume_btn = QPushButton("Resume")
        self.pool_btn = QPushButton("Pool readers' CSVs...")
        self.pool_btn.setToolTip("Per-reader and pooled accuracy, ROC AUC and kappa of several "
                                 "readers' CSVs, with an HTML report beside the first one")
        self.result = QLabel("")
        self.result.setWordWrap(True)
        self.result.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        form = QFormLayout()
        for label, w in (("Source", self.source), ("Real folder", self.real_dir),
                         ("Synthetic folder", self.synthetic_dir)):
            form.addRow(label, w)
        form2 = QFormLayout()
        for label, w in (("Reader", self.reader), ("Mode", self.mode), ("Seed", self.seed),
                         ("Save CSV to", self.output)):
            form2.addRow(label, w)
        layout = QVBoxLayout(scrolling_body(self))
        layout.addLayout(form)
        layout.addWidget(QLabel("Cases (check the sets before you start):"))
        layout.addWidget(self.cases)
        layout.addWidget(self.refresh_btn)
        layout.addLayout(form2)
        layout.addWidget(self.start_btn)
        resume = QFormLayout()
        resume.addRow("Resume from", self.resume_from)
        layout.addLayout(resume)
        layout.addLayout(button_row(self.resume_btn, self.pool_btn))
        layout.addWidget(self.result)
        layout.addStretch(1)

        self.source.currentTextChanged.connect(self._on_source_changed)
        for picker in (self.real_dir, self.synthetic_dir):
            picker.edit.editingFinished.connect(self.refresh_cases)
        self.refresh_btn.clicked.connect(self.refresh_cases)
        self.start_btn.clicked.connect(lambda: self._on_start())
        self.resume_btn.clicked.connect(lambda: self._on_resume())
        self.pool_btn.clicked.connect(lambda: self._on_pool())
        events = self.viewer.layers.events
        for emitter in (events.inserted, events.removed):
            emitter.connect(self._on_layers_changed)
            self.destroyed.connect(partial(_disconnect, emitter, self._on_layers_changed))
        self._on_source_changed(self.source.currentText())

    # ------------------------------------------------------------------ the case list
    def _on_source_changed(self, source: str) -> None:
        for picker in (self.real_dir, self.synthetic_dir):
            picker.setEnabled(source == "folders" and self.study is None)
        self.refresh_cases()

    def _on_layers_changed(self, _event=None) -> None:
        if self.source.currentText() == "viewer layers" and self.study is None:
            self.refresh_cases()

    def refresh_cases(self) -> None:
        """List the candidate cases with their provenance; keep choices already made."""
        chosen = {name: use for name, use in self.case_uses()}
        rows: list[tuple[str, object, str, str]] = []  # name, item, provenance, default use
        if self.source.currentText() == "viewer layers":
            for layer in study_layers(self.viewer):
                kind = layer_class(layer)
                rows.append((layer.name, layer, describe_provenance(layer_provenance(layer)),
                             kind if kind in ("real", "synthetic") else "leave out"))
        else:
            for picker, truth in ((self.real_dir, "real"), (self.synthetic_dir, "synthetic")):
                folder = Path(picker.path()).expanduser()
                if picker.path() and folder.is_dir():
                    rows += [(p.name, p, f"file in the {truth} folder", truth)
                             for p in list_study_files(folder)]
        # a row's key: the layer name, or the file's path (two folders may share file names)
        self._rows = [(str(item) if isinstance(item, Path) else name, item)
                      for name, item, _, _ in rows]
        self.cases.setRowCount(len(rows))
        for i, ((key, _item), (name, _, provenance, use)) in enumerate(zip(self._rows, rows)):
            self.cases.setItem(i, 0, QTableWidgetItem(name))
            self.cases.item(i, 0).setToolTip(key)
            self.cases.setItem(i, 1, QTableWidgetItem(provenance))
            self.cases.item(i, 1).setToolTip(provenance)
            box = QComboBox()
            box.addItems(USES)
            box.setCurrentText(chosen.get(key, use))
            self.cases.setCellWidget(i, 2, box)

    def case_uses(self) -> list[tuple[str, str]]:
        """``(case, "real" | "synthetic" | "leave out")`` per row of the case list; the case
        is a layer name, or a file path."""
        return [(self._rows[i][0], self.cases.cellWidget(i, 2).currentText())
                for i in range(min(self.cases.rowCount(), len(self._rows)))]

    def set_use(self, key: str, use: str) -> None:
        """Choose how case ``key`` (a layer name or file path) enters the study (what the
        "use as" column does)."""
        for i, (row_key, _) in enumerate(self._rows):
            if row_key == str(key):
                self.cases.cellWidget(i, 2).setCurrentText(use)
                return
        raise ValueError(f"case {key!r} is not in the list")

    def _collect(self) -> tuple[list, list]:
        if self.source.currentText() == "folders":
            dirs = [p.path() for p in (self.real_dir, self.synthetic_dir)]
            if not all(dirs):
                raise ValueError("choose a folder of real and a folder of synthetic volumes")
            self.refresh_cases()
        sets: dict[str, list] = {"real": [], "synthetic": []}
        for (_, item), (_, use) in zip(self._rows, self.case_uses()):
            if use == "leave out":
                continue
            if isinstance(item, Path):
                sets[use].append(item)
                continue
            if layer_class(item) == "unknown":  # the user decided: other docks see it too
                item.metadata = {**item.metadata, PROVENANCE_KEY: make_provenance(
                    use, source="assigned in the Reader Study", assigned="user")}
            sets[use].append(layer_to_volume(item))  # named after the layer: the case id
        return sets["real"], sets["synthetic"]

    # ------------------------------------------------------------------ handlers
    def _on_start(self) -> None:
        try:
            real, synthetic = self._collect()
            reader = self.reader.text().strip() or "anonymous"
            seed = self.seed.value() if self.seed.value() >= 0 else draw_seed()
            study = make_study(real, synthetic, seed=seed, mode=self.mode.currentText(),
                               reader=reader)
            notes = study.notes + study.prepare()
            self.csv_path = self._csv_path(reader)
        except Exception as exc:  # noqa: BLE001 - report_error keeps tracebacks for bugs
            self.result.setText(report_error("Reader study", exc))
            return
        self._begin(study, notes)

    def _on_resume(self, path: str | None = None) -> None:
        """Continue the study saved in ``path`` (the "Resume from" field when None) with the
        cases of the list, from its first unanswered trial, saving to the same CSV."""
        try:
            path = path or self.resume_from.path()
            if not path:
                raise ValueError("choose the CSV of the study to resume")
            real, synthetic = self._collect()
            study = resume_study(Path(path).expanduser(), real, synthetic)
            if study.done:
                raise ValueError(f"{path}: every trial is answered already")
            notes = study.notes + study.prepare()
        except Exception as exc:  # noqa: BLE001 - report_error keeps tracebacks for bugs
            self.result.setText(report_error("Reader study", exc))
            return
        self.csv_path = Path(path).expanduser()
        self._begin(study, notes)

    def _begin(self, study, notes: list[str]) -> None:
        import napari

        self.study = study
        self._set_running(True)
        self.result.setText("\n".join([f"Running: reader {study.reader}, seed {study.seed}, "
                                       f"{len(study.trials)} trials.", *notes]))
        self.window = StudyWindow(self.make_viewer or napari.Viewer, study.mode, study.window,
                                  show=self.show_window, on_close=self._on_window_closed)
        self.window.panel.answered.connect(self._on_answer)
        self.window.panel.stop.connect(self._on_stop)
        self._show_trial()

    def _on_answer(self, index: int) -> None:
        if self.study is None or self.study.done:
            return
        seconds = time.monotonic() - self._shown_at
        self.study.record(self.study.choices[index], self.window.panel.confidence(), seconds)
        if self.study.done:
            self._finish()
        else:
            self._show_trial()

    def _on_stop(self) -> None:
        if self.study is not None and self._ask_stop():
            self._finish()

    def _ask_stop(self) -> bool:
        answered, total = self.study.position, len(self.study.trials)
        reply = QMessageBox.question(
            self.window.panel if self.window else self, "Stop the reader study?",
            f"Stop after {answered} of {total} trials and save? The study can be resumed "
            "later from its CSV.")
        return reply == QMessageBox.StandardButton.Yes

    def _on_window_closed(self) -> None:
        """The reader closed the study window: save what was answered."""
        self.window = None
        self._finish()

    def _on_pool(self, paths: list[str] | None = None) -> None:
        """Pool several readers' CSVs: figures here, ``reader_study_pooled.json`` and
        ``reader_study_pooled_report.html`` beside the first CSV."""
        import json

        from napari_medgan.io import atomic_write_text

        if paths is None:
            paths = QFileDialog.getOpenFileNames(self, "Readers' CSVs", "", "CSV (*.csv)")[0]
            if not paths:
                return
        try:
            folder = Path(paths[0]).parent if paths else Path()
            report = folder / "reader_study_pooled_report.html"
            result = pool_csvs(paths, report=report)
            atomic_write_text(folder / "reader_study_pooled.json",
                              json.dumps({**result, "csvs": [str(p) for p in paths]},
                                         indent=2) + "\n")
        except Exception as exc:  # noqa: BLE001 - report_error keeps tracebacks for bugs
            self.result.setText(report_error("Pool readers", exc))
            return
        lines = [_reader_line(name, r) for name, r in result["readers"].items()]
        self.result.setText("\n".join([*lines, result["interpretation"], f"Report: {report}"]))
        self.pooled = result

    # ------------------------------------------------------------------ helpers
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

    def _show_trial(self) -> None:
        self.window.show(self.study.current())
        self._shown_at = time.monotonic()

    def _finish(self) -> None:
        if self.study is None:
            return
        study, self.study = self.study, None
        if self.window is not None:
            window, self.window = self.window, None
            window.close()
        self._set_running(False)
        res = study.results()
        text = f"Reader {study.reader}, seed {study.seed}: " + res["interpretation"]
        try:
            text += f"\nSaved: {study.save_csv(self.csv_path, report=True)} " \
                    f"(report {report_path(self.csv_path).name})"
        except OSError as exc:
            report_error(f"Reader study: cannot save {self.csv_path}", exc)
        self.result.setText(text + f"\nDone: {res['n']} of {len(study.trials)} trials answered.")
        self.last_study = study

    def _set_running(self, running: bool) -> None:
        for w in (self.source, self.cases, self.refresh_btn, self.reader, self.mode, self.seed,
                  self.output, self.start_btn, self.resume_from, self.resume_btn,
                  self.pool_btn):
            w.setEnabled(not running)
        if not running:
            self._on_source_changed(self.source.currentText())
        else:
            self.real_dir.setEnabled(False)
            self.synthetic_dir.setEnabled(False)


def _reader_line(name: str, r: dict) -> str:
    if not r["n"]:
        return f"{name}: no answers"
    lo, hi = r["ci95"]
    auc = r["roc"]["auc"]
    return (f"{name}: {100 * r['accuracy']:.1f}% ({r['correct']}/{r['n']}, 95% CI "
            f"{100 * lo:.0f}-{100 * hi:.0f}%)" + (f", AUC {auc:.2f}" if auc is not None else ""))


def _disconnect(emitter, callback, *_) -> None:
    try:
        emitter.disconnect(callback)
    except (RuntimeError, ValueError, TypeError):
        pass

