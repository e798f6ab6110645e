"""A strict fake of Foundry's `nuke` module for tests that run without a Nuke licence.

Rules: every public name here exists in Foundry's API (tests/nuke/test_fake_nuke_api.py checks them against the
types-nuke stubs in stub_api.json); node classes accept only the knobs the real class has (node_classes.py);
unknown node classes and knobs raise. Node graphs are tracked (inputs, knobs, positions, selection, groups), and
`execute` renders real EXR files through fake_render.py. Nuke objects may only be touched from the main thread
(as in Nuke); ProgressTask is the documented exception. Test-only controls live in fake_control.py, not here.
"""
from __future__ import annotations

import os
import re
import sys
import threading

import node_classes as _classes

GUI = True
NUKE_VERSION_MAJOR = 15
NUKE_VERSION_MINOR = 1
NUKE_VERSION_RELEASE = 1
NUKE_VERSION_STRING = "15.1v1"
STARTLINE = 0x1000
INVISIBLE = 0x400
DISABLED = 0x80
NO_ANIMATION = 0x100


class CancelledError(Exception):
    pass


class _State:
    def __init__(self):
        self.main = threading.main_thread()
        self.root = None  # type: Root
        self.context = []  # type: list
        self.plugin_path = []  # type: list
        self.messages = []  # type: list
        self.main_queue = []  # type: list
        self.queue_lock = threading.Lock()
        self.progress_tasks = []  # type: list
        self.this = []  # type: list  # (node, knob) of the running callback
        self.menus = {}  # type: dict
        self.layers = {}  # type: dict
        self.formats = []  # type: list
        self.undo_disabled = 0
        self.executed = []  # type: list  # (write name, first, last)
        self.frame = 1
        self.modified = False


_state = _State()


def _main_only(what):
    if threading.current_thread() is not _state.main:
        raise RuntimeError("%s called from a worker thread: Nuke objects may only be used on the main thread "
                           "(use nuke.executeInMainThread)" % what)


# --- formats and frame ranges ---------------------------------------------------------------------------------

class Format:
    def __init__(self, *args, **kwargs):
        width, height = int(args[0]), int(args[1])
        pixel_aspect = float(args[2]) if len(args) > 2 else 1.0
        self._w, self._h, self._pa = width, height, pixel_aspect
        self._name = args[3] if len(args) > 3 else ""

    def width(self):
        return self._w

    def height(self):
        return self._h

    def pixelAspect(self):
        return self._pa

    def name(self):
        return self._name

    def x(self):
        return 0

    def y(self):
        return 0

    def r(self):
        return self._w

    def t(self):
        return self._h

    def scaled(self, sx, sy, tx, ty):
        return Format(max(1, int(self._w * sx)), max(1, int(self._h * sy)), self._pa, "")

    def __repr__(self):
        return "Format(%d, %d, %g, %r)" % (self._w, self._h, self._pa, self._name)


class FrameRange:
    def __init__(self, *args, **kwargs):
        if len(args) == 1 and isinstance(args[0], str):
            a, _, b = args[0].partition("-")
            args = (int(a), int(b or a))
        self._first, self._last = int(args[0]), int(args[1])
        self._incr = int(args[2]) if len(args) > 2 else 1

    def first(self):
        return self._first

    def last(self):
        return self._last

    def increment(self):
        return self._incr

    def frames(self):
        return (self._last - self._first) // self._incr + 1

    def isInRange(self, n):
        return int(self._first <= n <= self._last)

    def __iter__(self):
        return iter(range(self._first, self._last + 1, self._incr))


def addFormat(s):
    parts = s.split()
    w, h = int(parts[0]), int(parts[1])
    pa = float(parts[-2]) if len(parts) >= 4 else 1.0
    fmt = Format(w, h, pa, parts[-1] if len(parts) >= 3 else "")
    _state.formats.append(fmt)
    return fmt


def formats():
    return list(_state.formats)


# --- knobs -------------------------------------------------------------------------------------------------------

