"""The "Synthesize & Compare" widget: sample from a checkpoint (or run a conditional model over
a condition layer), show real and synthetic volumes side by side, score them, save them."""

from __future__ import annotations

import math

from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_medgan._widgets._common import (
    button_row,
    LayerCombo,
    PathPicker,
    add_volume_layer,
    expected_errors,
    follow_session,
    layer_to_volume,
    report_error,
    results_table,
    run_in_thread,
    session_for,
    spin,
)
from napari_medgan._widgets._set_metrics import SetMetricsWidget

SYNTHETIC_KEY = "medgan_synthetic"


class SynthesizeWidget(QWidget):
    """Sample from a checkpoint, compare with a real volume, save the results."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer, self.session = napari_viewer, session_for(napari_viewer)
        self.loaded: tuple | None = None  # (path as typed, LoadedModel), once read
        self.synthetic: list[str] = []  # layer names from the last synthesis
        self._hidden: list[str] = []  # layers hidden by "Side by side", shown again after
        self.checkpoint = PathPicker("file_or_dir", "checkpoint or run folder",
                                     "Checkpoints (*.safetensors *.json)")
        self.checkpoint.edit.editingFinished.connect(self._on_checkpoint_changed)
        self.model_info = QLabel("no checkpoint loaded")
        self.count, self.seed = spin(1, 64, 2), spin(0, 2**31 - 1, 0)
        self.reference = LayerCombo(("image",), none="(checkpoint reference)")
        self.condition = LayerCombo(("labels", "image"))
        self.mask = LayerCombo(("labels",), none="(no mask)")
        self.form = form = QFormLayout()
        for label, w in (("Checkpoint", self.checkpoint), ("", self.model_info),
                         ("Samples", self.count), ("Seed", self.seed),
                         ("Real reference", self.reference), ("Condition", self.condition),
                         ("Inpaint mask", self.mask)):
            form.addRow(label, w)
        self.synth_btn, self.side_btn = QPushButton("Synthesize"), QPushButton("Side by side")
        self.save_btn = QPushButton("Save selected as NIfTI")
        self.side_btn.setCheckable(True)
        self.synth_btn.clicked.connect(self._on_synthesize)
        self.side_btn.toggled.connect(self._on_side_by_side)
        self.save_btn.clicked.connect(lambda: self._on_save())
        buttons = button_row(self.synth_btn, self.side_btn, self.save_btn)
        self.table = results_table(["synthetic layer", "PSNR (dB)", "SSIM"], stretch=1,
                                   height=150)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.set_metrics = SetMetricsWidget(self)  # set metrics, nearest real, nnU-Net export
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.table)
        layout.addWidget(self.set_metrics)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.reset_choices()
        follow_session(self, self._on_session_changed)
        self._on_session_changed("run")

    def reset_choices(self, *_) -> None:
        """napari calls this when layers are added, removed or renamed."""
        for combo in (self.reference, self.condition, self.mask):
            combo.refresh(self.viewer)

    # --------------------------------------------------------------- handlers
    def _on_session_changed(self, what: str) -> None:
        if what == "run" and self.session.checkpoint:
            self.checkpoint.set_path(self.session.checkpoint)

    def _on_checkpoint_changed(self) -> None:
        path = self.checkpoint.path()
        if path and (self.loaded is None or self.loaded[0] != path):
            run_in_thread(_load, path, returned=self._on_loaded,
                          errored=lambda exc: self.model_info.setText(f"cannot load: {exc}"))

    def _on_loaded(self, result) -> None:
        if result[0] != self.checkpoint.path():
            return  # the path changed while this one was loading
        self.loaded, loaded = result, result[1]
        m = loaded.model
        self.model_info.setText(f"{m.name}/{m.task}, step {loaded.step}, patch {m.patch_size}^3")
        for w, used in ((self.count, not m.conditional), (self.seed, not m.conditional),
                        (self.condition, m.conditional), (self.mask, m.task == "inpaint")):
            w.setVisible(used)  # only the inputs this model takes
            self.form.labelForField(w).setVisible(used)

    def _on_synthesize(self) -> None:
        path = self.checkpoint.path()
        try:
            if not path:
                raise ValueError("checkpoint: choose a checkpoint or a run folder")
            names = (self.reference.layer_name(), self.condition.layer_name(),
                     self.mask.layer_name())
            ref, cond, mask = (layer_to_volume(self.viewer.layers[n]) if n else None
                               for n in names)
        except expected_errors() as exc:
            self.status.setText(report_error("Synthesize", exc))
            return
        cached = self.loaded[1] if self.loaded and self.loaded[0] == path else None
        self.synth_btn.setEnabled(False)
        self.status.setText("synthesizing...")
        run_in_thread(_synthesize, path, cached, self.count.value(), self.seed.value(), ref,
                      cond, mask, returned=self._on_synthesized,
                      errored=lambda exc: self.status.setText(report_error("Synthesize", exc)),
                      finished=lambda: self.synth_btn.setEnabled(True))

    def _on_synthesized(self, result) -> None:
        path, loaded, volumes, rows = result
        self._on_loaded((path, loaded))
        self.synthetic = []
        self.set_metrics.clear()  # its figures were for the previous set
        tag = {"checkpoint": str(loaded.path), "step": loaded.step, "seed": self.seed.value()}
        for vol in volumes:
            name = f"{vol.source} (step {loaded.step})"
            layer = add_volume_layer(self.viewer, vol, name, metadata={SYNTHETIC_KEY: tag})
            self.synthetic.append(layer.name)
        self.table.setRowCount(len(rows))
        for i, (name, psnr, ssim) in enumerate(rows):
            cells = (f"{name} (step {loaded.step})", _fmt(psnr, 2), _fmt(ssim, 3))
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        self.status.setText(f"{len(volumes)} volume(s) from {loaded.path}")

    def _on_side_by_side(self, on: bool = True) -> None:
        """Real reference and synthetic layers in napari's grid; off: back to one canvas."""
        if not on:
            self.leave_grid()
            return
        real = self.reference.layer_name()
        shown = [n for n in self.synthetic if n in self.viewer.layers]
        if real is None or not shown:
            self.status.setText(report_error("Side by side", ValueError(
                "choose a real reference layer and synthesize first")))
            self._set_checked(False)
            return
        self.show_in_grid(real, shown)

    def show_in_grid(self, real: str, shown: list[str]) -> None:
        """Layer ``real`` (top left) and ``shown`` alone in napari's grid, with the real
        layer's contrast limits and colormap (dims, hence the slice, are shared); the other
        layers are hidden until :meth:`leave_grid`. Also used by "Show nearest real"."""
        if self.side_btn.isChecked():
            self.leave_grid()  # restore first, so the layers hidden before are not forgotten
        ref = self.viewer.layers[real]
        for name in shown:
            layer = self.viewer.layers[name]
            layer.colormap, layer.contrast_limits = ref.colormap, ref.contrast_limits
        keep = {real, *shown}
        self._hidden = [ly.name for ly in self.viewer.layers if ly.visible and ly.name not in keep]
        for layer in self.viewer.layers:
            layer.visible = layer.name in keep
        self.viewer.layers.move(self.viewer.layers.index(ref), 0)  # first cell: top left
        grid = self._grid()
        grid.stride, grid.enabled = 1, True
        self._set_checked(True)

    def leave_grid(self) -> None:
        self._grid().enabled = False
        self._set_checked(False)
        for name in self._hidden:
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = True
        self._hidden = []

    def _grid(self):
        return getattr(getattr(self.viewer, "canvas", None), "grid", None) or self.viewer.grid

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


