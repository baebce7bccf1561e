"""3D Slicer CLI modules: synthesis from a trained napari-medgan model inside Slicer.

One Python module per Slicer module (:mod:`.synthesize`, :mod:`.label2image`,
:mod:`.image2image`), each declared once (:mod:`.spec`): ``--xml`` prints its Slicer
Execution Model description, anything else runs it. ``napari-medgan-slicer install DIR``
(:mod:`.install`) writes the launchers Slicer finds in a module folder. Importing this
package loads no torch and no Qt.
"""

from __future__ import annotations

import importlib

#: The modules, by Python name (``python -m napari_medgan.slicer.NAME``).
MODULE_NAMES = ("synthesize", "label2image", "image2image")


def get_modules() -> list:
    """The :class:`~napari_medgan.slicer.spec.CLIModule` of every module."""
    return [importlib.import_module(f"{__name__}.{name}").MODULE for name in MODULE_NAMES]