class Knob:
    def __init__(self, *args, **kwargs):
        self._name = args[0] if args else ""
        self._label = args[1] if len(args) > 1 else self._name
        self._value = self._default()
        self._expr = None
        self._flags = 0
        self._tooltip = ""
        self._node = None
        self._visible = True
        self._enabled = True

    def _default(self):
        return ""

    def Class(self):
        return type(self).__name__

    def name(self):
        return self._name

    def label(self):
        return self._label

    def setLabel(self, label):
        self._label = label

    def node(self):
        return self._node

    def tooltip(self):
        return self._tooltip

    def setTooltip(self, tooltip):
        self._tooltip = tooltip

    def setFlag(self, flag):
        self._flags |= flag

    def clearFlag(self, flag):
        self._flags &= ~flag

    def getFlag(self, flag):
        return bool(self._flags & flag)

    def setVisible(self, visible):
        self._visible = bool(visible)

    def visible(self):
        return self._visible

    def setEnabled(self, enabled):
        self._enabled = bool(enabled)

    def enabled(self):
        return self._enabled

    def _coerce(self, val):
        return val

    def setValue(self, val, chan=None):
        _main_only("Knob.setValue")
        self._value = self._coerce(val)
        self._expr = None
        _state.modified = True
        return True

    def value(self, index=None):
        if self._expr is not None:
            return self._coerce(_evaluate_expression(self._expr, self))
        return self._value

    def getValue(self, channel=None):
        return self.value()

    def setExpression(self, expression, index=0, view=None):
        _main_only("Knob.setExpression")
        self._expr = expression
        return True

    def hasExpression(self, index=None):
        return self._expr is not None

    def toScript(self, quote=False, context=None):
        return self._expr if self._expr is not None else str(self._value)

    def fromScript(self, script):
        self.setValue(script)

    def _number(self):
        return float(self.value())


class Array_Knob(Knob):
    def _default(self):
        return 0.0

    def _coerce(self, val):
        return val if isinstance(val, (list, tuple)) else float(val)


class Double_Knob(Array_Knob):
    pass


class Int_Knob(Array_Knob):
    def _default(self):
        return 0

    def _coerce(self, val):
        return int(val)


class Boolean_Knob(Array_Knob):
    def _default(self):
        return False

    def _coerce(self, val):
        return bool(val)


class Color_Knob(Array_Knob):
    pass


class AColor_Knob(Color_Knob):
    pass


class Unsigned_Knob(Array_Knob):
    def _default(self):
        return 0

    def _coerce(self, val):
        return int(val)


class ColorChip_Knob(Unsigned_Knob):
    pass


class Enumeration_Knob(Unsigned_Knob):
    def __init__(self, *args, **kwargs):
        Knob.__init__(self, *args[:2])
        self._values = list(args[2]) if len(args) > 2 else []
        self._value = 0

    def values(self):
        return list(self._values)

    def setValues(self, items):
        self._values = list(items)

    def numValues(self):
        return len(self._values)

    def enumName(self, n):
        return self._values[n]

    def setValue(self, *args, **kwargs):
        _main_only("Knob.setValue")
        item = args[0]
        if isinstance(item, str):
            if item not in self._values:
                raise ValueError("Bad value for %s: %r (one of %s)" % (self._name, item, self._values))
            item = self._values.index(item)
        if not 0 <= int(item) < len(self._values):
            raise ValueError("Bad index for %s: %r" % (self._name, item))
        self._value = int(item)
        _state.modified = True
        return True

    def value(self):
        return self._values[self._value] if self._values else ""

    def getValue(self, *args, **kwargs):
        return float(self._value)

    def _number(self):
        return float(self._value)


class String_Knob(Knob):
    def _coerce(self, val):
        return "" if val is None else str(val)

    def getText(self, oc=None):
        return self._value

    def setText(self, *args, **kwargs):
        return self.setValue(args[0])


class EvalString_Knob(String_Knob):
    pass


class Multiline_Eval_String_Knob(EvalString_Knob):
    pass


