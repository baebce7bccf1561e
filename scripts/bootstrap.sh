#!/usr/bin/env bash
# Set up everything the demo and the test suite need, from a fresh clone:
# system packages for a virtual display (Xvfb + Mesa, only if missing and we are root),
# a virtual environment in .venv with the CPU build of torch pinned by constraints.txt,
# and this package installed in editable mode with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

APT_PACKAGES="xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libdbus-1-3 libfontconfig1
 libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1 libx11-xcb1"
if ! command -v Xvfb >/dev/null 2>&1; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "bootstrap: installing Xvfb and Mesa with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $APT_PACKAGES >/dev/null
    else
        echo "bootstrap: Xvfb not found; GUI tests need it (apt-get install xvfb libgl1-mesa-dri ...)" >&2
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# Torch first, pinned: an unpinned torch would pull the newest CUDA build (several GB).
"$VENV/bin/python" -m pip install -q -c constraints.txt torch
"$VENV/bin/python" -m pip install -q -c constraints.txt -e ".[testing]"
echo "bootstrap: ready ($("$VENV/bin/python" -c 'import torch, napari; print("torch", torch.__version__, "napari", napari.__version__)'))"
