"""The "Synthesize & Compare" widget: sample from a checkpoint (or run a conditional model over
a condition layer, next to the classical baseline its task replaces), show real and synthetic
volumes side by side, score them, save them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from qtpy.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_medgan._widgets._common import (
    LayerCombo,
    PathPicker,
    add_volume_layer,
    button_row,
    expected_errors,
    follow_session,
    layer_to_volume,
    one_line,
    report_error,
    results_table,
    run_in_thread,
    scrolling_body,
    session_for,
    spin,
)
from napari_medgan._widgets._grid import LayerLook, arrange_grid, grid_of
from napari_medgan._widgets._remember import remember
from napari_medgan._widgets._set_metrics import SetMetricsWidget
from napari_medgan.provenance import provenance_metadata
from napari_medgan.config import SAMPLING_HELP
from napari_medgan.tasks import TASKS

SYNTHETIC_KEY = "medgan_synthetic"
#: Field of a baseline layer's ``SYNTHETIC_KEY`` tag naming the classical method. The tag keeps
#: baselines out of the real sets (set metrics, reader study); they are never in ``synthetic``.
BASELINE_FIELD = "baseline"
MODEL_TIP = ("A run folder, a checkpoint folder, or a model bundle (a folder or .zip written "
             "by napari-medgan export-model); dropping a bundle on the viewer opens it here")
SIDE_TIP = ("The real reference top left, then the results, one per labelled grid cell, "
            "with the reference's colormap and contrast; off: the layers' order and look "
            "as they were")
SAVE_ALL_TIP = ("Write every synthetic layer (not the baselines) to one folder as NIfTI with "
                "safe file names, and synthetic.json with each file's checkpoint, step and seed")
BASELINE_TIP = "Also run the classical method this model's task replaces on the condition, " \
               "show it as a layer and score it like the model"


def is_baseline_layer(layer) -> bool:
    """True for a classical-baseline layer added by this widget (not a model sample)."""
    tag = layer.metadata.get(SYNTHETIC_KEY)
    return isinstance(tag, dict) and BASELINE_FIELD in tag


class SynthesizeWidget(QWidget):
    """Sample from a checkpoint, compare with a real volume, save the results."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer, self.session = napari_viewer, session_for(napari_viewer)
        self.loaded: tuple | None = None  # (path as typed, LoadedModel), once read
        self._loading: str | None = None  # the path being read in a thread
        # Synthesize was clicked before this path's model had loaded: which of the inputs
        # (Condition, Image from labels) the model reads is known once it has
        self._synthesize_when_loaded: str | None = None
        self.synthetic: list[str] = []  # layer names from the last synthesis (model output)
        self.baselines: list[str] = []  # classical-baseline layer names, same synthesis
        self._saved: LayerLook | None = None  # the layers' look before "Side by side"
        self.checkpoint = PathPicker("file_or_dir", "run folder, checkpoint or model bundle",
                                     "Checkpoints and model bundles (*.safetensors *.json *.zip)")
        self.checkpoint.setToolTip(MODEL_TIP)
        self.checkpoint.edit.editingFinished.connect(self._on_checkpoint_changed)
        from napari_medgan.pretrained import PRETRAINED_HEAD

        if PRETRAINED_HEAD.is_file():  # the shipped model: synthesize before training anything
            self.checkpoint.edit.setText(str(PRETRAINED_HEAD))
        self.model_info = QLabel("no model loaded")
        self.count, self.seed = spin(1, 64, 2), spin(0, 2**31 - 1, 0)
        self.reference = LayerCombo(("image",), none="(checkpoint reference)")
        self.condition = LayerCombo(("labels", "image"))
        self.mask = LayerCombo(("labels",), none="(no mask)")
        # a two-stage pair model: its image stage draws the image for a label layer
        self.stage_labels = LayerCombo(("labels",), none="(draw pairs from noise)")
        self.stage_labels.setToolTip(SAMPLING_HELP["condition"].split("; ")[-1])
        self._image_stage = False  # the loaded model has one (set when it loads)
        self.show_baseline = QCheckBox("Show classical baseline")
        self.show_baseline.setChecked(True)
        self.show_baseline.setToolTip(BASELINE_TIP)
        self.flip_ensemble = QCheckBox("Average over the 8 flips")
        self.flip_ensemble.setChecked(True)
        for w, key in ((self.flip_ensemble, "flip_ensemble"), (self.count, "n"),
                       (self.seed, "seed"), (self.condition, "condition"), (self.mask, "mask")):
            w.setToolTip(SAMPLING_HELP[key])  # napari-medgan generate's --help, declared once
        self.reference.setToolTip(f"{SAMPLING_HELP['reference']}; also what Side by side and "
                                  "the PSNR / SSIM / MAE table compare against")
        self.form = form = QFormLayout()
        for label, w in (("Model", self.checkpoint), ("", self.model_info),
                         ("Samples", self.count), ("Seed", self.seed),
                         ("Real reference", self.reference), ("Condition", self.condition),
                         ("Image from labels", self.stage_labels),
                         ("Inpaint mask", self.mask), ("", self.flip_ensemble),
                         ("", self.show_baseline)):
            form.addRow(label, w)
        self.synth_btn, self.side_btn = QPushButton("Synthesize"), QPushButton("Side by side")
        self.save_btn = QPushButton("Save selected as NIfTI")
        self.save_all_btn = QPushButton("Save all synthetic...")
        self.synth_btn.setToolTip("Draw the samples (or run the model over the condition) and "
                                  "add them as layers in the reference's physical space")
        self.save_btn.setToolTip("Write the selected layer, with its geometry, as NIfTI")
        self.side_btn.setCheckable(True)
        self.synth_btn.clicked.connect(self._on_synthesize)
        self.side_btn.toggled.connect(self._on_side_by_side)
        self.save_btn.clicked.connect(lambda: self._on_save())
        self.save_all_btn.clicked.connect(lambda: self._on_save_all())
        buttons = button_row(self.synth_btn, self.side_btn)
        save_buttons = button_row(self.save_btn, self.save_all_btn)
        self.against = QLabel("")  # the real layer the table's figures are against
        self.against.setWordWrap(True)
        self.table = results_table(["method", "PSNR (dB)", "SSIM", "MAE"], stretch=1,
                                   height=150)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.set_metrics = SetMetricsWidget(self)  # set metrics, nearest real, nnU-Net export
        layout = QVBoxLayout(scrolling_body(self))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addLayout(save_buttons)
        layout.addWidget(self.against)
        layout.addWidget(self.table)
        layout.addWidget(self.set_metrics)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.reference.currentIndexChanged.connect(self._update_buttons)
        remember(self, "Synthesize & Compare", {"samples": self.count, "seed": self.seed,
                                                "show_baseline": self.show_baseline,
                                                "flip_ensemble": self.flip_ensemble})
        self.reset_choices()
        follow_session(self, self._on_session_changed)
        self._on_session_changed("run")

    def reset_choices(self, *_) -> None:
        """napari calls this when layers are added, removed or renamed."""
        for combo in (self.reference, self.condition, self.mask, self.stage_labels):
            combo.refresh(self.viewer)
        self._update_buttons()

    def _update_buttons(self, *_) -> None:
        """Buttons that cannot work now are disabled, and their tooltip says why."""
        layers = self.viewer.layers
        shown = [n for n in self.synthetic + self.baselines if n in layers]
        missing = [what for what, ok in (("choose a real reference layer",
                                          self.reference.layer_name()),
                                         ("synthesize first", shown)) if not ok]
        side_ok = self.side_btn.isChecked() or not missing  # checked: it must be able to leave
        self.side_btn.setEnabled(bool(side_ok))
        self.side_btn.setToolTip(SIDE_TIP if side_ok else
                                 f"{SIDE_TIP}. Not available: {' and '.join(missing)}")
        saveable = any(ly.metadata.get(SYNTHETIC_KEY) and not is_baseline_layer(ly)
                       for ly in layers)
        self.save_all_btn.setEnabled(saveable)
        self.save_all_btn.setToolTip(SAVE_ALL_TIP if saveable else
                                     f"{SAVE_ALL_TIP}. Not available: no synthetic layer in "
                                     "the viewer, synthesize first")

    # --------------------------------------------------------------- handlers
    def _on_session_changed(self, what: str) -> None:
        if what == "run" and self.session.checkpoint:
            self.checkpoint.set_path(self.session.checkpoint)

    def _on_checkpoint_changed(self) -> None:
        path = self.checkpoint.path()
        if path and (self.loaded is None or self.loaded[0] != path) and path != self._loading:
            self._loading = path
            run_in_thread(_load, path, returned=self._on_loaded,
                          errored=lambda exc: self._on_load_failed(path, exc))

    def _on_load_failed(self, path: str, exc: Exception) -> None:
        if self._loading == path:
            self._loading = None
        self.model_info.setText(f"cannot load: {exc}")
        if self._synthesize_when_loaded == path:
            self._synthesize_when_loaded = None
            self.status.setText(report_error("Synthesize", exc))
            self.synth_btn.setEnabled(True)

    def _on_loaded(self, result) -> None:
        from napari_medgan.baselines import BASELINES
        from napari_medgan.training.inference import image_stage

        if self._loading == result[0]:
            self._loading = None
        if result[0] != self.checkpoint.path():  # the path changed while this one loaded
            if self._synthesize_when_loaded == result[0]:
                self._synthesize_when_loaded = None
                self.status.setText("the model changed while it loaded: click Synthesize again")
                self.synth_btn.setEnabled(True)
            return
        self.loaded, loaded = result, result[1]
        m = loaded.model
        self.model_info.setText(f"{m.name}/{m.task}, step {loaded.step}, patch {m.patch_size}^3")
        self._image_stage = image_stage(loaded) is not None
        for w, used in ((self.count, not m.conditional), (self.seed, not m.conditional),
                        (self.condition, m.conditional), (self.mask, TASKS[m.task].needs_mask),
                        (self.stage_labels, self._image_stage),
                        (self.flip_ensemble, m.conditional),
                        (self.show_baseline, m.conditional)):
            w.setVisible(used)  # only the inputs this model takes
            if (label := self.form.labelForField(w)) is not None:  # none for a "" label
                label.setVisible(used)
        self.set_metrics.model_changed(m)
        names = BASELINES.get(m.task, ())
        self.show_baseline.setToolTip(
            f"{m.task} is judged against {' and '.join(names)}: add them as layers next to "
            "the model's result and score them the same way" if names else BASELINE_TIP)
        if self._synthesize_when_loaded == result[0]:
            self._synthesize_when_loaded = None
            self._on_synthesize()

    def _on_synthesize(self) -> None:
        path = self.checkpoint.path()
        try:
            if not path:
                raise ValueError("model: choose a run folder, a checkpoint or a model bundle")
            if self.loaded is None or self.loaded[0] != path:
                # the model decides which inputs count (a pair model's label layer, a
                # conditional model's condition): read them once it has loaded
                self._synthesize_when_loaded = path
                self.synth_btn.setEnabled(False)
                self.status.setText("loading the model...")
                self._on_checkpoint_changed()
                return
            condition = self.stage_labels if self._image_stage else self.condition
            names = (self.reference.layer_name(), condition.layer_name(),
                     self.mask.layer_name())
            ref, cond, mask = (layer_to_volume(self.viewer.layers[n]) if n else None
                               for n in names)
        except expected_errors() as exc:
            self.status.setText(report_error("Synthesize", exc))
            self.synth_btn.setEnabled(True)
            return
        self.synth_btn.setEnabled(False)
        self.status.setText("synthesizing...")
        worker = run_in_thread(
            _synthesize, path, self.loaded[1], self.count.value(), self.seed.value(), ref, cond,
            mask,
            self.show_baseline.isChecked(), self.flip_ensemble.isChecked(),
            returned=self._on_synthesized,
            errored=lambda exc: self.status.setText(report_error("Synthesize", exc)),
            finished=lambda: self.synth_btn.setEnabled(True), progress="Synthesizing")
        self.progress_bar = worker.pbar  # the activity dock's bar (not the worker: it holds
        # the model and volumes after it ends)

    def _on_synthesized(self, result: Synthesis) -> None:
        loaded = result.loaded
        self._on_loaded((result.path, loaded))
        self.synthetic, self.baselines = [], []
        self.set_metrics.clear()  # its figures were for the previous set
        tag = {"checkpoint": str(loaded.path), "step": loaded.step, "seed": self.seed.value()}
        for vol in result.volumes:
            name = f"{vol.source} (step {loaded.step})"
            layer = add_volume_layer(self.viewer, vol, name, metadata={
                SYNTHETIC_KEY: tag, **provenance_metadata(
                    "synthetic", model=loaded.path, step=loaded.step, seed=self.seed.value())})
            self.synthetic.append(layer.name)
        for method, vol in result.baselines.items():
            provenance = {BASELINE_FIELD: method, "condition": result.condition,
                          "checkpoint": str(loaded.path), "step": loaded.step}
            layer = add_volume_layer(self.viewer, vol,
                                     f"{result.condition} \u00b7 {method} (baseline)",
                                     metadata={SYNTHETIC_KEY: provenance,
                                               **provenance_metadata(
                                                   "derived", method=method, model=loaded.path,
                                                   step=loaded.step)})
            self.baselines.append(layer.name)
        self.table.setRowCount(len(result.rows))
        for i, (method, is_baseline, figures) in enumerate(result.rows):
            label = f"{method} (baseline)" if is_baseline else f"{method} (step {loaded.step})"
            cells = [label] + [_fmt(figures[key] if figures else math.nan, spec)
                               for key, spec in (("PSNR", ".2f"), ("SSIM", ".3f"),
                                                 ("MAE", ".4g"))]
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        where = " (inside the inpainting mask)" if result.in_mask else ""
        self.against.setText(f"against {result.reference}{where}" if result.rows else "")
        parts = [f"{len(result.volumes)} volume(s) from {loaded.path}"]
        if result.baselines:
            parts.append(f"baseline(s): {', '.join(result.baselines)}")
        self.status.setText("; ".join(parts + result.notes))
        self._update_buttons()

    def _on_side_by_side(self, on: bool = True) -> None:
        """Real reference and synthetic layers in napari's grid; off: back to one canvas."""
        if not on:
            self.leave_grid()
            return
        real = self.reference.layer_name()
        shown = [n for n in self.synthetic + self.baselines if n in self.viewer.layers]
        if real is None or not shown:
            self.status.setText(report_error("Side by side", ValueError(
                "choose a real reference layer and synthesize first")))
            self._set_checked(False)
            return
        self.show_in_grid(real, shown)

    def show_in_grid(self, real: str, shown: list[str]) -> None:
        """Layer ``real`` (top left) and ``shown`` alone in napari's grid, each cell labelled
        (:func:`._grid.arrange_grid`); :meth:`leave_grid` puts the layers back as they were.
        Also used by "Show nearest real"."""
        if self.side_btn.isChecked():
            self.leave_grid()  # restore first, so the user's own settings are what is kept
        self._saved = arrange_grid(self.viewer, real, shown)
        self._set_checked(True)
        self._update_buttons()

    def leave_grid(self) -> None:
        """One canvas again, with the layers in the order and look they had before."""
        grid_of(self.viewer).enabled = False
        self._set_checked(False)
        saved, self._saved = self._saved, None
        if saved is not None:
            saved.restore(self.viewer.layers)
        self._update_buttons()

    def _set_checked(self, on: bool) -> None:
        """Mirror the state on the button without re-entering the handler."""
        self.side_btn.blockSignals(True)
        self.side_btn.setChecked(on)
        self.side_btn.blockSignals(False)

    def _on_save(self, path: str | None = None) -> None:
        """Write the selected layer with its geometry (NIfTI, via io.save_volume)."""
        from napari_medgan.io import save_volume

        layer = self.viewer.layers.selection.active
        if layer is None:
            self.status.setText(report_error("Save", ValueError("select one layer first")))
            return
        if path is None:
            path = QFileDialog.getSaveFileName(self, "Save as NIfTI", f"{layer.name}.nii.gz",
                                               "NIfTI (*.nii.gz *.nii)")[0]
            if not path:
                return
        if not path.endswith((".nii", ".nii.gz")):
            path += ".nii.gz"
        try:
            written = save_volume(layer_to_volume(layer, copy=False), path)
        except expected_errors() as exc:
            self.status.setText(report_error("Save", exc))
            return
        self.status.setText(f"saved {layer.name} to {written}")

    def _on_save_all(self, folder: str | None = None) -> None:
        """Every synthetic layer in the viewer (model outputs, not baselines) to ``folder``
        (asked for when None), with a provenance manifest."""
        import json

        from napari_medgan.io import atomic_write_text, save_volumes

        layers = [layer for layer in self.viewer.layers
                  if layer.metadata.get(SYNTHETIC_KEY) and not is_baseline_layer(layer)]
        if not layers:
            self.status.setText(report_error("Save all synthetic", ValueError(
                "no synthetic layers in the viewer: synthesize first")))
            return
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Folder for the synthetic volumes")
            if not folder:
                return
        try:
            paths = save_volumes([(layer.name, layer_to_volume(layer, copy=False))
                                  for layer in layers], folder)
            manifest = [{"file": p.name, "layer": layer.name,
                         "provenance": layer.metadata.get(SYNTHETIC_KEY)}
                        for p, layer in zip(paths, layers)]
            atomic_write_text(Path(folder) / "synthetic.json",
                              json.dumps(manifest, indent=2, default=str))
        except expected_errors() as exc:
            self.status.setText(report_error("Save all synthetic", exc))
            return
        self.status.setText(f"saved {len(paths)} synthetic volume(s) and synthetic.json "
                            f"to {folder}")


