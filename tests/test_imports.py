"""The core must not drag Qt or napari in: it runs headless, on clusters, under torchrun."""

import subprocess
import sys

CORE_MODULES = [
    "napari_medgan",
    "napari_medgan.config",
    "napari_medgan.io",
    "napari_medgan.data",
    "napari_medgan.models",
    "napari_medgan.training",
    "napari_medgan.metrics",
    "napari_medgan.cli",
    "napari_medgan.export",
    "napari_medgan.study",
    "napari_medgan.demo",
    "napari_medgan.visualize",
    "napari_medgan.training.trainer",
    "napari_medgan.training.inference",
    "napari_medgan.metrics.report",
    "napari_medgan.data.datasets",
    "napari_medgan.io.readers",
]


def test_core_imports_no_qt_or_napari():
    code = (
        "import importlib, sys\n"
        f"for name in {CORE_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'vispy'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported GUI modules: {out.stdout.strip()}"


def test_package_import_is_light():
    """`import napari_medgan` alone must not import torch (napari scans plugins at start-up)."""
    code = "import sys, napari_medgan; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
