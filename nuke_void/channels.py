"""Nuke channel names <-> what the Write node writes, what the EXR file holds and what the job spec names.

Pure Python. Nuke writes `rgba.red/green/blue/alpha` to EXR as R, G, B, A and any other `layer.chan` as is
(Foundry NDK example ExrChannelNameToNuke.cpp describes the reverse mapping on reading).
"""
from __future__ import annotations

from typing import Tuple

_RGBA = {"red": "R", "green": "G", "blue": "B", "alpha": "A"}
_SHORT = {"r": "red", "g": "green", "b": "blue", "a": "alpha"}


def split_channel(name: str) -> Tuple[str, str]:
    """'rgba.alpha' -> ('rgba', 'alpha'); a bare 'alpha' or 'a' means the rgba layer."""
    name = (name or "").strip()
    if not name:
        raise ValueError("No channel given: use e.g. rgba.alpha.")
    if "." not in name:
        chan = _SHORT.get(name.lower(), name.lower())
        if chan not in _RGBA:
            raise ValueError("'%s' is not a channel name: use layer.channel, e.g. rgba.alpha or mask.a." % name)
        return "rgba", chan
    layer, chan = name.split(".", 1)
    if layer == "rgba":
        chan = _SHORT.get(chan, chan)
    if not layer or not chan:
        raise ValueError("'%s' is not a channel name: use layer.channel, e.g. rgba.alpha." % name)
    return layer, chan


def full_name(name: str) -> str:
    return "%s.%s" % split_channel(name)


def write_channels(name: str) -> str:
    """The Write node's `channels` value that writes `name`: just alpha for rgba.alpha (a Roto over a plate
    would otherwise send the whole plate again), the whole layer otherwise."""
    layer, chan = split_channel(name)
    if layer == "rgba" and chan == "alpha":
        return "alpha"
    return layer


def exr_channel(name: str) -> str:
    """The channel's name inside the EXR file Nuke writes."""
    layer, chan = split_channel(name)
    if layer == "rgba" and chan in _RGBA:
        return _RGBA[chan]
    return "%s.%s" % (layer, chan)


def spec_channel(name: str) -> str:
    """The channel as the job spec names it ('alpha', 'red'... or the EXR channel name)."""
    layer, chan = split_channel(name)
    if layer == "rgba" and chan in _RGBA:
        return chan
    return exr_channel(name)


def from_exr(name: str) -> str:
    """An EXR channel name as Nuke shows it once read: R -> rgba.red, pass1.R -> pass1.red, quadmask.remove as is."""
    rgba = {"R": "red", "G": "green", "B": "blue", "A": "alpha"}
    if name in rgba:
        return "rgba." + rgba[name]
    layer, _, chan = name.rpartition(".")
    if not layer:
        return "other." + name
    return "%s.%s" % (layer, rgba.get(chan, chan))
