"""Plate and mattes out to EXR through temporary Write nodes that are deleted afterwards.

Runs on Nuke's main thread (nuke.execute shows Nuke's own progress bar and Cancel). The user's script is left as
it was: proxy mode, selection, undo history and the script's modified flag are restored, the Writes removed.
"""
from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import nuke

from . import channels, exr_probe

# Plate: scene-linear working-space values untouched (raw), full float. Mattes: one channel, half, ZIP per line.
PLATE = {"channels": "rgb", "datatype": "32 bit float", "compression": "Zip (16 scanlines)"}
MATTE = {"datatype": "16 bit half", "compression": "Zip (1 scanline)"}


@contextlib.contextmanager
def script_untouched(group) -> Iterator[None]:
    """Full resolution (proxy off), no undo entries, and selection / modified flag restored afterwards."""
    root = nuke.root()
    was_modified = root.modified()
    proxy = bool(root["proxy"].value())
    selected = [n for n in group.nodes() if n.isSelected()]
    nuke.Undo.disable()
    try:
        if proxy:
            root["proxy"].setValue(False)  # Writes render at the active scale; VOID needs the full plate
        with group:
            yield
    finally:
        if proxy:
            root["proxy"].setValue(True)
        for n in group.nodes():
            n.setSelected(any(n is s for s in selected))
        nuke.Undo.enable()
        root.setModified(was_modified)


def frame_pattern(folder: str, role: str) -> str:
    return os.path.join(folder, "%s.%%04d.exr" % role).replace("\\", "/")


def frame_files(pattern: str, first: int, last: int) -> List[str]:
    return [pattern % f for f in range(first, last + 1)]


def render_inputs(node, first: int, last: int, folder: str,
                  sources: Sequence[Tuple[str, int, Optional[str]]]) -> Dict[str, List[str]]:
    """Render each (role, input index, matte channel or None for the plate) of the VOID `node` for first..last
    into `folder`; returns role -> frame files. Raises RuntimeError (Nuke's) on render errors or Cancel."""
    group = node.parent() or nuke.root()
    files = {}  # type: Dict[str, List[str]]
    writes = []
    with script_untouched(group):
        try:
            for role, index, channel in sources:
                options = dict(PLATE) if channel is None else dict(MATTE, channels=channels.write_channels(channel))
                pattern = frame_pattern(folder, role)
                write = nuke.nodes.Write(file=pattern, file_type="exr", raw=True, create_directories=True,
                                         **options)
                write.setInput(0, node.input(index))
                writes.append(write)
                files[role] = frame_files(pattern, first, last)
            nuke.executeMultiple(writes, ((first, last, 1),), nuke.views())
        finally:
            for write in writes:
                nuke.delete(write)
    return files


def matte_has_signal(files: Sequence[str], channel: str) -> Optional[bool]:
    """True if some frame's matte is above 0.5 somewhere, False if none is, None if the files can't be checked."""
    name = channels.exr_channel(channel)
    try:
        return any(exr_probe.channel_has_signal(path, name) for path in files)
    except exr_probe.UnsupportedExr:
        return None
