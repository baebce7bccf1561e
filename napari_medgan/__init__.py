"""napari-medgan: 3D generative adversarial networks for medical volumes.

Importing this package loads numpy only; torch, nibabel, SimpleITK and MONAI are
imported by the submodules that need them, and Qt/napari only by the private
npe2 modules (``_reader``, ``_writer``, ``_sample_data``) and ``_widgets``.
"""

__version__ = "0.1.0"

from napari_medgan.io.volume import Volume  # noqa: E402

__all__ = ["Volume", "__version__"]