def _load(path: str):
    from napari_medgan.training.inference import load_generator

    return path, load_generator(path)


def _synthesize(path, loaded, n, seed, reference, condition, mask):
    """Worker: sample (or translate), then PSNR/SSIM against the real reference."""
    import numpy as np

    from napari_medgan.training.inference import generate, synthesize_from

    loaded = loaded or _load(path)[1]
    if loaded.model.conditional:
        if condition is None:
            raise ValueError(f"{loaded.model.task}: choose a condition layer")
        volumes = [synthesize_from(loaded, condition, mask)]
    else:
        images, labels = generate(loaded, n, seed=seed, reference=reference)
        volumes = images + labels
    rows = []
    if reference is not None:
        from napari_medgan.metrics.image import compute_psnr, compute_ssim

        real = np.asarray(reference.array, dtype=np.float32)
        data_range = float(real.max() - real.min()) or 1.0
        for vol in (v for v in volumes if not v.is_label):
            same = vol.shape == real.shape
            psnr = compute_psnr(vol.array, real, data_range) if same else math.nan
            ssim = compute_ssim(vol.array, real, data_range) if same and min(real.shape) >= 11 \
                else math.nan
            rows.append((vol.source, psnr, ssim))
    return path, loaded, volumes, rows


def _fmt(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"
