"""The fake's image engine: evaluates a small set of node classes with numpy and writes/reads real EXR files.

Images are dicts of Nuke channel name -> float32 (H, W) arrays, row 0 at the top (EXR order).
"""
from __future__ import annotations

import os
import re
from collections import namedtuple
from typing import Dict, List

import numpy as np
import OpenEXR

import nuke

Info = namedtuple("Info", "format first last channels")
Image = namedtuple("Image", "format planes")

_EXR_TO_NUKE = {"R": "rgba.red", "G": "rgba.green", "B": "rgba.blue", "A": "rgba.alpha"}
_NUKE_TO_EXR = {v: k for k, v in _EXR_TO_NUKE.items()}
_COMPRESSION = {
    "none": OpenEXR.NO_COMPRESSION, "Zip (1 scanline)": OpenEXR.ZIPS_COMPRESSION,
    "Zip (16 scanlines)": OpenEXR.ZIP_COMPRESSION, "PIZ Wavelet (32 scanlines)": OpenEXR.PIZ_COMPRESSION,
    "RLE": OpenEXR.RLE_COMPRESSION, "B44": OpenEXR.B44_COMPRESSION, "DWAA": OpenEXR.DWAA_COMPRESSION,
    "DWAB": OpenEXR.DWAB_COMPRESSION,
}
_SETS = {"rgb": ["rgba.red", "rgba.green", "rgba.blue"], "rgba": ["rgba.red", "rgba.green", "rgba.blue", "rgba.alpha"],
         "alpha": ["rgba.alpha"]}


def frame_path(pattern: str, frame: int) -> str:
    path = re.sub(r"%0?(\d*)d", lambda m: "%0*d" % (int(m.group(1) or 1), frame), pattern)
    return re.sub(r"#+", lambda m: "%0*d" % (len(m.group(0)), frame), path)


def exr_to_nuke(name: str) -> str:
    if name in _EXR_TO_NUKE:
        return _EXR_TO_NUKE[name]
    if "." in name:
        layer, _, chan = name.rpartition(".")
        return "%s.%s" % (layer, {"R": "red", "G": "green", "B": "blue", "A": "alpha"}.get(chan, chan))
    return "other." + name


def read_exr(path: str):
    with OpenEXR.File(path, separate_channels=True) as f:
        header = dict(f.header())
        planes = {exr_to_nuke(k): np.array(v.pixels, dtype=np.float32) for k, v in f.channels().items()}
    height, width = next(iter(planes.values())).shape
    fmt = nuke.Format(width, height, float(header.get("pixelAspectRatio", 1.0)))
    return fmt, planes


def _input(node, i):
    src = node.input(i)
    if src is None:
        raise RuntimeError("%s: input %d is not connected" % (node.name(), i))
    return src


def info(node) -> Info:
    cls = node.Class()
    root = nuke.root()
    if cls == "Read":
        first, last = node["first"].value(), node["last"].value()
        fmt, planes = read_exr(frame_path(node["file"].value(), first))
        return Info(fmt, first, last, sorted(planes))
    if cls == "Constant":
        fmt = node["format"].value() or root.format()
        return Info(fmt, root.firstFrame(), root.lastFrame(), list(_SETS["rgba"]))
    if cls == "Roto":
        if node.input(0) is not None:
            up = info(node.input(0))
            return Info(up.format, up.first, up.last, sorted(set(up.channels) | {"rgba.alpha"}))
        fmt = node["format"].value() or root.format()
        return Info(fmt, root.firstFrame(), root.lastFrame(), ["rgba.alpha"])
    if cls == "Input":
        group = node.parent()
        src = group.input(node["number"].value())
        if src is None:
            raise RuntimeError("%s: input %s of %s is not connected" % (node.name(), node.name(), group.name()))
        return info(src)
    if isinstance(node, nuke.Group) and cls not in ("Root",):
        out = [n for n in node.nodes() if n.Class() == "Output"]
        return info(_input(out[0], 0))
    if cls in ("Dot", "Output", "Write", "Shuffle2", "Merge2", "Switch"):
        up = info(_input(node, 0))
        channels = up.channels
        if cls == "Shuffle2":
            channels = sorted(set(up.channels) | set(dst for _, dst in _mappings(node)))
        return Info(up.format, up.first, up.last, channels)
    raise NotImplementedError("fake renderer cannot evaluate %s" % cls)


def _mappings(node):
    pairs = []
    for m in node["mappings"].value() or []:
        pairs.append((m[-2], m[-1]))
    return pairs


def _zeros(fmt):
    return np.zeros((fmt.height(), fmt.width()), np.float32)


