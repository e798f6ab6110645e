"""The `void` command: remove an object from a shot from the shell, with the same client and job spec as Nuke.

    void remove --plate 'shot.####.exr' --target 'roto.####.png' --frames 1001-1046 --prompt '...' --out DIR
    void remove --plate shot.mp4 --quadmask quadmask.mp4 --prompt '...' --out DIR   (a video: all its frames)
    void status JOB | void cancel JOB | void health

Inputs are image sequences (#### or %04d for the frame number) or video files (the server decodes video).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import validation, video_probe
from .client import DEFAULT_SERVER, JobCancelledError, JobFailed, VoidClient, VoidError
from .jobspec import MASK_MODES, PRESETS, SPEEDS, SpecError, build_spec, is_video

_PATTERN = re.compile(r"#+|%0?\d*d")


class UsageError(Exception):
    pass


def parse_frames(text):
    # type: (str) -> Tuple[int, int]
    m = re.match(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+))?\s*$", text or "")
    if not m:
        raise UsageError("--frames '%s' is not FIRST-LAST (e.g. 1001-1046) or one frame number" % text)
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    if last < first:
        raise UsageError("--frames %s ends before it starts" % text)
    return first, last


def expand_input(flag, value, first, last):
    # type: (str, str, Optional[int], Optional[int]) -> List[str]
    """A sequence pattern -> one existing file per frame; a video or single image -> itself. Without a frame range
    (first and last None: every frame of a video plate) only a video file will do."""
    m = _PATTERN.search(value)
    if first is None or last is None:
        if m or not is_video(value):
            raise UsageError("%s: %s is not a video file: give --frames FIRST-LAST (only a video plate and video "
                             "mattes can go without it)" % (flag, value))
    elif m:
        token = m.group(0)
        files = []
        for f in range(first, last + 1):
            number = "%0*d" % (len(token), f) if token.startswith("#") else token % f
            files.append(value[: m.start()] + number + value[m.end():])
        missing = [p for p in files if not os.path.isfile(p)]
        if missing:
            raise UsageError("%s: %d of %d frames are missing, first %s" % (flag, len(missing), len(files), missing[0]))
        return files
    if not os.path.isfile(value):
        raise UsageError("%s: %s does not exist" % (flag, value))
    if not is_video(value) and first is not None and last != first:
        raise UsageError("%s: %s is one image for %d frames: use #### or %%04d where the frame number goes"
                         % (flag, value, last - first + 1))
    return [value]


def _duration(seconds):
    # type: (Optional[float]) -> str
    if seconds is None:
        return "--"
    seconds = int(seconds)
    return "%dh%02dm" % (seconds // 3600, seconds // 60 % 60) if seconds >= 3600 else "%dm%02ds" % (seconds // 60, seconds % 60)


class Bar(object):
    """One self-rewriting line on stderr (plain lines when stderr is not a terminal)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = ""
        self._last_time = 0.0

    def show(self, fraction, text):
        # type: (float, str) -> None
        width = 30
        filled = int(round(width * max(0.0, min(1.0, fraction))))
        line = "[%s%s] %3d%% %s" % ("#" * filled, "." * (width - filled), int(fraction * 100), text)
        now = time.time()
        if self.tty:
            self.stream.write("\r" + line.ljust(len(self._last)))
        elif line != self._last and (now - self._last_time > 2 or fraction >= 1):
            self.stream.write(line + "\n")
            self._last_time = now
        self._last = line
        self.stream.flush()

    def done(self):
        if self.tty and self._last:
            self.stream.write("\n")
        self._last = ""

    def transfer(self, verb):
        def progress(done, total, name):
            self.show(float(done) / total if total else 1.0, "%s %s (%.1f of %.1f MB)" % (verb, name, done / 1e6, total / 1e6))
        return progress

    def job(self, status):
        # type: (dict) -> None
        state = status["state"]
        if state == "queued":
            text = "queued (position %s)" % status.get("queue_position")
        elif state == "running":
            text = "%s %d/%d  ETA %s" % (status.get("stage") or "starting", status.get("step", 0),
                                         status.get("total_steps", 0), _duration(status.get("eta_seconds")))
        else:
            text = state
        self.show(float(status.get("progress") or 0.0), text)


