"""One-time work a training run needs in a fresh process, done before the run.

The first run in a process imports about a thousand modules that later runs find loaded:
torch's optimizer machinery (``Optimizer.add_param_group`` imports ``torch._dynamo`` and
SymPy on its first call, 1-2 s on a 2-core machine), TensorBoard and protobuf, Pillow's
PNG encoder, SciPy's image filters. Done on the training thread, each import holds the
GIL in pieces of up to a few hundred milliseconds (a cold shared library is read while it
is held), so napari stalls while the user watches the run start. :func:`warm_up` does
the same work once, on a background thread the Train dock starts when it opens; nothing
it does changes a run's results.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

# what the trainer imports as a run sets up (its data, networks, checkpoints, run folder)
RUN_MODULES = (
    "napari_medgan.training.trainer",
    "napari_medgan.training.checkpoint",  # safetensors
    "napari_medgan.training.bundle",
    "napari_medgan.training.losses",
    "napari_medgan.training.lock",
    "napari_medgan.training.memory",
    "napari_medgan.training.speed",
    "napari_medgan.training.rng",
    "napari_medgan.data.datasets",
    "napari_medgan.data.phantom",
    "napari_medgan.data.augment",
    "napari_medgan.data.superres",
    "napari_medgan.models",
    "napari_medgan.metrics.wasserstein",
    "napari_medgan.visualize",
    "yaml",
    "scipy.ndimage",  # phantoms, augmentations, label maps
)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def warm_up() -> None:
    """Import what a training run imports on its first use, and touch the lazily loaded
    parts: an optimizer built once, a PNG encoded once (TensorBoard's image summaries)."""
    import importlib

    import numpy as np
    import torch

    for name in RUN_MODULES:
        importlib.import_module(name)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    try:
        from torch.utils.tensorboard.summary import image  # with SummaryWriter's package
    except ImportError:  # tensorboard is optional: runs without it write no board
        return
    image("warm-up", np.zeros((4, 4), np.float32), dataformats="HW")


def _warm_up_quietly() -> None:
    try:
        warm_up()
    except Exception as exc:  # a run repeats this work and reports its own errors
        logger.debug("warm-up stopped early: %s", exc)


def warm_up_thread() -> threading.Thread | None:
    """The warm-up thread if one was started (the latency benchmark waits for it)."""
    return _thread


def warm_up_in_background() -> threading.Thread:
    """Start :func:`warm_up` on a daemon thread, once per process; the thread."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_warm_up_quietly, daemon=True,
                                       name="napari-medgan warm-up")
            _thread.start()
        return _thread