class File_Knob(EvalString_Knob):
    def fromUserText(self, *args, **kwargs):
        self.setValue(args[0].split(" ")[0])

    def getEvaluatedValue(self, *args, **kwargs):
        return self.value()


class Script_Knob(String_Knob):
    def command(self):
        return self._value

    def setCommand(self, cmd):
        self._value = cmd

    def execute(self):
        _run_callback(self._node, self, self._value)


class PyScript_Knob(Script_Knob):
    pass


class Text_Knob(Knob):
    pass


class Tab_Knob(Knob):
    pass


class Channel_Knob(Knob):
    def _default(self):
        return "rgba.alpha"

    def _coerce(self, val):
        return str(val)


class ChannelMask_Knob(Channel_Knob):
    def _default(self):
        return "rgb"


class Format_Knob(Knob):
    def _default(self):
        return None

    def _coerce(self, val):
        if isinstance(val, Format):
            return val
        for fmt in _state.formats:
            if fmt.name() == val:
                return fmt
        raise ValueError("unknown format %r" % (val,))


class Password_Knob(Knob):
    pass


class _MappingsKnob(Knob):
    """Shuffle2's `mappings`: a list of (source, destination) or (input, source, destination) channel tuples."""

    def _default(self):
        return []

    def _coerce(self, val):
        out = []
        for m in val:
            if not isinstance(m, (tuple, list)) or len(m) not in (2, 3) or not all(isinstance(c, str) for c in m[-2:]):
                raise ValueError("Shuffle2 mappings are (source, destination) channel tuples, got %r" % (m,))
            for c in m[-2:]:
                if c not in ("black", "white") and "." not in c:
                    raise ValueError("Shuffle2 mapping channel %r is not layer.channel" % c)
            out.append(tuple(m))
        return out


def _evaluate_expression(expr, knob):
    """Only what the VOID nodes use: `Node.knob` (and parent.knob) references."""
    m = re.match(r"^\s*([\w.]+)\.(\w+)\s*$", expr)
    if not m:
        raise NotImplementedError("fake nuke evaluates only 'node.knob' expressions, not %r" % expr)
    owner = knob.node()
    path, name = m.group(1), m.group(2)
    target = owner.parent() if path == "parent" else toNode(path)
    if target is None:
        raise ValueError("expression %r: no node %s" % (expr, path))
    return target[name]._number()


# --- nodes -------------------------------------------------------------------------------------------------------

_KNOB_TYPES = {
    "xpos": Int_Knob, "ypos": Int_Knob, "first": Int_Knob, "last": Int_Knob, "origfirst": Int_Knob,
    "origlast": Int_Knob, "number": Int_Knob, "bdwidth": Int_Knob, "bdheight": Int_Knob, "z_order": Int_Knob,
    "first_frame": Int_Knob, "last_frame": Int_Knob, "frame": Int_Knob, "note_font_size": Int_Knob,
    "raw": Boolean_Knob, "disable": Boolean_Knob, "hide_input": Boolean_Knob, "selected": Boolean_Knob,
    "create_directories": Boolean_Knob, "autocrop": Boolean_Knob, "premultiplied": Boolean_Knob,
    "postage_stamp": Boolean_Knob, "reading": Boolean_Knob, "use_limit": Boolean_Knob,
    "mix": Double_Knob, "which": Double_Knob, "fps": Double_Knob,
    "tile_color": ColorChip_Knob, "gl_color": ColorChip_Knob, "note_font_color": ColorChip_Knob,
    "file": File_Knob, "label": Multiline_Eval_String_Knob, "channels": ChannelMask_Knob,
    "format": Format_Knob, "proxy_format": Format_Knob, "color": AColor_Knob, "mappings": _MappingsKnob,
}
_ROOT_KNOB_TYPES = {"proxy": Boolean_Knob, "name": String_Knob}
_DEFAULTS = {
    ("Write", "channels"): "rgb", ("Write", "file_type"): "exr", ("Write", "datatype"): "16 bit half",
    ("Write", "compression"): "Zip (1 scanline)", ("Write", "create_directories"): False,
    ("Read", "before"): "hold", ("Read", "after"): "hold", ("Read", "on_error"): "error",
    ("Merge2", "operation"): "over", ("Merge2", "mix"): 1.0, ("Root", "first_frame"): 1, ("Root", "last_frame"): 100,
    ("Root", "fps"): 24.0, ("Constant", "channels"): "rgb", ("Roto", "output"): "alpha",
}


