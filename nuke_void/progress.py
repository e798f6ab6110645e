"""Job status (the server's JobStatus dict) -> what the progress bar and the node's status line say.

Pure Python, no nuke.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

STAGE_NAMES = {
    "upload": "Uploading",
    "quadmask": "Building the quadmask",
    "pass1": "Pass 1",
    "pass2": "Pass 2",
    "merge": "Merging at plate resolution",
    "download": "Downloading results",
}


def format_eta(seconds: Optional[float]) -> str:
    """'about 40 s', 'about 3 min', 'about 1 h 05 min'; empty when unknown."""
    if seconds is None or seconds < 0:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return "about %d s" % max(seconds, 1)
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return "about %d min" % minutes
    return "about %d h %02d min" % (minutes // 60, minutes % 60)


def stage_label(stage: Optional[str]) -> str:
    if not stage:
        return ""
    return STAGE_NAMES.get(stage, stage.replace("_", " ").capitalize())


def describe(status: Dict[str, Any]) -> Tuple[int, str]:
    """(percent 0..100, one-line message) for a status dict."""
    state = status.get("state", "")
    percent = int(round(100 * min(max(float(status.get("progress") or 0.0), 0.0), 1.0)))
    if state == "created":
        return 0, "Waiting for uploads"
    if state == "queued":
        position = status.get("queue_position")
        return 0, "Queued on the server" + (" (position %d)" % position if position else "")
    if state == "succeeded":
        return 100, "Finished"
    if state == "failed":
        return percent, "Failed: %s" % (status.get("error") or status.get("message") or "no reason given")
    if state == "cancelled":
        return percent, "Cancelled"
    parts = [stage_label(status.get("stage")) or "Running"]
    step, total = int(status.get("step") or 0), int(status.get("total_steps") or 0)
    if total:
        parts[0] += ": step %d/%d" % (step, total)
    eta = format_eta(status.get("eta_seconds"))
    if eta:
        parts.append(eta + " left")
    return percent, " - ".join(parts)


def transfer(label: str, done: int, total: int) -> Tuple[int, str]:
    """Progress of an upload or download in bytes."""
    percent = int(100 * done / total) if total else 0
    return percent, "%s: %.1f of %.1f MB" % (label, done / 1e6, total / 1e6)
