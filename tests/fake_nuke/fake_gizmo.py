"""Loads a .gizmo / .nk group definition into a fake Gizmo node: knobs, user knobs and the nodes inside.

A small reader of Nuke's TCL-like script syntax: braces and quotes must balance, user knob type ids must be known
(Foundry's nuke.KnobType: 1 String, 2 File, 3 Int, 4 Enumeration, 6 Bool, 7 Double, 11 Channel, 20 Tab,
22 PyScript, 26 Text, 43 Multiline_Eval_String), nodes are wired with Nuke's stack rule.
"""
from __future__ import annotations

from typing import List, Tuple

import nuke

USER_KNOB_TYPES = {
    1: nuke.String_Knob, 2: nuke.File_Knob, 3: nuke.Int_Knob, 4: nuke.Enumeration_Knob, 6: nuke.Boolean_Knob,
    7: nuke.Double_Knob, 11: nuke.Channel_Knob, 20: nuke.Tab_Knob, 22: nuke.PyScript_Knob, 26: nuke.Text_Knob,
    43: nuke.Multiline_Eval_String_Knob,
}


class GizmoSyntaxError(ValueError):
    pass


def tokenize(text: str) -> List[object]:
    """Words, "quoted strings" and {nested lists} -> a list of str / list."""
    pos = 0
    stack = [[]]  # type: List[list]
    n = len(text)
    while pos < n:
        ch = text[pos]
        if ch in " \t\r\n":
            pos += 1
        elif ch == "#" and (pos == 0 or text[pos - 1] == "\n"):
            pos = text.find("\n", pos) if "\n" in text[pos:] else n
        elif ch == "{":
            stack.append([])
            pos += 1
        elif ch == "}":
            if len(stack) == 1:
                raise GizmoSyntaxError("unbalanced '}' at offset %d" % pos)
            done = stack.pop()
            stack[-1].append(done)
            pos += 1
        elif ch == '"':
            out = []
            pos += 1
            while True:
                if pos >= n:
                    raise GizmoSyntaxError("unterminated string")
                c = text[pos]
                if c == "\\" and pos + 1 < n:
                    nxt = text[pos + 1]
                    out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
                    pos += 2
                elif c == '"':
                    pos += 1
                    break
                else:
                    out.append(c)
                    pos += 1
            stack[-1].append(_Quoted("".join(out)))
        else:
            start = pos
            while pos < n and text[pos] not in " \t\r\n{}\"":
                pos += 1
            stack[-1].append(text[start:pos])
    if len(stack) != 1:
        raise GizmoSyntaxError("unbalanced '{': %d left open" % (len(stack) - 1))
    return stack[0]


class _Quoted(str):
    pass


def _text(value) -> str:
    if isinstance(value, list):
        return " ".join(_text(v) for v in value)
    return str(value)


def _pairs(body: list) -> List[Tuple[str, object]]:
    if len(body) % 2:
        raise GizmoSyntaxError("knob without a value near %r" % (body[-1],))
    return [(body[i], body[i + 1]) for i in range(0, len(body), 2)]


def _user_knob(spec: list):
    kind, name = int(spec[0]), spec[1]
    if kind not in USER_KNOB_TYPES:
        raise GizmoSyntaxError("unknown user knob type %d for %s" % (kind, name))
    label, tooltip, items, script, flags = name, "", [], None, []
    rest = list(spec[2:])
    i = 0
    while i < len(rest):
        tag = rest[i]
        if tag == "l":
            label = _text(rest[i + 1]); i += 2
        elif tag == "t":
            tooltip = _text(rest[i + 1]); i += 2
        elif tag == "M":
            items = [_text(v) for v in rest[i + 1]]; i += 2
        elif tag == "T":
            script = _text(rest[i + 1]); i += 2
        elif tag == "R":
            i += 3
        elif tag == "n":
            i += 2
        elif isinstance(tag, str) and tag[:1] in "+-":
            flags.append(tag); i += 1
        else:
            raise GizmoSyntaxError("unknown user knob option %r on %s" % (tag, name))
    cls = USER_KNOB_TYPES[kind]
    knob = cls(name, label, items) if cls is nuke.Enumeration_Knob else cls(name, label)
    knob.setTooltip(tooltip)
    if script is not None:
        knob._value = script
    if "+INVISIBLE" in flags or "+HIDDEN" in flags:
        knob.setVisible(False)
    return knob


def _set(node, name: str, value) -> None:
    knob = node[name]  # raises for a knob the class does not have
    text = _text(value)
    if isinstance(knob, nuke.Enumeration_Knob):
        knob.setValue(text if text in knob.values() else int(text))
    elif isinstance(knob, nuke.Boolean_Knob):
        knob.setValue(text in ("true", "1"))
    elif isinstance(knob, (nuke.Int_Knob, nuke.Unsigned_Knob)):
        knob.setValue(int(text, 0))
    elif isinstance(knob, nuke.Array_Knob):
        knob.setValue(float(text))
    else:
        knob.setValue(text)


def _apply(node, body: list) -> None:
    for name, value in _pairs(body):
        if name == "addUserKnob":
            node.addKnob(_user_knob(value))
        elif name == "inputs":
            continue
        else:
            _set(node, name, value)


def load(gizmo, path: str) -> None:
    with open(path) as f:
        tokens = tokenize(f.read())
    i = 0
    while i < len(tokens) and tokens[i] != "Gizmo":
        i += 2 if tokens[i] == "version" else 1
    if i >= len(tokens) - 1 or not isinstance(tokens[i + 1], list):
        raise GizmoSyntaxError("%s has no 'Gizmo { ... }' block" % path)
    name = gizmo.name()
    _apply(gizmo, tokens[i + 1])
    gizmo["name"]._value = name
    i += 2
    stack = []  # type: list
    with gizmo:
        while i < len(tokens):
            word = tokens[i]
            if word == "end_group":
                return
            if word == "push":
                stack.append(None if tokens[i + 1] == "0" else stack[-1])
                i += 2
                continue
            body = tokens[i + 1]
            if not isinstance(body, list):
                raise GizmoSyntaxError("expected '{' after %s" % word)
            node = nuke.nodes.__getattr__(word)()
            pairs = dict(_pairs(body))
            count = int(_text(pairs.get("inputs", 0 if word == "Input" else 1)))
            ins = [stack.pop() for _ in range(min(count, len(stack)))]
            for k, src in enumerate(ins):
                if src is not None:
                    node.setInput(k, src)
            _apply(node, body)
            stack.append(node)
            i += 2
    raise GizmoSyntaxError("%s: missing end_group" % path)