class Node:
    _counter = {}  # type: dict

    def __init__(self, *args, **kwargs):
        self._class = args[0] if args else type(self).__name__
        self._knobs = {}  # type: dict
        self._order = []  # type: list
        self._inputs = {}  # type: dict
        self._parent = None
        self._alive = True
        self._fake = {}  # type: dict  # fake-only hooks (roto shapes), set by fake_control
        allowed = _classes.KNOBS.get(self._class, _classes.COMMON)
        for name in sorted(allowed):
            self._add_builtin(name)

    def _add_builtin(self, name):
        types = dict(_KNOB_TYPES)
        if self._class == "Root":
            types.update(_ROOT_KNOB_TYPES)
        enum = _classes.ENUMS.get((self._class, name))
        if enum:
            knob = Enumeration_Knob(name, name, enum)
        else:
            knob = types.get(name, String_Knob)(name)
        default = _DEFAULTS.get((self._class, name))
        if default is not None:
            if enum:
                knob._value = enum.index(default)
            else:
                knob._value = knob._coerce(default)
        knob._node = self
        self._knobs[name] = knob
        self._order.append(name)

    def _check(self):
        if not self._alive:
            raise ValueError("A PythonObject is not attached to a node")

    def Class(self):
        return self._class

    def name(self):
        return self._knobs["name"].value()

    def setName(self, name, uncollide=False, updateExpressions=False):
        _main_only("Node.setName")
        parent = self._parent or _state.root
        if any(n is not self and n.name() == name for n in parent._children):
            if not uncollide:
                raise ValueError("name %r is already used" % name)
            name = parent._unique(name)
        self._knobs["name"]._value = name

    def fullName(self):
        self._check()
        if self._parent is None or self._parent is _state.root:
            return self.name()
        return self._parent.fullName() + "." + self.name()

    def parent(self):
        return self._parent

    def knob(self, p, follow_link=False):
        self._check()
        if isinstance(p, int):
            return self._knobs[self._order[p]]
        return self._knobs.get(p)

    def knobs(self):
        return dict(self._knobs)

    def allKnobs(self):
        return [self._knobs[n] for n in self._order]

    def __getitem__(self, name):
        self._check()
        if name not in self._knobs:
            raise NameError("knob %s does not exist" % name)
        return self._knobs[name]

    def addKnob(self, knob):
        _main_only("Node.addKnob")
        if knob.name() in self._knobs:
            raise ValueError("knob %s already exists" % knob.name())
        knob._node = self
        self._knobs[knob.name()] = knob
        self._order.append(knob.name())

    def removeKnob(self, knob):
        _main_only("Node.removeKnob")
        del self._knobs[knob.name()]
        self._order.remove(knob.name())

    def maxInputs(self):
        return _classes.MAX_INPUTS.get(self._class, 1)

    def setInput(self, i, node):
        _main_only("Node.setInput")
        self._check()
        if i < 0 or i >= self.maxInputs():
            return False
        if node is None:
            self._inputs.pop(i, None)
        else:
            node._check()
            self._inputs[i] = node
        _state.modified = True
        return True

    def connectInput(self, i, node):
        return self.setInput(i, node)

    def input(self, index):
        node = self._inputs.get(index)
        return node if node is not None and node._alive else None

    def inputs(self):
        alive = [i for i, n in self._inputs.items() if n._alive]
        return max(alive) + 1 if alive else 0

    def dependent(self, mask=None, forceEvaluate=True):
        group = self._parent or _state.root
        return [n for n in group._children if any(m is self for m in n._inputs.values())]

    def xpos(self):
        return self._knobs["xpos"].value()

    def ypos(self):
        return self._knobs["ypos"].value()

    def setXpos(self, x):
        self._knobs["xpos"].setValue(int(x))

    def setYpos(self, y):
        self._knobs["ypos"].setValue(int(y))

    def setXYpos(self, x, y):
        self.setXpos(x)
        self.setYpos(y)

    def screenWidth(self):
        if self._class == "BackdropNode":
            return self._knobs["bdwidth"].value()
        return 12 if self._class == "Dot" else 80

    def screenHeight(self):
        if self._class == "BackdropNode":
            return self._knobs["bdheight"].value()
        return 12 if self._class == "Dot" else 18

    def isSelected(self):
        return self._knobs["selected"].value()

    def setSelected(self, selected):
        self._knobs["selected"].setValue(bool(selected))

    def selectOnly(self):
        for n in allNodes():
            n.setSelected(n is self)

    def showControlPanel(self, forceFloat=False):
        pass

    def hideControlPanel(self):
        pass

    def error(self):
        return False

    def hasError(self):
        return False

    # Image information comes from the fake renderer.
    def format(self):
        return _render().info(self).format

    def width(self):
        return self.format().width()

    def height(self):
        return self.format().height()

    def pixelAspect(self):
        return self.format().pixelAspect()

    def firstFrame(self):
        return _render().info(self).first

    def lastFrame(self):
        return _render().info(self).last

    def frameRange(self):
        info = _render().info(self)
        return FrameRange(info.first, info.last)

    def channels(self):
        return list(_render().info(self).channels)

    def __repr__(self):
        return "<%s %s>" % (self._class, self.name() if self._alive else "(deleted)")


