"""Volume I/O: read/write medical volumes with their geometry, and preprocess them.

The geometry convention lives in :mod:`napari_medgan.io.volume`. Importing this
package loads numpy only; nibabel and SimpleITK are imported when a file is read
or written.
"""

from napari_medgan.io.atomic import atomic_path, atomic_write, atomic_write_bytes, atomic_write_text
from napari_medgan.io.preprocess import (
    Normalizer,
    fit_normalizer,
    reorient_to_ras,
    resample_to_spacing,
)
from napari_medgan.io.paths import (
    guess_is_label,
    is_dicom_folder,
    is_supported_path,
    list_volume_files,
    volume_stem,
)
from napari_medgan.io.readers import dicom_series_files, load_volume
from napari_medgan.io.volume import Volume, VolumeError
from napari_medgan.io.writers import safe_file_stem, save_dicom_series, save_volume, save_volumes

__all__ = [
    "Normalizer",
    "Volume",
    "VolumeError",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "dicom_series_files",
    "fit_normalizer",
    "guess_is_label",
    "is_dicom_folder",
    "is_supported_path",
    "list_volume_files",
    "load_volume",
    "reorient_to_ras",
    "resample_to_spacing",
    "safe_file_stem",
    "save_dicom_series",
    "save_volume",
    "save_volumes",
    "volume_stem",
]
