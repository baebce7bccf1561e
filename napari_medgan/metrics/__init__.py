"""Evaluation metrics for synthetic 3D volumes (see ``docs/metrics.md``).

* :mod:`.image` -- paired metrics (MAE, PSNR, SSIM, MS-SSIM) through MONAI.
* :mod:`.distribution` -- set metrics: intensity Wasserstein, MMD, Frechet
  distance, within-set diversity and the diversity ratio.
* :mod:`.features` -- download-free 3D feature extractors (random, trained
  self-supervised, or loaded from safetensors + JSON).
* :mod:`.memorization` -- nearest real volume of each synthetic one.
* :mod:`.report` -- :func:`evaluate_sets` / :func:`evaluate_folders`.

Names are re-exported lazily so that ``import napari_medgan.metrics`` does
not import torch and MONAI until a metric is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "image": ("compute_mae", "compute_psnr", "compute_ssim", "compute_ms_ssim", "paired_metrics"),
    "distribution": (
        "histogram_wasserstein",
        "compute_mmd",
        "frechet_distance",
        "diversity",
        "diversity_ratio",
    ),
    "features": (
        "RandomConv3DFeatures",
        "FeatureExtractor",
        "load_feature_extractor",
        "save_feature_extractor",
        "train_feature_extractor",
    ),
    "memorization": ("nearest_neighbours", "flag_memorized", "memorization_summary"),
    "report": ("evaluate_sets", "evaluate_folders"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
