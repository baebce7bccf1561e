"""``napari-medgan-slicer install DIR``: a folder of launchers to add to Slicer's module paths.

For each module it writes a launcher, ``NapariMedGAN<Name>`` (``.bat`` on Windows), that
runs *this* Python environment's interpreter on ``-m napari_medgan.slicer.<name>``, and
``NapariMedGAN<Name>.xml`` beside it (Slicer reads that instead of running ``--xml``).

Why not point Slicer at the console scripts in the environment's ``bin/``: Slicer runs a
module with its own environment, where ``PYTHONHOME`` and ``PYTHONPATH`` name Slicer's
bundled Python and the library path Slicer's libraries, so another Python would start on
Slicer's standard library, or not at all. The launcher unsets both and restores the library
path of the shell this command ran in. And Slicer would run every executable in ``bin/``
(python, pip, napari, ...) with ``--xml`` to see whether it is a module.
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import sys
from pathlib import Path

from napari_medgan import __version__
from napari_medgan.io.atomic import atomic_write_text
from napari_medgan.slicer import get_modules

#: Variables Slicer sets for its own Python; meaningless (or fatal) for this interpreter.
CLEARED = ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP")
#: Library search paths, as they were where ``install`` ran (Slicer prepends its own).
RESTORED = ("LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH")


def launcher_text(module, python: str, environ: dict[str, str], windows: bool,
                  safe_path: bool = False) -> str:
    """The launcher script of ``module`` (a :class:`~napari_medgan.slicer.spec.CLIModule`).
    ``safe_path`` adds ``-P`` (Python 3.11+): Slicer's working folder is not put on
    ``sys.path``, so nothing there can shadow a package."""
    what = (f"3D Slicer CLI module '{module.title}' of napari-medgan {__version__}, "
            "written by napari-medgan-slicer install")
    target = ("-P " if safe_path else "") + f"-m napari_medgan.slicer.{module.name}"
    if windows:
        lines = ["@echo off", f"rem {what}", *(f"set {name}=" for name in CLEARED),
                 f'"{python}" {target} %*']
        return "\r\n".join(lines) + "\r\n"
    lines = ["#!/bin/sh", f"# {what}.",
             "# Runs this Python environment outside Slicer's Python settings.",
             "unset " + " ".join(CLEARED)]
    for name in RESTORED:
        if environ.get(name):
            lines.append(f"{name}={shlex.quote(environ[name])}; export {name}")
        else:
            lines.append(f"unset {name}")
    lines.append(f'exec {shlex.quote(python)} {target} "$@"')
    return "\n".join(lines) + "\n"


def install(folder: str | Path, python: str | None = None,
            environ: dict[str, str] | None = None, windows: bool | None = None) -> list[Path]:
    """Write every module's launcher and XML description into ``folder``; returns the
    launchers. ``python`` defaults to this interpreter, ``environ`` to this environment."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    python = python or sys.executable
    environ = dict(os.environ) if environ is None else environ
    windows = os.name == "nt" if windows is None else windows
    safe_path = python == sys.executable and sys.version_info >= (3, 11)
    launchers = []
    for module in get_modules():
        launcher = folder / (module.launcher + (".bat" if windows else ""))
        atomic_write_text(folder / f"{module.launcher}.xml", module.to_xml())
        atomic_write_text(launcher, launcher_text(module, python, environ, windows,
                                                    safe_path))
        launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        launchers.append(launcher)
    return launchers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="napari-medgan-slicer",
        description="3D Slicer CLI modules of napari-medgan. 'install DIR' writes their "
                    "launchers; add DIR in Slicer's Application Settings > Modules > "
                    "Additional module paths and restart Slicer.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    i = sub.add_parser("install", help="write the launchers and descriptions into a folder")
    i.add_argument("folder", type=Path, help="folder for Slicer's module paths (created)")
    sub.add_parser("list", help="the modules, their launchers and console scripts")
    args = parser.parse_args(argv)
    if args.command == "list":
        for module in get_modules():
            print(f"{module.launcher}\t{module.script}\t{module.title}")
        return 0
    try:
        launchers = install(args.folder)
    except OSError as exc:
        print(f"napari-medgan-slicer: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    for path in launchers:
        print(path)
    print(f"Add {args.folder.resolve()} in Slicer: Edit > Application Settings > Modules > "
          "Additional module paths, then restart Slicer (category 'napari-medgan').")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
