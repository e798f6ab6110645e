"""Knob names per node class for the fake `nuke`: only knobs the real node class has.

Sources (Foundry Nuke reference guide, "Inputs and Controls" tables, checked for Nuke 13-16):
  Write    learn.foundry.com/nuke/Content/reference_guide/image_nodes/write.html
  Read     learn.foundry.com/nuke/Content/reference_guide/image_nodes/read.html
  Shuffle2 learn.foundry.com/nuke/Content/reference_guide/channel_nodes/shuffle.html (Shuffle2: in1/in2/out1/out2/mappings)
  Merge2   learn.foundry.com/nuke/Content/reference_guide/merge_nodes/merge.html
  Switch   learn.foundry.com/nuke/Content/reference_guide/merge_nodes/switch.html
  BackdropNode learn.foundry.com/nuke/Content/reference_guide/other_nodes/backdrop.html
  Roto     learn.foundry.com/nuke/Content/reference_guide/draw_nodes/roto.html
  Constant learn.foundry.com/nuke/Content/reference_guide/image_nodes/constant.html
  Root     Project Settings (learn.foundry.com/nuke/Content/reference_guide/project_settings.html)
Knob names seen in Foundry's Python examples and public tools agree (e.g. Read origfirst/origlast/first/last/raw,
Write file_type/datatype/compression/channels/raw/create_directories, Shuffle2 in1/mappings).
"""
from __future__ import annotations

# The "Node" tab every node has.
COMMON = {
    "name", "label", "note_font", "note_font_size", "note_font_color", "selected", "xpos", "ypos", "tile_color",
    "gl_color", "hide_input", "cached", "dope_sheet", "bookmark", "postage_stamp", "postage_stamp_frame",
    "disable", "lifetimeStart", "lifetimeEnd", "useLifetime", "lock_connections", "icon", "indicators", "help",
    "onCreate", "onDestroy", "knobChanged", "updateUI", "autolabel", "panel", "inputs",
}

COMMON_NO_DISABLE = COMMON - {"disable", "postage_stamp", "postage_stamp_frame", "cached"}

KNOBS = {
    "Write": COMMON | {
        "channels", "file", "proxy", "frame_mode", "frame", "colorspace", "raw", "premultiplied", "views",
        "file_type", "datatype", "compression", "heroview", "metadata", "noprefix", "interleave", "first_part",
        "autocrop", "write_full_layer_names", "standard_layer_name_format", "create_directories", "render_order",
        "first", "last", "use_limit", "reading", "checkHashOnRead", "on_error", "beforeRender",
        "beforeFrameRender", "afterFrameRender", "afterRender", "renderProgress", "Render", "dw_compression_level",
        "ocioColorspace", "display", "view", "transformType",
    },
    "Read": COMMON | {
        "file", "proxy", "format", "proxy_format", "cacheLocal", "frame_mode", "frame", "origfirst", "origlast",
        "first", "last", "before", "after", "on_error", "reload", "colorspace", "raw", "premultiplied",
        "auto_alpha", "origset", "localizationPolicy", "version", "noprefix", "offset_negative_display_window",
        "edge_pixels", "ocioColorspace", "display", "view", "transformType",
    },
    "Shuffle2": COMMON | {"in1", "in2", "out1", "out2", "mappings", "fromInput1", "fromInput2", "outputs"},
    "Merge2": COMMON | {
        "operation", "Achannels", "Bchannels", "output", "also_merge", "sRGB", "screen_alpha", "bbox",
        "metainput", "rangeinput", "mix", "maskChannelMask", "maskChannelInput", "inject", "invert_mask",
        "fringe", "process_mask",
    },
    "Switch": COMMON | {"which"},
    "Dot": COMMON,
    "BackdropNode": COMMON_NO_DISABLE | {"bdwidth", "bdheight", "z_order", "appearance", "border_width"},
    "Group": COMMON,
    "Input": COMMON | {"number"},
    "Output": COMMON,
    "Constant": COMMON | {"channels", "color", "format", "first", "last"},
    "Roto": COMMON | {
        "output", "premultiply", "cliptype", "replace", "format", "curves", "toolbox", "motionblur_on",
        "feather_type", "mix", "maskChannelInput", "invert_mask", "lifetime_type",
    },
    "Viewer": COMMON | {"frame_range", "frame_range_lock", "input_process", "viewerProcess", "channels"},
    "Root": {
        "name", "project_directory", "frame", "first_frame", "last_frame", "lock_range", "fps", "format",
        "proxy_type", "proxy_scale", "proxy_format", "proxy", "colorManagement", "OCIO_config",
        "customOCIOConfigPath", "workingSpaceLUT", "monitorLut", "int8Lut", "int16Lut", "logLut", "floatLut",
        "views", "onScriptLoad", "onScriptSave", "onScriptClose", "label", "selected",
    },
}

# Nodes with image inputs: how many the fake lets you connect (Merge2: B, A, mask; Switch: many).
MAX_INPUTS = {
    "Write": 1, "Read": 0, "Shuffle2": 2, "Merge2": 3, "Switch": 16, "Dot": 1, "BackdropNode": 0, "Input": 0,
    "Output": 1, "Constant": 0, "Roto": 1, "Viewer": 10, "Group": 0,
}

# Enumeration knobs whose values the fake checks (strings as the real node spells them).
ENUMS = {
    ("Write", "file_type"): ("exr", "png", "tiff", "jpeg", "dpx"),
    ("Write", "datatype"): ("16 bit half", "32 bit float"),
    ("Write", "compression"): ("none", "Zip (1 scanline)", "Zip (16 scanlines)", "PIZ Wavelet (32 scanlines)",
                               "RLE", "B44", "DWAA", "DWAB"),
    ("Write", "metadata"): ("no metadata", "default metadata", "default metadata and exr/*", "all metadata except input/*",
                            "all metadata"),
    ("Read", "before"): ("hold", "loop", "bounce", "black"),
    ("Read", "after"): ("hold", "loop", "bounce", "black"),
    ("Read", "on_error"): ("error", "black", "checkerboard", "nearest frame"),
    ("Merge2", "operation"): ("over", "plus", "screen", "multiply", "copy", "under", "mask", "stencil", "max",
                              "min", "difference", "from", "minus"),
}