def evaluate(node, frame: int) -> Image:
    cls = node.Class()
    if cls == "Read":
        first, last = node["first"].value(), node["last"].value()
        if not first <= frame <= last:
            frame = min(max(frame, first), last)  # before/after "hold"
        path = frame_path(node["file"].value(), frame)
        if not os.path.isfile(path):
            raise RuntimeError("%s: Read error: %s: No such file or directory" % (node.name(), path))
        fmt, planes = read_exr(path)
        return Image(fmt, planes)
    if cls == "Constant":
        fmt = info(node).format
        color = node["color"].value() or [0.0, 0.0, 0.0, 0.0]
        color = list(color) if isinstance(color, (list, tuple)) else [color] * 4
        return Image(fmt, {c: np.full((fmt.height(), fmt.width()), v, np.float32)
                           for c, v in zip(_SETS["rgba"], color)})
    if cls == "Roto":
        base = evaluate(node.input(0), frame) if node.input(0) is not None else None
        fmt = base.format if base else info(node).format
        planes = dict(base.planes) if base else {}
        alpha = _zeros(fmt)
        shape = node._fake.get("shape")
        if shape is not None:
            box = shape(frame)
            if box:
                x0, y0, x1, y1 = box  # Nuke coordinates: y up from the bottom
                h = fmt.height()
                alpha[max(h - y1, 0):max(h - y0, 0), max(x0, 0):max(x1, 0)] = 1.0
        planes["rgba.alpha"] = alpha
        return Image(fmt, planes)
    if cls == "Input":
        group = node.parent()
        return evaluate(group.input(node["number"].value()), frame)
    if isinstance(node, nuke.Group):
        out = [n for n in node.nodes() if n.Class() == "Output"]
        return evaluate(_input(out[0], 0), frame)
    if cls in ("Dot", "Output", "Write"):
        return evaluate(_input(node, 0), frame)
    if cls == "Switch":
        which = int(round(node["which"].value()))
        which = min(max(which, 0), node.inputs() - 1)
        return evaluate(_input(node, which), frame)
    if cls == "Shuffle2":
        src = evaluate(_input(node, 0), frame)
        planes = dict(src.planes)
        for a, b in _mappings(node):
            planes[b] = src.planes.get(a, _zeros(src.format)) if a not in ("black", "white") else (
                _zeros(src.format) + (1.0 if a == "white" else 0.0))
        return Image(src.format, planes)
    if cls == "Merge2":
        b = evaluate(_input(node, 0), frame)
        a = evaluate(_input(node, 1), frame)
        mix = float(node["mix"].value())
        op = node["operation"].value()
        out = dict(b.planes)
        alpha_a = a.planes.get("rgba.alpha", _zeros(a.format))
        for c in _SETS["rgba"]:
            pa, pb = a.planes.get(c, _zeros(a.format)), b.planes.get(c, _zeros(b.format))
            if op == "plus":
                merged = pa + pb
            elif op == "over":
                merged = pa + pb * (1 - alpha_a)
            else:
                raise NotImplementedError("fake Merge2 operation %s" % op)
            out[c] = pb * (1 - mix) + merged * mix
        return Image(b.format, out)
    raise NotImplementedError("fake renderer cannot evaluate %s" % cls)


def _channel_list(spec: str, available: List[str]) -> List[str]:
    if spec == "all":
        return sorted(available)
    if spec in _SETS:
        return list(_SETS[spec])
    if spec == "none":
        return []
    chans = [c for c in available if c.split(".")[0] == spec]
    if not chans:
        raise RuntimeError("Write: no channels in layer %s" % spec)
    return chans


def execute_write(node, frames: List[int]) -> None:
    pattern = node["file"].value()
    if not pattern:
        raise RuntimeError("%s: no filename set" % node.name())
    if node["file_type"].value() != "exr":
        raise NotImplementedError("the fake Write writes EXR only")
    half = node["datatype"].value() == "16 bit half"
    compression = _COMPRESSION[node["compression"].value()]
    proxy = bool(nuke.root()["proxy"].value())
    for frame in frames:
        image = evaluate(node, frame)
        names = _channel_list(node["channels"].value(), list(image.planes))
        path = frame_path(pattern, frame)
        folder = os.path.dirname(path)
        if not os.path.isdir(folder):
            if not node["create_directories"].value():
                raise RuntimeError("%s: Can't write %s: No such file or directory" % (node.name(), path))
            os.makedirs(folder)
        fmt = image.format
        out = {}  # type: Dict[str, np.ndarray]
        for c in names:
            plane = image.planes.get(c, _zeros(fmt))
            if proxy:  # Writes render at the active scale: proxy mode halves the picture
                plane = plane[::2, ::2]
            exr_name = _NUKE_TO_EXR.get(c, c)
            out[exr_name] = plane.astype(np.float16 if half else np.float32)
        header = {"compression": compression, "type": OpenEXR.scanlineimage,
                  "pixelAspectRatio": float(fmt.pixelAspect())}
        OpenEXR.File(header, out).write(path)