class Group(Node):
    def __init__(self, *args, **kwargs):
        Node.__init__(self, *args, **kwargs)
        self._children = []  # type: list

    def _unique(self, base):
        names = {n.name() for n in self._children}
        stem = re.sub(r"\d+$", "", base) or base
        if base not in names:
            return base
        i = 1
        while "%s%d" % (stem, i) in names:
            i += 1
        return "%s%d" % (stem, i)

    def begin(self):
        _state.context.append(self)
        return self

    def end(self):
        if len(_state.context) > 1 and _state.context[-1] is self:
            _state.context.pop()

    def __enter__(self):
        return self.begin()

    def __exit__(self, type, value, traceback):
        self.end()

    def node(self, s):
        for n in self._children:
            if n.name() == s:
                return n
        return None

    def nodes(self):
        return list(self._children)

    def numNodes(self):
        return len(self._children)

    def maxInputs(self):
        return len([n for n in self._children if n.Class() == "Input"]) or _classes.MAX_INPUTS.get(self._class, 0)

    def _input_node(self, number):
        for n in self._children:
            if n.Class() == "Input" and n["number"].value() == number:
                return n
        return None


class Gizmo(Group):
    def __init__(self, *args, **kwargs):
        Group.__init__(self, "Group")
        self._class = args[0]
        self._file = args[1] if len(args) > 1 else ""

    def filename(self):
        return self._file

    def command(self):
        return "nuke.createNode(%r)" % self._class


class Root(Group):
    def __init__(self, *args, **kwargs):
        Group.__init__(self, "Root")
        self._knobs["name"]._value = ""
        self._knobs["format"]._value = addFormat("1920 1080 1.0 HD_1080")

    def firstFrame(self):
        return self._knobs["first_frame"].value()

    def lastFrame(self):
        return self._knobs["last_frame"].value()

    def fps(self):
        return int(self._knobs["fps"].value())

    def realFps(self):
        return float(self._knobs["fps"].value())

    def modified(self):
        return _state.modified

    def setModified(self, modified):
        _state.modified = bool(modified)

    def proxy(self, *args, **kwargs):
        return self._knobs["proxy"].value()

    def setProxy(self, *args, **kwargs):
        self._knobs["proxy"].setValue(bool(args[0]))

    def format(self):
        return self._knobs["format"].value()

    def fullName(self):
        return "root"


