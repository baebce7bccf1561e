"""The Train dock's warm-up: the imports a fresh process's first run would make, made
before it (they hold the GIL and stall napari while the run sets up)."""

import subprocess
import sys

import pytest

# the first run's heavy imports: torch's optimizer machinery (dynamo, SymPy), TensorBoard and
# protobuf, Pillow (TensorBoard's images), SciPy, and the plugin's own training modules
HEAVY = ("torch._dynamo", "sympy", "tensorboard", "google.protobuf", "PIL", "scipy", "yaml",
         "safetensors", "napari_medgan")

RUN = """
import sys, tempfile
{warm}
from napari_medgan.config import RunConfig
before = set(sys.modules)
from napari_medgan.training.trainer import Trainer
run = RunConfig()
run.data.source, run.data.phantom_count, run.data.phantom_size = "phantom", 4, 16
run.data.patch_size, run.model.channels = 16, 8
run.train.steps, run.train.preview_every, run.train.device = 2, 2, "cpu"
run.out = tempfile.mkdtemp() + "/run"
for event in Trainer(run).run():
    pass
heavy = {heavy!r}
new = sorted(m for m in set(sys.modules) - before
             if any(m == h or m.startswith(h + ".") for h in heavy))
print(" ".join(new) or "-")
"""


def first_run_imports(warm: bool) -> list[str]:
    code = RUN.format(heavy=HEAVY, warm="from napari_medgan.training.warmup import warm_up; "
                      "warm_up()" if warm else "")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    line = out.stdout.strip().splitlines()[-1]
    return [] if line == "-" else line.split()


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warmed"])
def test_after_the_warm_up_a_first_run_imports_nothing_heavy(warm):
    imported = first_run_imports(warm)
    if warm:
        assert imported == []
    else:  # the same run in a cold process: what the warm-up takes off it
        assert "torch._dynamo" in imported and "napari_medgan.models" in imported


def test_the_warm_up_runs_once_per_process_in_the_background():
    from napari_medgan.training.warmup import warm_up_in_background, warm_up_thread

    thread = warm_up_in_background()
    assert thread.daemon and warm_up_thread() is thread
    assert warm_up_in_background() is thread
    thread.join(120)
    assert not thread.is_alive()
