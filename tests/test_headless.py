"""The headless install: ``pip install napari-medgan`` (no extras) trains, generates and runs
under ``torchrun`` in an environment where napari and Qt do not exist.

How it is tested, and why this way. A real, separate virtual environment is built from what
the core install would hold: ``python -m venv --without-pip`` from this interpreter, and in
its site-packages a link to every distribution ``pip install napari-medgan`` pulls in, i.e.
``install_requires`` from ``setup.cfg`` and, recursively, their own requirements read from the
installed metadata (markers evaluated, no extras), plus this package's source. Links, not
copies, and nothing downloaded: it takes a second. In that environment ``find_spec`` finds
no napari, Qt binding, qtpy or magicgui, so a CLI training run (and one under ``torchrun``)
that succeeds there proves they are not needed, not merely that they were not imported; and
the dependency walk fails first if a core requirement itself pulls a GUI package in.

The alternatives test less: ``venv --system-site-packages`` would see PyQt6 and napari from
the main environment, and an import blocker inside the main environment would not notice a
core dependency that drags Qt in through its own requirements. What this does not test is
pip's resolver against the package index (no network in tests); the requirement list it
reads is the one that index install would resolve.
"""

from __future__ import annotations

import configparser
import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import napari_medgan

REPO = Path(__file__).resolve().parents[1]
#: Top-level modules a headless environment must not have.
GUI_MODULES = ("napari", "PyQt5", "PyQt6", "PySide2", "PySide6", "qtpy", "magicgui", "superqt",
               "vispy", "npe2", "app_model")
TINY = ["--data", "phantom", "--phantom-count", "3", "--phantom-size", "16", "--patch-size", "16",
        "--channels", "8", "--latent-dim", "16", "--batch-size", "2", "--device", "cpu",
        "--checkpoint-every", "2", "--preview-every", "2", "--log-every", "1",
        "--memory-check", "off"]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_gui(dist_name: str) -> bool:
    name = _canonical(dist_name)
    return (name.startswith(("napari", "pyqt", "pyside"))
            or name in {"qtpy", "magicgui", "superqt", "vispy", "npe2", "app-model"})


def core_requirements() -> list[Requirement]:
    """``install_requires`` of setup.cfg: what ``pip install napari-medgan`` asks for."""
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines()
    return [Requirement(line.strip()) for line in lines if line.strip()
            and not line.strip().startswith("#")]


def requirement_closure(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """Every installed distribution the requirements need, recursively (markers evaluated
    for this interpreter; an extra's requirements only where a requirement names it)."""
    found: dict[str, metadata.Distribution] = {}
    extras_done: dict[str, set[str]] = {}
    todo = [(r, "") for r in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = _canonical(req.name)
        wanted = set(req.extras) | {""}
        if wanted <= extras_done.get(key, set()):
            continue
        try:
            dist = found.get(key) or metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"{req.name} (needed by the core install) is not installed here")
        found[key] = dist
        new = wanted - extras_done.get(key, set())
        extras_done.setdefault(key, set()).update(new)
        for text in dist.requires or []:
            sub = Requirement(text)
            todo += [(sub, e) for e in sorted(new)]
    return found


def build_headless_env(folder: Path, dists: dict[str, metadata.Distribution]) -> Path:
    """A venv whose site-packages links exactly ``dists`` and napari_medgan's source."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    for name, dist in sorted(dists.items()):
        files = dist.files
        assert files is not None, f"{name}: no RECORD; cannot tell which files it installed"
        for top in sorted({f.parts[0] for f in files} - {"..", "__pycache__"}):
            target, link = Path(dist.locate_file(top)), site / top
            if target.exists() and not os.path.lexists(link):
                link.symlink_to(target, target_is_directory=target.is_dir())
    (site / "napari_medgan").symlink_to(Path(napari_medgan.__file__).parent, True)
    return python


DRIVER = """
import importlib.util, json, sys
gui, argv = json.loads(sys.argv[1]), json.loads(sys.argv[2])
findable = [m for m in gui if importlib.util.find_spec(m) is not None]
from napari_medgan.cli import main
import napari_medgan.slicer.synthesize, napari_medgan.slicer.install
train = main(argv["train"])
generate = main(argv["generate"])
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(gui))
print("RESULT " + json.dumps({"findable": findable, "train": train, "generate": generate,
                              "loaded": loaded}))
"""


@pytest.fixture(scope="module")
def headless_python(tmp_path_factory):
    requirements = core_requirements()
    assert not [r.name for r in requirements if _is_gui(r.name)], "install_requires has GUI"
    dists = requirement_closure(requirements)
    gui = sorted(name for name in dists if _is_gui(name))
    assert not gui, f"the core install pulls in {gui}"
    return build_headless_env(tmp_path_factory.mktemp("headless") / "venv", dists)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", OMP_NUM_THREADS="1")
    return env


def test_core_trains_and_generates_without_qt(headless_python, tmp_path):
    run, out = tmp_path / "run", tmp_path / "synth"
    argv = {"train": ["train", *TINY, "--steps", "2", "--out", str(run)],
            "generate": ["generate", str(run), "--n", "1", "--out", str(out)]}
    proc = subprocess.run([str(headless_python), "-c", DRIVER, json.dumps(GUI_MODULES),
                           json.dumps(argv)], capture_output=True, text=True, cwd=tmp_path,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["findable"] == [], "GUI packages are importable in the headless venv"
    assert (result["train"], result["generate"]) == (0, 0), proc.stderr[-3000:]
    assert result["loaded"] == []
    assert sorted(p.name for p in out.iterdir()) == ["synthetic_000.nii.gz"]


def test_torchrun_trains_without_qt(headless_python, tmp_path):
    run = tmp_path / "ddp"
    cmd = [str(headless_python), "-m", "torch.distributed.run", "--standalone",
           "--nproc_per_node=1", "-m", "napari_medgan", "train", *TINY, "--steps", "1",
           "--out", str(run)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=_env(),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "checkpoints").is_dir()
