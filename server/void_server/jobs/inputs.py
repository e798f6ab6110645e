"""A spec's inputs -> files on this server -> FrameSources, with every problem named by its spec field."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..api.models import InputRole, InputSpec, JobSpec, MaskMode
from ..media.readers import is_display_referred, open_clip, video_frame_count
from ..media.sequences import MediaError, expand_pattern, is_pattern, kind_of
from ..pipelines.base import FrameSource, PipelineInputs, PipelineSettings
from .errors import Invalid
from .layout import JobFiles

PURPOSE = {InputRole.plate: "plate", InputRole.target: "matte", InputRole.affected: "matte", InputRole.quadmask: "quadmask"}


def used_roles(spec: JobSpec) -> List[InputRole]:
    """The inputs this spec's mask mode reads (an affected matte outside manual mode is ignored)."""
    roles = [InputRole.plate]
    if spec.mask_mode == MaskMode.quadmask:
        roles.append(InputRole.quadmask)
    else:
        roles.append(InputRole.target)
        if spec.mask_mode == MaskMode.manual:
            roles.append(InputRole.affected)
    return roles


VIDEO_FIRST_FRAME = 1  # a job without a frame range numbers its plate video's frames from here


def frame_numbers(spec: JobSpec, count: Optional[int] = None) -> List[int]:
    """The job's frame numbers: its range, or without one the plate video's `count` frames from 1."""
    if spec.frames is not None:
        return list(range(spec.frames.first, spec.frames.last + 1))
    if count is None:
        raise ValueError("a job without a frame range has the plate video's frames: pass their count")
    return list(range(VIDEO_FIRST_FRAME, VIDEO_FIRST_FRAME + count))


def _not_one_video(item: InputSpec) -> Optional[str]:
    """None when the input is one video file (upload or path); else what it is, for the error message."""
    names = item.files if item.source == "upload" else [item.path or ""]
    if len(names) != 1:
        return "%d files" % len(names)
    if item.source == "path" and is_pattern(names[0]):
        return "the sequence '%s'" % names[0]
    try:
        kind = kind_of(names[0])
    except MediaError:
        return None  # the file type is refused on its own, with the supported types
    return None if kind == "video" else "the %s '%s'" % ("EXR" if kind == "exr" else "image", names[0])


def check_whole_video(spec: JobSpec) -> None:
    """Without a frame range the job is every frame of the plate video: every used input must be one video file."""
    if spec.frames is not None:
        return
    for role in used_roles(spec):
        what = _not_one_video(spec.inputs[role])
        if what is None:
            continue
        if role == InputRole.plate:
            raise Invalid("no frame range: a job without 'frames' uses every frame of its plate, which must then be one "
                          "video file, not %s: give frames {first, last} for an image sequence" % what, "frames")
        raise Invalid("no frame range: with 'frames' omitted every input must be one video file with the plate's frame "
                      "count, not %s: give frames {first, last} to use image sequences" % what,
                      "inputs.%s.%s" % (role.value, "files" if spec.inputs[role].source == "upload" else "path"))


MAX_NAME_BYTES = 255  # what Linux file systems take


def is_plain_name(name: str) -> bool:
    """A name that stays a file directly inside its folder: no separators, no '..', no hidden or device names."""
    return (bool(name) and name == os.path.basename(name) and not name.startswith(".") and "\\" not in name
            and not any(ord(c) < 32 or ord(c) == 127 for c in name) and len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME_BYTES)


def check_upload_names(spec: JobSpec) -> None:
    """Uploaded names become file names here: plain names only, no duplicates, one type, count = frames (or, without
    a frame range, one video file per used input)."""
    for role, item in spec.inputs.items():
        if item.source != "upload":
            continue
        field = "inputs.%s.files" % role.value
        for name in item.files:
            if not is_plain_name(name):
                raise Invalid("%r is not a plain file name (no folders, no leading dot, no control characters, "
                              "at most %d bytes)" % (name, MAX_NAME_BYTES), field)
        if len(set(item.files)) != len(item.files):
            raise Invalid("a file name is listed twice", field)
        try:
            kinds = {kind_of(n) for n in item.files}
        except MediaError as e:
            raise Invalid(str(e), field)
        if kinds == {"video"}:
            if len(item.files) != 1:
                raise Invalid("a video input is one file, not %d" % len(item.files), field)
        elif spec.frames is None:
            continue  # check_whole_video names the problem
        elif len(item.files) != spec.frames.count:
            raise Invalid("%d files for the %d frames %d-%d: one file per frame, in order"
                          % (len(item.files), spec.frames.count, spec.frames.first, spec.frames.last), field)
    check_whole_video(spec)


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    real = os.path.realpath(str(path))
    for root in roots:
        r = os.path.realpath(str(root))
        if real == r or real.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


def shared_paths(item: InputSpec, spec: JobSpec) -> List[Path]:
    assert item.path is not None
    if is_pattern(item.path):
        if spec.frames is None:
            raise MediaError("'%s' is a sequence: it needs the job's frame range ('frames')" % item.path)
        return [Path(p) for p in expand_pattern(item.path, frame_numbers(spec))]
    return [Path(item.path)]


