"""The set panel of "Synthesize & Compare": distribution metrics of the current synthetic
set against the real layers, its nearest real neighbours, and export as an nnU-Net dataset.

The figures are those of ``napari-medgan evaluate`` (:func:`~napari_medgan.metrics.report.
evaluate_sets`, same centre-crop rule for volumes of different shapes); the export is
:func:`~napari_medgan.export.export_nnunet_dataset` followed by its checker. Both run in a
worker thread; this module only gathers layers and shows results.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QInputDialog,
    QLabel,
    QPushButton,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_medgan._widgets._common import (
    button_row,
    expected_errors,
    layer_kind,
    layer_to_volume,
    report_error,
    results_table,
    run_in_thread,
)
from napari_medgan._widgets._preview import PLACEHOLDER
from napari_medgan.export import check_pairs, pairs_refusal
from napari_medgan.provenance import layer_class
from napari_medgan.tasks import TASKS

REAL_SETS = ("all real image layers", "real reference only")
RESAMPLE_TIP = ("Layers on different grids (shape, spacing) are refused: tick to resample all "
                "to the coarsest spacing and centre-crop them to one shape first")
EXPORT_TIP = ("write synthetic image + label pairs (and, if given, real ones) as an nnU-Net v2 "
              "raw dataset with a manifest")


class SetMetricsWidget(QWidget):
    """Set metrics, "Show nearest real" and nnU-Net export for a :class:`SynthesizeWidget`.

    Uses the host's ``viewer``, ``synthetic`` (layer names of the last synthesis),
    ``reference`` / ``condition`` pickers, ``checkpoint``, ``loaded``, ``seed``, ``count``,
    ``status`` and ``show_in_grid``.
    """

    def __init__(self, host) -> None:
        super().__init__()
        self.host, self.viewer = host, host.viewer
        self.nearest: dict[str, str] = {}  # synthetic layer -> nearest real layer (last run)
        self._generation = 0  # bumped by clear(): results of an older set are dropped
        self.real_set = QComboBox()
        self.real_set.addItems(REAL_SETS)
        self.diversity, self.wasserstein, self.memorized = QLabel("-"), QLabel("-"), QLabel("-")
        self.diversity.setToolTip("mean pairwise (MS-)SSIM of the synthetic set / of the real "
                                  "set: ~1 as varied as the real data, >> 1 mode collapse")
        self.wasserstein.setToolTip("Wasserstein-1 distance of the voxel intensities, in the "
                                    "real layers' units; 0 = same histogram")
        self.resample = QCheckBox("Resample to one grid")
        self.resample.setToolTip(RESAMPLE_TIP)
        self.used = QLabel("")
        self.used.setWordWrap(True)
        self.used.setToolTip("The layers the last figures used; 'real' and 'synthetic' come "
                             "from each layer's provenance, never its name")
        form = QFormLayout()
        for label, w in (("Real set", self.real_set), ("", self.resample), ("Used", self.used),
                         ("Diversity ratio", self.diversity),
                         ("Intensity W1", self.wasserstein), ("Memorized", self.memorized)):
            form.addRow(label, w)
        self.metrics_btn = QPushButton("Set metrics")
        self.nearest_btn = QPushButton("Show nearest real")
        self.export_btn = QPushButton("Export nnU-Net dataset...")
        self.metrics_btn.clicked.connect(self._on_set_metrics)
        self.nearest_btn.clicked.connect(self._on_show_nearest)
        self.export_btn.clicked.connect(lambda: self._on_export())
        self.export_btn.setToolTip(EXPORT_TIP)
        self.metrics_btn.setToolTip("diversity ratio, intensity W1 and nearest-real "
                                    "memorization of the synthetic layers against the real set")
        self.nearest_btn.setToolTip("each synthetic layer next to its most similar real layer "
                                    "(from the last Set metrics), in napari's grid")
        self.real_set.setToolTip("which layers are the real set: all layers whose provenance "
                                 "is real, or the chosen reference alone")
        self._export_allowed = True
        buttons = button_row(self.metrics_btn, self.nearest_btn, self.export_btn)
        self.table = results_table(["synthetic layer", "nearest real", "NCC", "memorized"],
                                   stretch=2, height=120)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addLayout(form)
        layout.addWidget(self.table)

    def clear(self) -> None:
        self._generation += 1
        self.nearest = {}
        for label in (self.diversity, self.wasserstein, self.memorized):
            label.setText("-")
        self.used.setText("")
        self.table.setRowCount(0)

    # ------------------------------------------------------------------- the sets
    def synthetic_layers(self) -> list[str]:
        """Image layers of the host's last synthesis still in the viewer (not label maps)."""
        return [n for n in self.host.synthetic
                if n in self.viewer.layers and layer_kind(self.viewer.layers[n]) == "image"]

    def real_layers(self) -> list[str]:
        """The chosen real set: the reference layer, or every 3D image layer whose provenance
        is real (:func:`~napari_medgan.provenance.layer_class`; a layer without one counts
        only when napari read it from a file)."""
        if self.real_set.currentText() == REAL_SETS[1]:
            ref = self.host.reference.layer_name()
            return [ref] if ref and ref not in self.host.synthetic else []
        synthetic = set(self.host.synthetic)
        return [ly.name for ly in self._images() if ly.name not in synthetic
                and layer_class(ly) == "real"]

    def unknown_layers(self) -> list[str]:
        """3D image layers left out because nothing says where they come from."""
        return [ly.name for ly in self._images() if layer_class(ly) == "unknown"
                and ly.name not in self.host.synthetic]

    def _images(self) -> list:
        return [ly for ly in self.viewer.layers
                if layer_kind(ly) == "image" and not ly.metadata.get(PLACEHOLDER)
                and not getattr(ly, "rgb", False) and not getattr(ly, "multiscale", False)
                and np.ndim(ly.data) == 3]

    # ------------------------------------------------------------------- handlers
    def _on_set_metrics(self) -> None:
        """Diversity ratio, intensity W1 and nearest real neighbours, in a worker thread."""
        fake, real = self.synthetic_layers(), self.real_layers()
        try:
            if not fake:
                raise ValueError("no synthetic layers: click Synthesize first")
            if not real:
                raise ValueError("choose a real reference layer" if self.real_set.currentIndex()
                                 else "no real 3D image layer in the viewer: open one")
            layers = self.viewer.layers
            real_v = [layer_to_volume(layers[n]) for n in real]  # copies: the layers may change
            fake_v = [layer_to_volume(layers[n]) for n in fake]
            real_v, fake_v, grid_note = _one_grid(real_v, fake_v, self.resample.isChecked())
        except expected_errors() as exc:
            self.host.status.setText(report_error("Set metrics", exc))
            return
        self.clear()
        unknown = self.unknown_layers()
        self.used.setText("; ".join(
            [f"synthetic: {', '.join(fake)}", f"real: {', '.join(real)}"]
            + ([f"left out (no provenance): {', '.join(unknown)}"] if unknown else [])
            + ([grid_note] if grid_note else [])))
        self.metrics_btn.setEnabled(False)
        self.host.status.setText(f"set metrics: {len(fake)} synthetic vs {len(real)} real...")
        run_in_thread(_evaluate, real_v, fake_v, self._generation, returned=self._on_evaluated,
                      errored=lambda exc: self.host.status.setText(
                          report_error("Set metrics", exc)),
                      finished=lambda: self.metrics_btn.setEnabled(True))

    def _on_evaluated(self, result: tuple[int, dict]) -> None:
        generation, report = result
        if generation != self._generation:
            return  # a new synthesis (or a new click) since: these figures are stale
        n_real, n_fake = report["n_real"], report["n_fake"]
        ratio = report["metrics"]["diversity_ratio"]
        if n_real < 2:
            text = "n/a (needs \u22652 real)"
        elif n_fake < 2:
            text = "n/a (needs \u22652 synthetic)"
        elif ratio["value"] is None:
            text = f"n/a ({ratio.get('skipped', 'not computable')})"
        else:
            text = f"{ratio['value']:.3f} ({ratio['measure'].upper()})"
        self.diversity.setText(text)
        self.wasserstein.setText(f"{report['metrics']['intensity_wasserstein']['value']:.4g}")
        memo = report["memorization"]
        calib = memo["real_to_real_nearest"]
        self.memorized.setText(
            f"{memo['n_flagged']}/{n_fake} ({memo['method'].upper()} \u2265 {memo['threshold']}"
            + (f"; real-to-real max {calib['max']:.3f})" if calib else ")"))
        self.nearest = {r["fake"]: r["real"] for r in memo["nearest"]}
        self.table.setRowCount(len(memo["nearest"]))
        for i, r in enumerate(memo["nearest"]):
            cells = (r["fake"], r["real"], f"{r['score']:.3f}", "yes" if r["memorized"] else "")
            for j, text in enumerate(cells):
                self.table.setItem(i, j, QTableWidgetItem(text))
        notes = [w for w in report["warnings"] if not w.startswith("frechet_distance")]
        self.host.status.setText("; ".join([f"set metrics: {n_fake} synthetic vs {n_real} real",
                                            *notes]))

    def _on_show_nearest(self) -> None:
        """The selected synthetic layer and its nearest real layer alone in the grid."""
        layer = self.viewer.layers.selection.active
        real = self.nearest.get(layer.name) if layer is not None else None
        if real is None or real not in self.viewer.layers:
            message = ("click Set metrics, then select one of its synthetic layers"
                       if real is None else f"nearest real layer {real!r} is gone")
            self.host.status.setText(report_error("Show nearest real", ValueError(message)))
            return
        self.host.show_in_grid(real, [layer.name])
        self.host.status.setText(f"{layer.name} next to its nearest real volume, {real}")

    def model_changed(self, model) -> None:
        """A model was loaded: nnU-Net export only for models that make image + label pairs;
        for the others the button is disabled and says why."""
        reason = pairs_refusal(model)
        self._export_allowed = reason is None
        self.export_btn.setEnabled(self._export_allowed)
        self.export_btn.setToolTip(reason or EXPORT_TIP)

    def _on_export(self, out: str | None = None, n: int | None = None) -> None:
        """Synthetic image + label pairs as an nnU-Net v2 dataset in folder ``out``
        (asked for when None); ``n`` cases for joint models (asked for when None)."""
        host = self.host
        path = host.checkpoint.path()
        model = host.loaded[1].model if host.loaded and host.loaded[0] == path else None
        try:
            if not path:
                raise ValueError("choose a checkpoint or a run folder")
            draws_labels = model is not None and TASKS[model.task].outputs_labels
            if model is not None:
                check_pairs(model, path)
            conditions = self._conditions() if model is not None and not draws_labels else None
        except expected_errors() as exc:
            host.status.setText(report_error("Export", exc))
            return
        if out is None:
            out = QFileDialog.getExistingDirectory(self, "nnU-Net raw folder (DatasetXXX_Name "
                                                   "is created inside)")
            if not out:
                return
        if n is None and conditions is None:  # joint, or not known yet: export checks it
            n, ok = QInputDialog.getInt(self, "Export nnU-Net dataset", "Synthetic cases",
                                        host.count.value(), 1, 10_000)
            if not ok:
                return
        self.export_btn.setEnabled(False)
        host.status.setText(f"exporting to {out}...")
        run_in_thread(_export, out, path, n, host.seed.value(), conditions,
                      returned=self._on_exported,
                      errored=lambda exc: host.status.setText(report_error("Export", exc)),
                      finished=lambda: self.export_btn.setEnabled(self._export_allowed))

    def _conditions(self) -> list:
        """Label maps for a label2image export, one synthetic case each: the host's condition
        layer, plus the Labels layers selected with it in the layer list."""
        name = self.host.condition.layer_name()
        if name is None or layer_kind(self.viewer.layers[name]) != "labels":
            raise ValueError("label2image: choose a Labels layer as the condition")
        selected = {ly.name for ly in self.viewer.layers.selection}  # names: napari hands
        chosen = [name]  # plugins proxies, so the same layer need not be the same object
        if name in selected:
            chosen += [ly.name for ly in self.viewer.layers if ly.name in selected
                       and ly.name != name and layer_kind(ly) == "labels"]
        return [layer_to_volume(self.viewer.layers[n]) for n in chosen]

    def _on_exported(self, result) -> None:
        dataset, cases, problems = result
        check = "check: OK" if not problems else \
            f"check: {len(problems)} problem(s), first: {problems[0]}"
        self.host.status.setText(f"exported {cases} case(s) to {dataset}; {check}")


