"""What init.py and menu.py run: the gizmo folder on the plugin path, and the Nodes > VOID menu entry.

init.py runs in every session (GUI, terminal, render farm) so saved scripts find the gizmo everywhere; menu.py
runs with a GUI only. A failure here prints a traceback and never stops Nuke from starting.
"""
from __future__ import annotations

import os
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGIN_ROOT = os.path.dirname(HERE)
GIZMOS = os.path.join(PLUGIN_ROOT, "gizmos")
SHORTCUT = "Alt+Shift+V"


def init() -> None:
    try:
        import nuke

        nuke.pluginAddPath(GIZMOS, addToSysPath=False)
    except Exception:  # noqa: BLE001 - a broken install must not block Nuke's start
        traceback.print_exc()


def create_node():
    import nuke

    return nuke.createNode("VOID")


def menu() -> None:
    try:
        import nuke

        void_menu = nuke.menu("Nodes").addMenu("VOID", icon="VOID.png")
        void_menu.addCommand("VOID", create_node, SHORTCUT, icon="VOID.png",
                             tooltip="Remove an object and its effects (shadows, reflections) with VOID")
    except Exception:  # noqa: BLE001
        traceback.print_exc()