def open_model_in_dock(viewer, path) -> SynthesizeWidget:
    """Show the Synthesize & Compare dock of ``viewer`` (added when it is not there yet) and
    start loading the model at ``path`` into it: what dropping a model bundle on the viewer
    does (:func:`napari_medgan._reader.napari_get_bundle_reader`)."""
    dock, widget = viewer.window.add_plugin_dock_widget("napari-medgan", "Synthesize & Compare")
    dock.show()
    dock.raise_()
    widget.checkpoint.set_path(str(path))
    return widget


def _load(path: str):
    from napari_medgan.training.inference import load_generator

    return path, load_generator(path)


@dataclass
class Synthesis:
    """What the worker hands the main thread."""

    path: str
    loaded: object  # LoadedModel
    volumes: list  # the model's output: images (then label maps, joint models)
    baselines: dict = field(default_factory=dict)  # baseline name -> Volume
    rows: list = field(default_factory=list)  # (method, is baseline, judge figures or None)
    notes: list = field(default_factory=list)  # one-line problems for the status line
    reference: str | None = None  # the real layer the figures are against
    condition: str | None = None  # the condition layer's name
    in_mask: bool = False  # figures over the inpainting mask only


def _synthesize(path, loaded, n, seed, reference, condition, mask, with_baselines=False,
                flip_ensemble=True, progress=None):
    """Worker: sample (or run the conditional model, averaged over the 8 flips of its input
    with ``flip_ensemble``, and, with ``with_baselines``, its classical baselines), then
    score every image result against the real reference with
    :func:`napari_medgan.evaluation.judge`. ``loaded`` is ``path``'s model, already read
    (the dock waits for it before it reads the inputs that model takes)."""
    import numpy as np

    from napari_medgan.training.inference import generate, image_stage, synthesize_from

    result = Synthesis(path, loaded, [],
                       reference=reference.source if reference is not None else None,
                       condition=condition.source if condition is not None else None)
    if not TASKS[loaded.model.task].needs_mask:
        mask = None  # a mask picked for an earlier model is not this model's input
    if not loaded.model.conditional and condition is not None \
            and image_stage(loaded) is not None:
        # a pair model's image stage, for the user's label map
        result.volumes = [synthesize_from(loaded, condition, progress=progress)]
    elif loaded.model.conditional:
        if condition is None:
            raise ValueError(f"{loaded.model.task}: choose a condition layer")
        result.volumes = [synthesize_from(loaded, condition, mask, progress=progress,
                                          flip_ensemble=flip_ensemble)]
        if with_baselines:
            from napari_medgan.evaluation import compute_baselines

            try:
                result.baselines = compute_baselines(loaded, condition, mask)
            except (*expected_errors(), ImportError) as exc:
                result.notes.append(f"baseline: {one_line(exc)}")
    else:
        images, labels = generate(loaded, n, seed=seed, reference=reference, progress=progress)
        result.volumes = images + labels
    if reference is not None:
        region = None
        if mask is not None and mask.shape == reference.shape:
            region = np.asarray(mask.array) > 0  # inpainting: only the filled hole is news
        result.in_mask = region is not None
        results = [(v.source, False, v) for v in result.volumes if not v.is_label]
        results += [(name, True, v) for name, v in result.baselines.items()]
        result.rows, problems = _judge_rows(reference, results, region)
        if problems:
            result.notes.append(f"n/a for {len(problems)} result(s): {problems[0]}")
    return result


def _judge_rows(reference, results, region) -> tuple[list, list[str]]:
    """``(rows, problems)``: one row per result, its figures None (and a problem line) when
    it cannot be scored against the reference, e.g. another grid."""
    from napari_medgan.evaluation import judge

    rows, problems = [], []
    for method, is_baseline, vol in results:
        try:
            figures = judge(reference, {method: vol}, region=region)[method]
        except ValueError as exc:
            text = one_line(exc)
            problems.append(text if text.startswith(method) else f"{method}: {text}")
            figures = None
        rows.append((method, is_baseline, figures))
    return rows, problems


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)