class BackdropNode(Node):
    def getNodes(self):
        x, y, w, h = self.xpos(), self.ypos(), self.screenWidth(), self.screenHeight()
        group = self._parent or _state.root
        return [n for n in group._children if n is not self and x <= n.xpos() <= x + w and y <= n.ypos() <= y + h]


def _render():
    import fake_render
    return fake_render


def _make_node(cls, knobs=None):
    _main_only("node creation")
    group = _state.context[-1]
    if cls in ("Group",):
        node = Group(cls)
    elif cls == "BackdropNode":
        node = BackdropNode(cls)
    elif cls in _classes.KNOBS:
        node = Node(cls)
    else:
        path = _find_gizmo(cls)
        if path is None:
            raise RuntimeError("%s: unknown command" % cls)
        import fake_gizmo
        node = Gizmo(cls, path)
        node._parent = group
        group._children.append(node)
        node._knobs["name"]._value = group._unique(cls + "1")
        fake_gizmo.load(node, path)
        _apply_knobs(node, knobs or {})
        _state.modified = True
        return node
    node._parent = group
    group._children.append(node)
    node._knobs["name"]._value = group._unique(cls + "1")
    _apply_knobs(node, knobs or {})
    _state.modified = True
    return node


def _apply_knobs(node, knobs):
    for name, value in knobs.items():
        if name == "inputs" and isinstance(value, (list, tuple)):
            for i, n in enumerate(value):
                node.setInput(i, n)
            continue
        if name == "name":
            node.setName(value, uncollide=False)
            continue
        node[name].setValue(value)


def _find_gizmo(cls):
    for folder in _state.plugin_path:
        path = os.path.join(folder, cls + ".gizmo")
        if os.path.isfile(path):
            return path
    return None


class _NodeConstructor:
    def __init__(self, cls):
        self._cls = cls

    def __call__(self, *args, **kwargs):
        return _make_node(self._cls, kwargs)


class Nodes:
    def __getattr__(self, item):
        if item.startswith("_"):
            raise AttributeError(item)
        return _NodeConstructor(item)


nodes = Nodes()


def createNode(typ, knobs="", inpanel=True):
    selected = selectedNodes()
    parsed = {}
    tokens = knobs.split()
    for k, v in zip(tokens[0::2], tokens[1::2]):
        parsed[k] = v
    node = _make_node(typ, parsed)
    if len(selected) == 1 and node.maxInputs() > 0:
        node.setInput(0, selected[0])
        node.setXYpos(selected[0].xpos(), selected[0].ypos() + 60)
    node.selectOnly()
    return node


def delete(n):
    _main_only("nuke.delete")
    n._check()
    group = n._parent or _state.root
    group._children.remove(n)
    n._alive = False
    for other in group._children:
        for i, m in list(other._inputs.items()):
            if m is n:
                del other._inputs[i]
    _state.modified = True


def root():
    return _state.root


def thisGroup():
    return _state.context[-1]


def _walk(group):
    for n in group._children:
        yield n
        if isinstance(n, Group):
            for m in _walk(n):
                yield m


def allNodes(filter=None, group=None, recurseGroups=False):
    group = group or _state.context[-1]
    found = list(_walk(group)) if recurseGroups else list(group._children)
    return [n for n in found if filter is None or n.Class() == filter]


def selectedNodes(filter=None):
    return [n for n in allNodes(filter) if n.isSelected()]


def selectedNode():
    chosen = selectedNodes()
    if not chosen:
        raise ValueError("no node selected")
    return chosen[-1]


def toNode(s):
    if s == "root":
        return _state.root
    group = _state.context[-1] if "." not in s else _state.root
    parts = s.split(".")
    node = None
    for part in parts:
        node = group.node(part) if isinstance(group, Group) else None
        if node is None:
            return None
        group = node
    return node


def thisNode():
    if not _state.this:
        return _state.root
    return _state.this[-1][0]


def thisKnob():
    if not _state.this:
        return None
    return _state.this[-1][1]


def _run_callback(node, knob, script):
    _state.this.append((node, knob))
    try:
        namespace = {"nuke": sys.modules[__name__]}
        exec(script, namespace)
    finally:
        _state.this.pop()