def cmd_remove(args, client):
    # type: (argparse.Namespace, VoidClient) -> int
    if args.frames is None and not (is_video(args.plate) and not _PATTERN.search(args.plate)):
        raise UsageError("--frames FIRST-LAST is needed for an image sequence plate (e.g. 1001-1046); a video plate "
                         "without it uses all its frames")
    first, last = parse_frames(args.frames) if args.frames is not None else (None, None)
    plate = expand_input("--plate", args.plate, first, last)
    local = {"plate": plate}  # type: Dict[str, List[str]]
    mask_mode = args.mask_mode or ("quadmask" if args.quadmask else "manual" if args.affected else "none")
    for role in ("target", "affected", "quadmask"):
        value = getattr(args, role)
        if value:
            local[role] = expand_input("--" + role, value, first, last)

    def channel(role, given):
        # type: (str, Optional[str]) -> str
        return given or ("red" if local.get(role) and is_video(local[role][0]) else "alpha")

    spec = build_spec(
        first, last, args.prompt, plate=plate, target=local.get("target"), affected=local.get("affected"),
        quadmask=local.get("quadmask"), target_channel=channel("target", args.target_channel),
        affected_channel=channel("affected", args.affected_channel), mask_mode=mask_mode, preset=args.preset,
        passes=args.passes, seed=args.seed, speed=args.speed, step_cache=args.step_cache, fp8_matmul=args.fp8_matmul,
        input_encoding=args.input_encoding or ("linear" if plate[0].lower().endswith(".exr") else "srgb"),
        fps=args.fps, client="void cli on %s" % platform.node(),
    )
    preflight(client, local, first, last)
    bar = Bar()
    job_id = client.submit(spec, local, progress=bar.transfer("uploading"))
    bar.done()
    print("job %s started on %s" % (job_id, client.api), file=sys.stderr)
    try:
        final = client.wait(job_id, on_status=bar.job, poll=args.poll)
    except KeyboardInterrupt:
        bar.done()
        print("void: interrupted: cancelling job %s" % job_id, file=sys.stderr)
        client.cancel(job_id)
        return 130
    finally:
        bar.done()
    paths = client.download_results(job_id, args.out, progress=bar.transfer("downloading"))
    bar.done()
    for note in final.get("notes") or []:
        print("note: %s" % note, file=sys.stderr)
    frames = [p for p in paths if p.endswith(".exr")]
    print("%d frames in %s (%s)" % (len(frames), args.out, final.get("pipeline_label")))
    return 0


def preflight(client, local, first, last):
    # type: (VoidClient, Dict[str, List[str]], Optional[int], Optional[int]) -> None
    """The server's limits (/v1/health) checked before anything is uploaded: a plate the server would refuse is
    refused here, not after minutes of upload. A server that reports no limits is not checked."""
    limits = client.health().get("limits") or {}
    plate = local["plate"][0]
    # a video's header (MP4 / QuickTime); another container is checked by the server when the job starts
    count, width, height = (video_probe.video_facts(plate) if is_video(plate) else None) or (0, 0, 0)
    if first is None and count:  # a whole video: its own frames
        first, last = 1, count
    found = []  # type: List[str]
    if first is not None and last is not None:
        found += validation.server_limit_problems(first, last, width, height, limits, source=os.path.basename(plate),
                                                  reformat="Scale it down")
    found += validation.upload_size_problems(sorted({p for paths in local.values() for p in paths}), limits)
    if found:
        raise UsageError(validation.format_problems(found))


def cmd_status(args, client):
    # type: (argparse.Namespace, VoidClient) -> int
    status = client.status(args.job)
    status.pop("spec", None)
    print(json.dumps(status, indent=2, sort_keys=True))
    return 0


