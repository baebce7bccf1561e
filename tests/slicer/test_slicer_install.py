"""``napari-medgan-slicer install``: launcher texts, and refusing a file as the folder."""

from __future__ import annotations

import subprocess
import sys

from napari_medgan.slicer import get_modules
from napari_medgan.slicer.install import install, launcher_text, main

MODULE = get_modules()[0]


def test_posix_launcher_clears_slicer_python_and_restores_library_path(tmp_path):
    text = launcher_text(MODULE, "/opt/my env/bin/python",
                         {"LD_LIBRARY_PATH": "/usr/local/cuda/lib64"}, windows=False,
                         safe_path=True)
    assert text.startswith("#!/bin/sh\n")
    assert "unset PYTHONHOME PYTHONPATH PYTHONSTARTUP" in text
    assert "LD_LIBRARY_PATH=/usr/local/cuda/lib64; export LD_LIBRARY_PATH" in text
    assert "unset DYLD_LIBRARY_PATH" in text
    assert text.rstrip().endswith(
        f"exec '/opt/my env/bin/python' -P -m napari_medgan.slicer.{MODULE.name} \"$@\"")
    # the shell reads it: quoting holds for a path with a space
    script = tmp_path / "launcher"
    script.write_text(text.replace("exec ", "echo "))
    out = subprocess.run(["sh", str(script), "a b"], capture_output=True, text=True, check=True)
    assert out.stdout.split(" -P ")[0] == "/opt/my env/bin/python"


def test_windows_launcher_is_a_batch_file():
    text = launcher_text(MODULE, r"C:\envs\medgan\python.exe", {}, windows=True)
    assert text.startswith("@echo off\r\n") and "set PYTHONHOME=\r\n" in text
    assert text.endswith(f'"C:\\envs\\medgan\\python.exe" -m napari_medgan.slicer.'
                         f"{MODULE.name} %*\r\n")


def test_install_writes_bat_files_for_windows(tmp_path):
    launchers = install(tmp_path, python=sys.executable, environ={}, windows=True)
    assert sorted(p.name for p in launchers) == sorted(f"{m.launcher}.bat" for m in get_modules())
    assert (tmp_path / f"{MODULE.launcher}.xml").read_text() == MODULE.to_xml()


def test_install_refuses_a_file(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["install", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a folder" in err
