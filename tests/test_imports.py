"""The core must not drag Qt or napari in: it runs headless, on clusters, under torchrun."""

import subprocess
import sys
from pathlib import Path

import napari_medgan

#: The napari side: the private npe2 modules and the docks. Everything else is the core.
GUI_SIDE = ("napari_medgan._widgets", "napari_medgan._reader", "napari_medgan._writer",
            "napari_medgan._sample_data")
GUI_TOP_LEVEL = ("qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "vispy",
                 "superqt", "npe2", "app_model")


def core_modules() -> list[str]:
    """Every module of the package outside :data:`GUI_SIDE`, found from the source tree
    (without importing anything), so a new core module is checked the day it is added."""
    root = Path(napari_medgan.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        if not (name + ".").startswith(tuple(g + "." for g in GUI_SIDE)):
            names.append(name)
    return names


def test_core_module_list_is_complete():
    names = core_modules()
    for expected in ("napari_medgan.cli", "napari_medgan.training.trainer",
                     "napari_medgan.slicer.synthesize", "napari_medgan.io.readers"):
        assert expected in names
    assert not [n for n in names if n.startswith("napari_medgan._widgets")]


def test_core_imports_no_qt_or_napari():
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{GUI_TOP_LEVEL!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imported GUI modules: {out.stdout.strip()}"


def test_package_import_is_light():
    """`import napari_medgan` alone must not import torch (napari scans plugins at start-up)."""
    code = "import sys, napari_medgan; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