def _one_grid(real: list, fake: list, resample: bool) -> tuple[list, list, str]:
    """The two sets as they are when they share one grid; else resampled to one
    (``resample``), or a ValueError naming two layers on different grids."""
    from napari_medgan.study import common_grid

    vols = real + fake
    grids = [(v.shape, tuple(np.round(v.spacing, 4))) for v in vols]
    if len(set(grids)) == 1:
        return real, fake, ""
    if not resample:
        odd = next(i for i, g in enumerate(grids) if g != grids[0])
        describe = [f"{v.source!r} {'x'.join(map(str, v.shape))} at "
                    f"{'x'.join(f'{s:.3g}' for s in v.spacing)} mm" for v in (vols[0], vols[odd])]
        raise ValueError(f"the layers are on different grids ({describe[0]}, {describe[1]}): "
                         "tick 'Resample to one grid' or choose layers on one grid")
    keys = [f"{i}" for i in range(len(vols))]
    same, notes = common_grid(dict(zip(keys, vols)))
    out = [same[k].with_array(same[k].array, source=v.source) for k, v in zip(keys, vols)]
    return out[:len(real)], out[len(real):], "; ".join(notes)


def _evaluate(real, fake, generation: int) -> tuple[int, dict]:
    """Worker: the report of ``napari-medgan evaluate`` for two lists of Volumes."""
    from napari_medgan.metrics.report import evaluate_sets

    return generation, evaluate_sets(real, fake)


def _export(out, checkpoint, n, seed, conditions):
    """Worker: export under the first free nnU-Net ID from 501, then check the result."""
    from napari_medgan.export import check_nnunet_dataset, export_nnunet_dataset

    taken = {int(m.group(1)) for p in Path(out).glob("Dataset*")
             if (m := re.match(r"^Dataset(\d{3})_", p.name))}
    free = [i for i in (*range(501, 1000), *range(1, 501)) if i not in taken]
    if not free:
        raise ValueError(f"{out}: every nnU-Net dataset ID (001-999) is taken")
    result = export_nnunet_dataset(out, checkpoint=checkpoint, n=n, seed=seed,
                                   dataset_id=free[0], conditions=conditions)
    dataset = result["dataset_dir"]
    return dataset, result["dataset_json"]["numTraining"], check_nnunet_dataset(dataset)
