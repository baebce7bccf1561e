"""``python -m napari_medgan`` (what ``torchrun -m napari_medgan`` runs)."""

from napari_medgan.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
