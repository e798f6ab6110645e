"""PySide6 (Nuke 16+) or PySide2 (Nuke 13-15) behind one import: `from nuke_void.qt import QtCore, QtGui, QtWidgets`.

The node itself needs no Qt (knobs, nuke.ProgressTask and nuke.message cover it); this is the one place any
future panel imports Qt from.
"""
from __future__ import annotations

try:
    from PySide6 import QtCore, QtGui, QtWidgets  # noqa: F401

    BINDING = "PySide6"
except ImportError:
    from PySide2 import QtCore, QtGui, QtWidgets  # type: ignore[no-redef]  # noqa: F401

    BINDING = "PySide2"

__all__ = ["QtCore", "QtGui", "QtWidgets", "BINDING"]