def check_path_inputs(spec: JobSpec, allowed_roots: Sequence[Path]) -> None:
    """Path inputs: absolute, inside an allowed root, every frame's file present and readable."""
    for role, item in spec.inputs.items():
        if item.source != "path":
            continue
        field = "inputs.%s.path" % role.value
        if not allowed_roots:
            raise Invalid("this server reads no shared paths (start it with --allowed-root DIR); upload the files instead", field)
        if not os.path.isabs(item.path or ""):
            raise Invalid("'%s' is not an absolute path" % item.path, field)
        try:
            paths = shared_paths(item, spec)
            kind_of(str(paths[0]))
        except MediaError as e:
            raise Invalid(str(e), field)
        if len(paths) == 1 and kind_of(str(paths[0])) != "video" and spec.frames is not None and spec.frames.count != 1:
            raise Invalid("'%s' is one image for %d frames: use #### or %%04d for the frame number" % (item.path, spec.frames.count), field)
        for p in paths:
            if not _inside(p, allowed_roots):
                raise Invalid("%s is outside the server's allowed roots (%s)" % (p, ", ".join(map(str, allowed_roots))), field)
            if not p.is_file():
                raise Invalid("%s does not exist on the server" % p, field)
            if not os.access(str(p), os.R_OK):
                raise Invalid("%s is not readable by the server" % p, field)


def input_paths(spec: JobSpec, role: InputRole, files: JobFiles) -> List[Path]:
    item = spec.inputs[role]
    if item.source == "path":
        return shared_paths(item, spec)
    return [files.inputs(role.value) / name for name in item.files]


def missing_uploads(spec: JobSpec, files: JobFiles) -> Dict[str, List[str]]:
    missing = {}
    for role in used_roles(spec):
        item = spec.inputs[role]
        if item.source == "upload":
            absent = [n for n in item.files if not (files.inputs(role.value) / n).is_file()]
            if absent:
                missing[role.value] = absent
    return missing


def open_inputs(spec: JobSpec, files: JobFiles) -> Dict[InputRole, FrameSource]:
    """Every used input opened (headers read), counts and sizes checked against the plate. Without a frame range
    the plate video's frame count, read here, makes the job's frames (numbered from VIDEO_FIRST_FRAME)."""
    check_whole_video(spec)
    count = None
    if spec.frames is None:
        try:
            count = video_frame_count(input_paths(spec, InputRole.plate, files)[0])
        except MediaError as e:
            raise Invalid(str(e), "inputs.plate")
    frames = frame_numbers(spec, count)
    sources: Dict[InputRole, FrameSource] = {}
    for role in used_roles(spec):
        item = spec.inputs[role]
        try:
            sources[role] = open_clip(input_paths(spec, role, files), frames, PURPOSE[role], item.channel)
        except MediaError as e:
            whole = " (no frame range: the job is the plate video's %d frames)" % count if count is not None else ""
            raise Invalid(str(e) + whole, "inputs.%s" % role.value)
    plate = sources[InputRole.plate]
    for role, source in sources.items():
        if (source.width, source.height) != (plate.width, plate.height):
            raise Invalid("the %s is %dx%d but the plate is %dx%d: mattes must match the plate's size"
                          % (role.value, source.width, source.height, plate.width, plate.height), "inputs.%s" % role.value)
    return sources


def pipeline_inputs(spec: JobSpec, files: JobFiles, server_memory_mode: str, notes: List[str]) -> PipelineInputs:
    sources = open_inputs(spec, files)
    encoding = spec.input_encoding
    if encoding == "linear" and is_display_referred(input_paths(spec, InputRole.plate, files)):
        encoding = "srgb"
        notes.append("the plate is a PNG/TIFF/video file: treated as display-referred (sRGB)")
    settings = PipelineSettings(
        prompt=spec.prompt, passes=spec.passes, seed=spec.seed, steps_pass1=spec.steps_pass1,
        steps_pass2=spec.steps_pass2, guidance_pass2=spec.guidance_pass2, mask_mode=spec.mask_mode.value,
        roi=spec.roi, input_encoding=encoding, noise_mode=spec.noise_mode, affected_dilation=spec.affected_dilation,
        keep_pass1=spec.output.keep_pass1,
        memory_mode=server_memory_mode if spec.memory_mode == "auto" else spec.memory_mode, fps=spec.fps,
        step_cache=spec.step_cache, fp8_matmul=spec.fp8_matmul,
    )
    return PipelineInputs(
        plate=sources[InputRole.plate], settings=settings, workdir=files.workdir,
        target=sources.get(InputRole.target), affected=sources.get(InputRole.affected),
        quadmask=sources.get(InputRole.quadmask),
    )


def upload_role(spec: JobSpec, role: str, name: str) -> Optional[str]:
    """None when `name` is an expected upload of `role`, else what is wrong (for the error message)."""
    try:
        r = InputRole(role)
    except ValueError:
        return "'%s' is not an input role (plate, target, affected, quadmask)" % role
    item = spec.inputs.get(r)
    if item is None:
        return "this job has no %s input" % role
    if item.source != "upload":
        return "the %s input is read from a shared path, not uploaded" % role
    if name not in item.files:
        return "'%s' is not one of the %s files the spec lists" % (name, role)
    return None