def cmd_cancel(args, client):
    # type: (argparse.Namespace, VoidClient) -> int
    status = client.cancel(args.job)
    print("job %s: %s" % (args.job, status["state"] if status["state"] != "running" else "cancelling"))
    return 0


def cmd_health(args, client):
    # type: (argparse.Namespace, VoidClient) -> int
    health = client.health()
    print(json.dumps(health, indent=2, sort_keys=True))
    return 0 if health.get("ready") else 1


def build_parser():
    # type: () -> argparse.ArgumentParser
    p = argparse.ArgumentParser(prog="void", description="VOID object removal from the shell.")
    p.add_argument("--server", default=os.environ.get("VOID_SERVER") or DEFAULT_SERVER,
                   help="server URL (default $VOID_SERVER or %s)" % DEFAULT_SERVER)
    p.add_argument("--token", default=None, help="server token (default $VOID_TOKEN)")
    sub = p.add_subparsers(dest="command")
    sub.required = True

    r = sub.add_parser("remove", help="remove an object from a shot")
    r.add_argument("--plate", required=True, help="'shot.####.exr', 'shot.%%04d.png' or a video file")
    r.add_argument("--target", help="roto matte of the object to remove (sequence or video)")
    r.add_argument("--affected", help="matte of what the object affects (shadows, reflections): mask mode manual")
    r.add_argument("--quadmask", help="a ready 0/63/127/255 quadmask; replaces --target/--affected")
    r.add_argument("--frames", help="FIRST-LAST, e.g. 1001-1046 (a video's frames count from FIRST); "
                                    "without it a video plate uses all its frames, numbered from 1")
    r.add_argument("--prompt", required=True, help="the clean scene, e.g. 'an empty street at dusk'")
    r.add_argument("--out", required=True, help="folder for clean.####.exr and manifest.json")
    r.add_argument("--mask-mode", choices=MASK_MODES)
    r.add_argument("--preset", choices=sorted(PRESETS), default="reference")
    r.add_argument("--passes", type=int, choices=(1, 2))
    r.add_argument("--speed", choices=list(SPEEDS), default="lossless",
                   help="lossy speed-ups: fast = step cache, fastest = step cache + float8 + fewer steps")
    r.add_argument("--step-cache", type=float, metavar="THRESHOLD",
                   help="first-block step cache threshold (lossy; 0 = off, 0.05-0.2 useful); overrides --speed")
    r.add_argument("--fp8-matmul", action="store_true", default=None,
                   help="transformer linears in float8 (lossy; GPU of compute capability 8.9+); overrides --speed")
    r.add_argument("--seed", type=int, default=42)
    r.add_argument("--fps", type=float, default=24.0)
    r.add_argument("--target-channel", help="matte channel (default alpha; red for video)")
    r.add_argument("--affected-channel", help="matte channel (default alpha; red for video)")
    r.add_argument("--input-encoding", choices=("linear", "srgb"), help="default: linear for EXR, srgb otherwise")
    r.add_argument("--poll", type=float, default=1.0, help=argparse.SUPPRESS)
    r.set_defaults(func=cmd_remove)
    for name, func, text in (("status", cmd_status, "a job's status"), ("cancel", cmd_cancel, "cancel a job")):
        s = sub.add_parser(name, help=text)
        s.add_argument("job")
        s.set_defaults(func=func)
    sub.add_parser("health", help="the server's health").set_defaults(func=cmd_health)
    return p


def main(argv=None):
    # type: (Optional[Sequence[str]]) -> int
    args = build_parser().parse_args(argv)
    client = VoidClient(args.server, token=args.token)
    try:
        return args.func(args, client)
    except (UsageError, SpecError) as e:
        print("void: %s" % e, file=sys.stderr)
        return 2
    except (JobFailed, JobCancelledError) as e:
        print("void: %s" % e, file=sys.stderr)
        return 1
    except VoidError as e:
        where = " (field %s)" % e.field if e.field else ""
        print("void: %s%s" % (e, where), file=sys.stderr)
        if e.job_id:
            print("void: job %s was created; `void status %s` shows it" % (e.job_id, e.job_id), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
