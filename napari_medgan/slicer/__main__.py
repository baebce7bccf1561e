"""``python -m napari_medgan.slicer install DIR`` (the ``napari-medgan-slicer`` command)."""

from napari_medgan.slicer.install import main

if __name__ == "__main__":
    raise SystemExit(main())
