"""The model that ships with the plugin: a small valid bundle with its recipe, a napari sample,
the Synthesize dock's default, and samples whose image agrees with their own label map."""

from __future__ import annotations

import zipfile

import numpy as np

from napari_medgan.data.phantom import PHANTOM_LABELS, make_head_phantom
from napari_medgan.pretrained import PRETRAINED_HEAD
from napari_medgan.training.inference import generate, load_generator


def test_the_shipped_model_is_a_small_bundle_with_its_recipe_and_limits():
    assert PRETRAINED_HEAD.stat().st_size <= 20 * 2**20
    loaded = load_generator(PRETRAINED_HEAD, device="cpu")
    assert (loaded.model.name, loaded.model.task) == ("twostage3d", "joint")
    assert {s["value"]: s["name"] for s in loaded.segments} == {
        v: n for v, n in PHANTOM_LABELS.items() if v}
    with zipfile.ZipFile(PRETRAINED_HEAD) as archive:
        card = archive.read("synthetic-head/docs/README.md").decode()
    assert "napari-medgan train --config resources/pretrained_head.yaml" in card
    assert "## Limitations" in card and "Not for diagnosis" in card


def _class_means(image: np.ndarray, labels: np.ndarray, classes) -> list[float]:
    return [float(image[labels == c].mean()) for c in classes]


def test_its_images_agree_with_their_own_label_maps_as_the_phantoms_do():
    """A joint model must draw a consistent pair: in each sample, the tissues its label map
    names take the intensities those tissues have in the phantom (MR: white matter brightest,
    skull dark). Compared with the real phantom's per-tissue means, by rank."""
    from scipy.stats import spearmanr

    tissues = [1, 2, 3, 4, 5, 6]  # scalp, skull, csf, grey, white matter, ventricles
    loaded = load_generator(PRETRAINED_HEAD, device="cpu")
    grid = loaded.reference.shape
    real = np.mean([_class_means(*(v.array for v in make_head_phantom(grid, seed=s)),
                                 tissues) for s in range(4)], axis=0)
    images, labels = generate(loaded, 4, seed=3)
    for image, label in zip(images, labels):
        counts = [int((label.array == c).sum()) for c in tissues]
        assert min(counts) >= 50, counts  # every tissue is drawn, not just a blob
        rho = spearmanr(_class_means(image.array, label.array, tissues), real)[0]
        assert rho >= 0.8, (rho, _class_means(image.array, label.array, tissues), real)


def test_the_sample_menu_draws_a_named_head(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-medgan", "synthetic_head")
    image, labels = layers
    assert image.data.shape == (64, 64, 64) and np.isfinite(image.data).all()
    assert labels._type_string == "labels"
    assert dict(zip(labels.features["index"], labels.features["name"]))[5] == "white matter"


def test_synthesize_starts_with_the_shipped_model(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = viewer.window.add_plugin_dock_widget("napari-medgan", "Synthesize & Compare")[1]
    assert widget.checkpoint.path() == str(PRETRAINED_HEAD)
    # an image layer in the viewer, and Synthesize clicked before the model has loaded: the
    # pair model draws from noise, it does not take the image for its label-map input
    image, _ = make_head_phantom((16,) * 3, seed=1)
    viewer.add_image(image.array, name="some image")
    widget.count.setValue(1)
    widget._on_synthesize()
    assert not widget.synth_btn.isEnabled() and "loading" in widget.status.text()
    qtbot.waitUntil(lambda: widget.synth_btn.isEnabled(), timeout=30_000)
    assert len(widget.synthetic) == 2, widget.status.text()  # the image and its label map
