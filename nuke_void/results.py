"""Result nodes: clean-plate Read, quadmask Read with one Shuffle2 per region, the QC overlay, in a backdrop.

Everything is built from the job's manifest.json (layer and channel names are never hard-coded here), next to the
VOID node, below any earlier version's backdrop; earlier nodes are never touched.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple

import nuke

from . import channels, graph_layout, settings

REGIONS = settings.QC_CHANNELS[:3]  # remove, overlap, affected: the QC switch's input order
QC_COLOURS = {"remove": "rgba.red", "overlap": "rgba.green", "affected": "rgba.blue"}
BACKDROP_COLOUR = 0x3D4A5AFF


class ResultsError(Exception):
    pass


def load_manifest(folder: str) -> Dict[str, object]:
    path = os.path.join(folder, "manifest.json")
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ResultsError("The results in %s have no readable manifest.json (%s)." % (folder, e))
    quad = manifest.get("layers", {}).get("quadmask", {})
    missing = [r for r in REGIONS if r not in quad]
    if missing:
        raise ResultsError("The results' manifest lacks the quadmask region(s) %s." % ", ".join(missing))
    return manifest


def _declare_layer(exr_names: List[str]) -> List[str]:
    """Nuke channel names for `exr_names`; their layer is created first so knobs can refer to it."""
    names = [channels.from_exr(n) for n in exr_names]
    layer = names[0].split(".")[0]
    if layer != "rgba" and layer not in nuke.layers():
        nuke.Layer(layer, names)
    return names


def _read(pattern: str, first: int, last: int, label: str):
    read = nuke.nodes.Read()
    read["file"].setValue(pattern)  # file first: setting it makes Nuke guess a range, which we then set
    for knob, value in (("origfirst", first), ("origlast", last), ("first", first), ("last", last)):
        read[knob].setValue(value)
    read["raw"].setValue(True)  # values are the plate's working space already, as the plate was written raw
    read["on_error"].setValue("error")  # a missing result frame must be loud, never black
    read["label"].setValue(label)
    return read


def _shuffle(source, mappings: List[Tuple[str, str]], label: str, in1: str):
    node = nuke.nodes.Shuffle2()
    node.setInput(0, source)
    node["in1"].setValue(in1)
    node["mappings"].setValue(mappings)
    node["label"].setValue(label)
    return node


def _obstacles(group) -> List[graph_layout.Rect]:
    return [graph_layout.Rect(n.xpos(), n.ypos(), n.screenWidth(), n.screenHeight())
            for n in group.nodes() if n.Class() == "BackdropNode"]


def create_nodes(void_node, folder: str, manifest: Dict[str, object], version: str, prompt: str) -> Dict[str, object]:
    """Create the result nodes for one version; returns them by role."""
    group = void_node.parent() or nuke.root()
    frames = manifest["frames"]  # type: ignore[index]
    first, last = int(frames["first"]), int(frames["last"])  # type: ignore[index]
    pattern = os.path.join(folder, str(manifest.get("pattern", "clean.%04d.exr"))).replace("\\", "/")
    layers = manifest["layers"]  # type: ignore[index]
    quad = layers["quadmask"]  # type: ignore[index]
    pass1 = list(layers.get("pass1") or [])  # type: ignore[union-attr]
    extra = ["pass1"] if pass1 else []
    anchor = graph_layout.Rect(void_node.xpos(), void_node.ypos(), void_node.screenWidth(), void_node.screenHeight())
    positions, box = graph_layout.place(anchor, graph_layout.result_cells(REGIONS, extra), _obstacles(group))

    made = {}  # type: Dict[str, object]
    with group:
        made["clean"] = _read(pattern, first, last, "VOID %s clean plate" % version)
        made["quadmask"] = _read(pattern, first, last, "VOID %s quadmask" % version)
        region_channels = _declare_layer([quad[r] for r in REGIONS])  # type: ignore[index]
        quad_layer = region_channels[0].split(".")[0]
        for region, chan in zip(REGIONS, region_channels):
            made["shuffle_" + region] = _shuffle(
                made["quadmask"], [(chan, c) for c in ("rgba.red", "rgba.green", "rgba.blue", "rgba.alpha")],
                region, quad_layer)
        made["shuffle_all"] = _shuffle(
            made["quadmask"], [(chan, QC_COLOURS[r]) for r, chan in zip(REGIONS, region_channels)]
            + [("black", "rgba.alpha")], "all regions", quad_layer)
        if pass1:
            names = _declare_layer(pass1)
            made["layer_pass1"] = _shuffle(
                made["clean"], list(zip(names, ("rgba.red", "rgba.green", "rgba.blue"))), "pass 1",
                names[0].split(".")[0])
        switch = nuke.nodes.Switch()
        for i, key in enumerate(["shuffle_" + r for r in settings.QC_CHANNELS]):
            switch.setInput(i, made[key])
        switch["which"].setExpression("%s.qc_channel" % void_node.name())  # the VOID node's "QC shows" knob
        switch["label"].setValue("QC: [value which]")
        made["qc_switch"] = switch
        merge = nuke.nodes.Merge2()
        merge.setInput(0, void_node)  # B: the plate (the VOID node passes Source through)
        merge.setInput(1, switch)  # A: the chosen region(s) in colour
        merge["operation"].setValue("plus")
        merge["mix"].setValue(0.5)
        merge["label"].setValue("QC overlay")
        made["qc_merge"] = merge
        for key, node in made.items():
            x, y = positions[key]
            node.setXYpos(x, y)  # type: ignore[attr-defined]
        backdrop = nuke.nodes.BackdropNode()
        backdrop.setXYpos(box.x, box.y)
        backdrop["bdwidth"].setValue(box.w)
        backdrop["bdheight"].setValue(box.h)
        backdrop["tile_color"].setValue(BACKDROP_COLOUR)
        backdrop["note_font_size"].setValue(24)
        backdrop["label"].setValue("VOID %s\n%s" % (version, _short(prompt)))
        made["backdrop"] = backdrop
    return made


def _short(text: str, limit: int = 60) -> str:
    """One line of the prompt for a label; brackets escaped, as labels are TCL-evaluated."""
    text = " ".join(text.split())
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return text.replace("[", "\\[").replace("]", "\\]")
