"""The "Dataset" widget: where training volumes come from (layers, a folder, or the phantom
distribution), how they are normalised, the patch size, and a look at one training patch.

The choice lives in the viewer's :class:`~napari_medgan._widgets._common.Session`;
"Train GAN" reads it when a run starts."""

from __future__ import annotations

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QStackedWidget,
    QVBoxLayout,
    QWidget,
)

from napari_medgan._widgets._common import (
    LayerList,
    PathPicker,
    add_volume_layer,
    expected_errors,
    find_layer,
    layer_to_volume,
    report_error,
    run_in_thread,
    scrolling_body,
    session_for,
    spin,
)
from napari_medgan._widgets._remember import remember
from napari_medgan.config import PRESETS, ModelConfig, RunConfig, field_help
from napari_medgan.provenance import provenance_metadata

SOURCES = ("phantom", "layers", "folder")
PATCH = "random patch"


class DatasetWidget(QWidget):
    """Choose and inspect the training volumes; look at one training patch."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer, self.session = napari_viewer, session_for(napari_viewer)
        self._cache: tuple | None = None  # (key, TrainingData) for repeated patch draws
        d = self.session.dataset
        self.source = QComboBox()
        self.source.addItems(SOURCES)
        self.count, self.size = spin(1, 10_000, d.phantom_count), spin(16, 512, d.phantom_size)
        self.modality = QComboBox()
        self.modality.addItems(["mr", "ct"])
        self.images = LayerList(("image",))
        self.labels, self.targets = LayerList(("labels",)), LayerList(("image",))
        self.folder, self.label_folder, self.target_folder = (
            PathPicker("file_or_dir", hint) for hint in
            ("folder or file of images", "label maps (optional)", "targets (optional)"))
        self.pages = QStackedWidget()
        for rows in ([("Count", self.count), ("Size (voxels)", self.size),
                      ("Modality", self.modality)],
                     [("Images", self.images), ("Label maps", self.labels),
                      ("Targets", self.targets)],
                     [("Images", self.folder), ("Label maps", self.label_folder),
                      ("Targets", self.target_folder)]):
            page, form = QWidget(), QFormLayout()
            page.setLayout(form)
            form.setContentsMargins(0, 0, 0, 0)
            for label, w in rows:
                form.addRow(label, w)
            self.pages.addWidget(page)
        self.preset, self.target_preset = QComboBox(), QComboBox()
        self.preset.addItems(PRESETS)
        self.target_preset.addItems(("same as images",) + PRESETS)
        self.patch = spin(16, 512, d.patch_size, step=16)
        self.info = QPlainTextEdit(readOnly=True)
        self.info.setFixedHeight(130)
        self.describe_btn = QPushButton("Describe")
        self.patch_btn = QPushButton("Show random patch")
        self.describe_btn.clicked.connect(self._on_describe)
        self.patch_btn.clicked.connect(self._on_show_patch)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Source", self.source)
        form.addRow(self.pages)
        for label, w in (("Intensity preset", self.preset), ("Target preset", self.target_preset),
                         ("Patch size", self.patch)):
            form.addRow(label, w)
        buttons = QHBoxLayout()
        buttons.addWidget(self.describe_btn)
        buttons.addWidget(self.patch_btn)
        layout = QVBoxLayout(scrolling_body(self))
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.info)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self.source.currentIndexChanged.connect(self._on_source_changed)
        self._say_what_things_are()
        self._on_source_changed(0)
        for signal in (self.source.currentIndexChanged, self.count.valueChanged,
                       self.size.valueChanged, self.modality.currentIndexChanged,
                       self.images.itemSelectionChanged, self.labels.itemSelectionChanged,
                       self.targets.itemSelectionChanged, self.preset.currentIndexChanged,
                       self.target_preset.currentIndexChanged, self.patch.valueChanged,
                       *(p.edit.editingFinished for p in (self.folder, self.label_folder,
                                                          self.target_folder))):
            signal.connect(self._on_changed)
        self.reset_choices()
        self.preset.setCurrentText(d.preset)
        # the layers picked are this session's; the rest comes back next time
        remember(self, "Dataset", {
            "source": self.source, "phantom_count": self.count, "phantom_size": self.size,
            "phantom_modality": self.modality, "folder": self.folder,
            "label_folder": self.label_folder, "target_folder": self.target_folder,
            "preset": self.preset, "target_preset": self.target_preset,
            "patch_size": self.patch})

    def reset_choices(self, *_) -> None:
        """napari calls this when layers are added, removed or renamed."""
        for lst in (self.images, self.labels, self.targets):
            lst.refresh(self.viewer)

    # --------------------------------------------------------------- handlers
    def _say_what_things_are(self) -> None:
        """Tooltips: the CLI's ``--help`` text of the field each control sets (declared once
        in the configuration), and what the others do."""
        self.source.setToolTip("where the training volumes come from: generated phantom "
                               "heads, image layers open in the viewer, or files")
        for w, key in ((self.count, "data.phantom_count"), (self.size, "data.phantom_size"),
                       (self.modality, "data.phantom_modality"), (self.folder, "data.source"),
                       (self.label_folder, "data.labels"), (self.target_folder, "data.target"),
                       (self.preset, "data.preset"), (self.target_preset, "data.target_preset"),
                       (self.patch, "model.patch_size")):
            w.setToolTip(field_help(*key.split(".")))
        self.images.setToolTip("image layers to train on (select one or more)")
        self.labels.setToolTip(field_help("data", "labels") + " (layers, in the order of the "
                               "images)")
        self.targets.setToolTip(field_help("data", "target") + " (layers)")
        self.describe_btn.setToolTip("shape, spacing, orientation and intensity range of each "
                                     "volume, and what training would sample")
        self.patch_btn.setToolTip("one training patch as the trainer draws it, as a layer "
                                  "(provenance: derived)")

    def _on_source_changed(self, index: int) -> None:
        """Show the page of the source; hidden pages take no room."""
        for i in range(self.pages.count()):
            policy = QSizePolicy.Policy.Preferred if i == index else QSizePolicy.Policy.Ignored
            self.pages.widget(i).setSizePolicy(policy, policy)
        self.pages.setCurrentIndex(index)
        self.pages.adjustSize()

    def _on_changed(self, *_) -> None:
        """Copy the form into the session (cheap; nothing is read here)."""
        d = self.session.dataset
        d.source = self.source.currentText()
        d.phantom_count, d.phantom_size = self.count.value(), self.size.value()
        d.phantom_modality = self.modality.currentText()
        d.image_layers, d.label_layers = self.images.selected(), self.labels.selected()
        d.target_layers = self.targets.selected()
        d.folder, d.label_folder = self.folder.path(), self.label_folder.path()
        d.target_folder = self.target_folder.path()
        d.preset = self.preset.currentText()
        d.target_preset = (self.target_preset.currentText()
                           if self.target_preset.currentIndex() else None)
        d.patch_size = self.patch.value()
        self.session.changed.emit("dataset")

    def _on_describe(self) -> None:
        """Shape, spacing, orientation and intensity range of each volume."""
        d = self.session.dataset
        if d.source == "layers":
            try:
                lines = [layer_to_volume(find_layer(self.viewer, name), copy=False).describe()
                         for names in (d.image_layers, d.label_layers, d.target_layers)
                         for name in names]
            except expected_errors() as exc:
                self.status.setText(report_error("Dataset", exc))
                return
            self.info.setPlainText("\n".join(lines) or "select image layers above")
            return
        run_in_thread(_describe, d.source, d.folder, d.label_folder, d.target_folder,
                      d.phantom_size, d.phantom_modality, d.phantom_count,
                      returned=lambda lines: self.info.setPlainText("\n".join(lines)),
                      errored=lambda exc: self.status.setText(report_error("Dataset", exc)))

    def _on_show_patch(self) -> None:
        """Sample one training patch as the trainer would and add it as layers."""
        try:
            run = RunConfig(model=ModelConfig(name=self.session.model_name,
                                              task=self.session.task))
            volumes = self.session.dataset.apply(run, self.viewer)  # checked as it sets
        except expected_errors() as exc:
            self.status.setText(report_error("Show random patch", exc))
            return
        key = repr((run.to_dict(), self.session.dataset))
        cached = self._cache[1] if self._cache and self._cache[0] == key else None
        self.patch_btn.setEnabled(False)
        self.status.setText("sampling a patch...")
        run_in_thread(_sample_patch, run, volumes, cached,
                      returned=lambda result: self._on_patch(key, *result),
                      errored=lambda exc: self.status.setText(
                          report_error("Show random patch", exc)),
                      finished=lambda: self.patch_btn.setEnabled(True))

    def _on_patch(self, key: str, data, images, labels, conditions) -> None:
        self._cache = (key, data)
        for vols, name in ((images, PATCH), (labels, f"{PATCH} labels"),
                           (conditions, f"{PATCH} condition")):
            if vols:
                if name in self.viewer.layers:
                    self.viewer.layers.remove(name)
                add_volume_layer(self.viewer, vols[0], name, metadata=provenance_metadata(
                    "derived", method=f"training {name} (Dataset dock)",
                    source=self.session.dataset.summary()))
        self.status.setText(f"patch {data.patch_size}^3 from {len(data)} volume(s), "
                            f"task {data.task}, preset {data.normalizer.preset}")


def _describe(source, folder, label_folder, target_folder, size, modality, count) -> list[str]:
    if source == "phantom":
        from napari_medgan.data.phantom import make_head_phantom

        image, labels = make_head_phantom((size,) * 3, seed=0, modality=modality)
        return [f"{count} phantom heads like:", image.describe(), labels.describe()]
    from pathlib import Path

    from napari_medgan.io import list_volume_files, load_volume

    lines = []
    for where in (folder, label_folder, target_folder):
        if not where:
            continue
        path = Path(where).expanduser()
        files = list_volume_files(path) if path.is_dir() else [path]
        lines += [load_volume(f).describe() for f in files[:12]]
        lines += [f"... and {len(files) - 12} more in {path}"] if len(files) > 12 else []
    if not lines:
        raise ValueError("folder: choose a folder or file of images")
    return lines


def _sample_patch(run, volumes, data=None):
    """Worker: build the training data (unless cached) and decode one random batch."""
    import numpy as np

    from napari_medgan.data.datasets import build_training_data
    from napari_medgan.training.outputs import decode_samples

    data = data or build_training_data(run, *volumes)
    batch = data.sample_batch(1, np.random.default_rng())
    images, labels, conditions = decode_samples(
        batch["image"], run.model, data.target_normalizer or data.normalizer, data.reference,
        condition=batch.get("condition"), condition_normalizer=data.normalizer, name=PATCH)
    return data, images, labels, conditions