# --- layers -------------------------------------------------------------------------------------------------------

class Layer:
    def __init__(self, *args, **kwargs):
        self._name = args[0]
        self._channels = list(args[1]) if len(args) > 1 else []
        for c in self._channels:
            if not c.startswith(self._name + "."):
                raise ValueError("channel %s is not in layer %s" % (c, self._name))
        _state.layers[self._name] = self._channels

    def name(self):
        return self._name

    def channels(self, *args, **kwargs):
        return list(self._channels)

    def setName(self, newName):
        raise NotImplementedError

    def visible(self):
        return True


def layers(node=None):
    if node is not None:
        return sorted({c.split(".")[0] for c in node.channels()})
    return ["rgb", "rgba", "alpha"] + sorted(_state.layers)


# --- rendering -----------------------------------------------------------------------------------------------------

def execute(nameOrNode, start=None, end=None, incr=1, views=None, continueOnError=False):
    _main_only("nuke.execute")
    node = toNode(nameOrNode) if isinstance(nameOrNode, str) else nameOrNode
    if node is None or node.Class() != "Write":
        raise ValueError("%s is not executable" % (nameOrNode,))
    if isinstance(start, FrameRanges):
        frames = list(start.toFrameList())
    else:
        frames = list(range(int(start), int(end) + 1, int(incr)))
    _render().execute_write(node, frames)
    _state.executed.append((node.fullName(), frames[0], frames[-1]))


def executeMultiple(nodes, ranges, views=None, continueOnError=False):
    for first, last, incr in ranges:
        for node in nodes:
            execute(node, first, last, incr)


class FrameRanges:
    def __init__(self, *args, **kwargs):
        self._frames = []
        for r in args:
            self.add(r)

    def add(self, r):
        if isinstance(r, FrameRange):
            self._frames.extend(list(r))
        else:
            self._frames.extend(list(FrameRange(r)))

    def toFrameList(self, *args, **kwargs):
        return list(self._frames)

    def minFrame(self):
        return min(self._frames)

    def maxFrame(self):
        return max(self._frames)

    def size(self):
        return len(self._frames)


def views():
    return ["main"]


def frame(f=None):
    if f is not None:
        _main_only("nuke.frame")
        _state.frame = int(f)
    return _state.frame


# --- threads, progress, messages -----------------------------------------------------------------------------------

def executeInMainThread(call, args=(), kwargs={}):
    if threading.current_thread() is _state.main:
        raise RuntimeError("nuke.executeInMainThread called from the main thread: Nuke would hang")
    if not isinstance(args, tuple):
        args = (args,)
    with _state.queue_lock:
        _state.main_queue.append((call, args, dict(kwargs), None))


def executeInMainThreadWithResult(call, args=(), kwargs={}):
    if threading.current_thread() is _state.main:
        raise RuntimeError("nuke.executeInMainThreadWithResult called from the main thread: Nuke would hang")
    if not isinstance(args, tuple):
        args = (args,)
    box = {"done": threading.Event()}
    with _state.queue_lock:
        _state.main_queue.append((call, args, dict(kwargs), box))
    box["done"].wait()
    if "error" in box:
        raise box["error"]
    return box.get("result")


class ProgressTask:
    def __init__(self, *args, **kwargs):
        self.name = args[0] if args else ""
        self.messages = []
        self.progress = []
        self.cancelled = False
        self.closed = False
        _state.progress_tasks.append(self)

    def setMessage(self, *args, **kwargs):
        self.messages.append(args[0])

    def setProgress(self, *args, **kwargs):
        value = int(args[0])
        if not 0 <= value <= 100:
            raise ValueError("progress %r outside 0..100" % value)
        self.progress.append(value)

    def isCancelled(self, *args, **kwargs):
        return self.cancelled

    def __del__(self):
        self.closed = True


def message(prompt):
    _main_only("nuke.message")
    _state.messages.append(("message", prompt))


def alert(prompt):
    _main_only("nuke.alert")
    _state.messages.append(("alert", prompt))


