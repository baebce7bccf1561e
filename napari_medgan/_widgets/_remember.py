"""Dock settings remembered between sessions: the fields a person sets once (model, steps,
learning rates, device, samples, seed, ...) come back the next time the dock opens.

They live in one JSON file beside napari's own settings file (``napari-medgan-docks.json``
in the folder of ``napari.settings.get_settings().config_path``), so ``NAPARI_CONFIG``
moves both: the tests point it at a temporary folder and never touch the user's files.
A change is written (atomically) half a second after the last edit, and when the dock
closes. A missing or unreadable file means the defaults; a remembered value the form
cannot take (a GPU this machine lacks) is left out.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from qtpy.QtWidgets import (
    QAbstractButton,
    QAbstractSpinBox,
    QComboBox,
    QDoubleSpinBox,
    QLineEdit,
    QSpinBox,
)

FILE_NAME = "napari-medgan-docks.json"
_SAVE_DELAY_MS = 500


def settings_file() -> Path | None:
    """Where the docks' settings are kept (None: nowhere, napari keeps no settings file)."""
    from napari.settings import get_settings

    config = get_settings().config_path
    return Path(config).parent / FILE_NAME if config else None


class _Store:
    """The settings file's content, read once, written back after changes."""

    def __init__(self, path: Path | None) -> None:
        self.path, self.values = path, {}
        self.timer = None
        if path is not None and path.is_file():
            try:
                values = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                values = {}  # unreadable: the defaults, and a good file at the next save
            self.values = values if isinstance(values, dict) else {}

    def dock(self, name: str) -> dict:
        section = self.values.get(name)
        if not isinstance(section, dict):
            section = self.values[name] = {}
        return section

    def changed(self) -> None:
        from qtpy.QtCore import QTimer

        if self.timer is None:
            self.timer = QTimer()
            self.timer.setSingleShot(True)
            self.timer.setInterval(_SAVE_DELAY_MS)
            self.timer.timeout.connect(self.save)
        self.timer.start()

    def save(self, *_) -> None:
        from napari_medgan.io.atomic import atomic_write_text

        if self.timer is not None:
            self.timer.stop()
        if self.path is None:
            return
        try:
            atomic_write_text(self.path, json.dumps(self.values, indent=1, sort_keys=True))
        except OSError:
            pass  # a read-only config folder: the settings are simply not remembered


_STORE: _Store | None = None


def store() -> _Store:
    global _STORE
    if _STORE is None:
        _STORE = _Store(settings_file())
    return _STORE


def flush() -> None:
    """Write pending changes now."""
    if _STORE is not None:
        _STORE.save()


def remember(dock, name: str, fields: dict) -> None:
    """Restore ``fields`` (key -> Qt input) of dock ``name`` from the settings file, in the
    order given (a model before its task), then keep the file up to date as they change."""
    section = store().dock(name)
    for key, widget in fields.items():
        if key in section:
            _set(widget, section[key])
    for key, widget in fields.items():
        _changed_signal(widget).connect(partial(_on_changed, section, key, widget))
    dock.destroyed.connect(flush)  # a module function: the dock itself is going


def _on_changed(section: dict, key: str, widget, *_) -> None:
    value = _get(widget)
    if section.get(key) != value:
        section[key] = value
        store().changed()


def _get(widget):
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        return widget.value()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    if isinstance(widget, QAbstractButton):
        return widget.isChecked()
    return _line_edit(widget).text()


def _set(widget, value) -> None:
    """Put ``value`` into ``widget`` when it is of the right kind and the widget takes it."""
    if isinstance(widget, QSpinBox) and isinstance(value, int) and not isinstance(value, bool):
        widget.setValue(value)
    elif isinstance(widget, QDoubleSpinBox) and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        widget.setValue(float(value))
    elif isinstance(widget, QComboBox) and isinstance(value, str):
        index = widget.findText(value)
        if index >= 0:
            widget.setCurrentIndex(index)
    elif isinstance(widget, QAbstractButton) and isinstance(value, bool):
        widget.setChecked(value)
    elif not isinstance(widget, (QAbstractSpinBox, QComboBox, QAbstractButton)) \
            and isinstance(value, str):
        _line_edit(widget).setText(value)


def _changed_signal(widget):
    if isinstance(widget, (QSpinBox, QDoubleSpinBox)):
        return widget.valueChanged
    if isinstance(widget, QComboBox):
        return widget.currentTextChanged
    if isinstance(widget, QAbstractButton):
        return widget.toggled
    return _line_edit(widget).textChanged


def _line_edit(widget) -> QLineEdit:
    """The text field of a QLineEdit or of a :class:`~._common.PathPicker`."""
    return widget if isinstance(widget, QLineEdit) else widget.edit
