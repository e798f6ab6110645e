"""Checks run before anything is rendered or sent, with messages a compositor understands.

Pure Python: the node gathers the facts from Nuke into `Facts`; `problems()` lists everything wrong at once, so
the artist fixes the script in one go instead of pressing Remove five times.
"""
from __future__ import annotations

import os
from typing import List, Mapping, Optional, Sequence

from . import channels, jobspec

try:
    from dataclasses import dataclass, field
except ImportError:  # pragma: no cover - Python 3.7+ always has dataclasses
    raise


@dataclass
class Facts:
    source_connected: bool
    target_connected: bool
    affected_connected: bool
    mask_mode: str  # auto / manual / none
    input_first: Optional[int]  # the Source input's frame range
    input_last: Optional[int]
    first: int  # the range to process
    last: int
    prompt: str
    server: str
    output_root: Optional[str]  # None: script never saved and no folder set
    target_channel: str = "rgba.alpha"
    target_channels: Sequence[str] = field(default_factory=list)  # channels the Target input has
    affected_channel: str = "rgba.alpha"
    affected_channels: Sequence[str] = field(default_factory=list)
    busy: bool = False  # a job of this node is still running
    speed: str = "lossless"  # the Speed knob: a key of jobspec.SPEEDS
    memory_mode: str = "auto"  # the GPU memory knob


def _channel_problem(role: str, wanted: str, available: Sequence[str]) -> Optional[str]:
    try:
        name = channels.full_name(wanted)
    except ValueError as e:
        return "%s channel: %s" % (role, e)
    if available and name not in available:
        shown = ", ".join(sorted(available)[:12])
        return "The %s input has no channel %s (it has %s). Pick another %s channel." % (
            role, name, shown, role.lower())
    return None


STREAMING_MODES = ("sequential_offload",)  # the transformer's weights come to the GPU a layer at a time


def _speed_problem(speed: str, memory_mode: str) -> Optional[str]:
    if speed not in jobspec.SPEEDS:
        return "Speed '%s' is not one of %s: pick one on the VOID node's Speed knob." % (
            speed, ", ".join(jobspec.SPEEDS))
    if jobspec.SPEEDS[speed].get("fp8_matmul") and memory_mode in STREAMING_MODES:
        return ("Speed '%s' uses float8 matrix work, which needs each model whole on the GPU while it runs: set "
                "GPU memory (Advanced tab) to auto, gpu, fp8 or model_offload, or pick Speed 'fast' or 'lossless'."
                % speed)
    return None


def problems(f: Facts) -> List[str]:
    found = []  # type: List[str]
    if f.busy:
        found.append("This VOID node is already working on a job: wait for it or press Cancel.")
    if not f.source_connected:
        found.append("Connect the plate to the Source input.")
    if not f.target_connected:
        found.append("Connect the roto of the object to remove to the Target input.")
    if f.mask_mode == "manual" and not f.affected_connected:
        found.append("Mask mode 'manual' needs a matte of the affected areas (shadows, reflections...) "
                     "in the Affected input, or choose mask mode 'auto' or 'none'.")
    if f.last < f.first:
        found.append("The frame range %d-%d ends before it starts." % (f.first, f.last))
    elif f.input_first is not None and f.input_last is not None and (
            f.first < f.input_first or f.last > f.input_last):
        found.append("Frames %d-%d are outside the Source input's range %d-%d: use the input range or change "
                     "the custom range." % (f.first, f.last, f.input_first, f.input_last))
    if not (f.prompt or "").strip():
        found.append("Describe the clean scene in the prompt, e.g. 'an empty street at dusk'.")
    if not (f.server or "").strip():
        found.append("Enter the VOID server address, e.g. http://gpu-box:8765.")
    elif not f.server.strip().lower().startswith(("http://", "https://")):
        found.append("The server address must start with http:// or https:// (got '%s')." % f.server.strip())
    if not f.output_root:
        found.append("Save the script first (results go beside it), or set an output folder.")
    p = _speed_problem(f.speed, f.memory_mode)
    if p:
        found.append(p)
    if f.target_connected:
        p = _channel_problem("Target", f.target_channel, f.target_channels)
        if p:
            found.append(p)
    if f.mask_mode == "manual" and f.affected_connected:
        p = _channel_problem("Affected", f.affected_channel, f.affected_channels)
        if p:
            found.append(p)
    return found


def empty_matte(first: int, last: int, channel: str) -> str:
    return ("The Target matte (%s) is empty on every frame of %d-%d: check that the roto covers the object "
            "and that the Target channel is right." % (channel, first, last))


def server_limit_problems(first: int, last: int, width: int, height: int, limits: Mapping[str, float],
                          source: str = "The Source", reformat: str = "Reformat it down before the VOID node") -> List[str]:
    """What the server's /v1/health limits refuse in this job (frames first..last of a width x height Source), found
    before anything is rendered or sent. Limits a server does not report are not checked; a size of 0 is unknown.
    `source` and `reformat` word the size problem for where it is read (the node, the `void` command)."""
    found = []  # type: List[str]
    frames = last - first + 1
    most = limits.get("max_frames")
    if most is not None and frames > int(most):
        found.append("Frames %d-%d are %d frames; this server takes at most %d per job. Split the range into shots "
                     "of %d frames or fewer, or ask for a larger --max-frames." % (first, last, frames, int(most),
                                                                                 int(most)))
    side = limits.get("max_resolution")
    if side is not None and width and height and max(width, height) > int(side):
        found.append("%s is %dx%d; this server takes at most %d pixels on the longest side. %s, or ask for a "
                     "larger --max-resolution." % (source, width, height, int(side), reformat))
    return found


def upload_size_problems(paths: Sequence[str], limits: Mapping[str, float]) -> List[str]:
    """Files over the server's per-file upload limit (max_upload_mb), found before any upload starts."""
    most = limits.get("max_upload_mb")
    if most is None:
        return []
    found = []  # type: List[str]
    for path in paths:
        size = os.path.getsize(path) / 2.0 ** 20
        if size > float(most):
            found.append("%s is %.4g MB; this server takes files of at most %.4g MB. Send a shorter clip or an image "
                         "sequence, or ask for a larger --max-upload-mb." % (os.path.basename(path), size, float(most)))
    return found


def server_unreachable(url: str, detail: str = "") -> str:
    msg = "Cannot reach the VOID server at %s. Is it running, and is the address right?" % url
    return msg + (" (%s)" % detail if detail else "")


def server_not_ready(url: str, problem: Optional[str]) -> str:
    return "The VOID server at %s is up but not ready: %s" % (url, problem or "no reason given")


def format_problems(found: Sequence[str]) -> str:
    if len(found) == 1:
        return found[0]
    return "VOID can't start yet:\n\n" + "\n".join("- " + p for p in found)