def ask(prompt):
    _main_only("nuke.ask")
    _state.messages.append(("ask", prompt))
    return True


def tprint(*args, **kwargs):
    print(*args)


def warning(message):
    _state.messages.append(("warning", message))


class Undo:
    def __init__(self, *args, **kwargs):
        pass

    @classmethod
    def disable(cls, *args, **kwargs):
        _state.undo_disabled += 1

    @classmethod
    def enable(cls, *args, **kwargs):
        if _state.undo_disabled <= 0:
            raise RuntimeError("Undo.enable without disable")
        _state.undo_disabled -= 1

    @classmethod
    def disabled(cls, *args, **kwargs):
        return _state.undo_disabled > 0

    @classmethod
    def begin(cls, *args, **kwargs):
        pass

    @classmethod
    def end(cls, *args, **kwargs):
        pass

    @classmethod
    def name(cls, *args, **kwargs):
        pass


# --- plugin path, menus -----------------------------------------------------------------------------------------

def pluginAddPath(args, addToSysPath=True):
    paths = [args] if isinstance(args, str) else list(args)
    for path in reversed(paths):
        path = os.path.abspath(path)
        if path in _state.plugin_path:
            continue
        _state.plugin_path.insert(0, path)
        if addToSysPath and path not in sys.path:
            sys.path.insert(0, path)
        init = os.path.join(path, "init.py")
        if os.path.isfile(init):  # Nuke runs the init.py of a folder added from an init.py
            with open(init) as f:
                exec(compile(f.read(), init, "exec"), {"__file__": init, "__name__": "__main__"})


def pluginPath():
    return list(_state.plugin_path)


class MenuItem:
    def __init__(self, name, script=None, shortcut="", icon=""):
        self._name, self._script, self._shortcut, self._icon = name, script, shortcut, icon

    def name(self):
        return self._name

    def script(self):
        return self._script

    def shortcut(self):
        return self._shortcut

    def icon(self):
        return self._icon

    def invoke(self):
        if callable(self._script):
            self._script()
        else:
            exec(self._script, {"nuke": sys.modules[__name__]})


class Menu(MenuItem):
    def __init__(self, name, icon=""):
        MenuItem.__init__(self, name, icon=icon)
        self._items = []

    def addMenu(self, *args, **kwargs):
        name = args[0]
        found = self.findItem(name)
        if found is None:
            found = Menu(name, kwargs.get("icon", ""))
            self._items.append(found)
        return found

    def addCommand(self, *args, **kwargs):
        allowed = ("name", "command", "shortcut", "icon", "tooltip", "index", "readonly", "shortcutContext",
                   "tag", "tagTarget", "node")
        unknown = set(kwargs) - set(allowed)
        if unknown:
            raise TypeError("addCommand got unexpected arguments %s" % sorted(unknown))
        values = dict(zip(allowed, args))
        values.update(kwargs)
        item = MenuItem(values["name"], values.get("command"), values.get("shortcut", ""), values.get("icon", ""))
        self._items.append(item)
        return item

    def addSeparator(self, *args, **kwargs):
        pass

    def findItem(self, name):
        head, _, rest = name.partition("/")
        for item in self._items:
            if item.name() == head:
                return item.findItem(rest) if rest and isinstance(item, Menu) else item
        return None

    def items(self):
        return list(self._items)


def menu(name):
    if name not in ("Nuke", "Nodes", "Pane", "Viewer", "Node Graph", "Properties", "Animation", "Axis"):
        raise RuntimeError("no menu named %s" % name)
    return _state.menus.setdefault(name, Menu(name))


def toolbar(name, create=True):
    return menu(name) if name == "Nodes" else None


def scriptName():
    name = _state.root["name"].value()
    if not name:
        raise RuntimeError("no script name")
    return name


def _reset():
    global _state
    plugin_path = _state.plugin_path if _state is not None else []
    _state = _State()
    _state.plugin_path = plugin_path
    _state.root = Root()
    _state.context = [_state.root]
    _state.modified = False


_reset()
