"""The fake `nuke` invents nothing: public names and parameters match Foundry's API (types-nuke stubs)."""
from __future__ import annotations

import inspect
import json
import os

import pytest

import fake_gizmo
import nuke

STUBS = json.load(open(os.path.join(os.path.dirname(nuke.__file__), "stub_api.json")))


def _stub_methods(cls_name):
    seen, todo = {}, [cls_name]
    while todo:
        info = STUBS["classes"].get(todo.pop())
        if not info:
            continue
        for name, sigs in info["methods"].items():
            seen.setdefault(name, sigs)
        todo.extend(info["bases"])
    return seen


def _compatible(fake_params, stub_sigs):
    """The fake's named parameters appear in one stub signature, in the same order (the stub may use *args)."""
    for sig in stub_sigs:
        if any(p.startswith("*") for p in sig):
            return True
        named = [p for p in sig if not p.startswith("*")]
        if fake_params == named[:len(fake_params)]:
            return True
    return False


def _params(fn):
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


PUBLIC = sorted(n for n in vars(nuke) if not n.startswith("_") and n not in ("annotations",)
                and not inspect.ismodule(getattr(nuke, n)))


@pytest.mark.parametrize("name", PUBLIC)
def test_public_name_exists_in_foundry_api(name):
    obj = getattr(nuke, name)
    if inspect.isclass(obj):
        assert name in STUBS["classes"], "fake nuke invents class %s" % name
        stub_methods = _stub_methods(name)
        for attr, member in vars(obj).items():
            if attr.startswith("_") or not callable(member) and not isinstance(member, classmethod):
                continue
            assert attr in stub_methods, "fake nuke.%s invents method %s" % (name, attr)
            fn = member.__func__ if isinstance(member, classmethod) else member
            stub = [[p for p in sig if p not in ("self", "cls", "type")] for sig in stub_methods[attr]]
            mine = [p for p in _params(fn) if p not in ("self", "cls")]
            assert _compatible(mine, stub), "nuke.%s.%s%s vs stubs %s" % (name, attr, mine, stub)
    elif callable(obj):
        assert name in STUBS["functions"], "fake nuke invents function %s" % name
        assert _compatible(_params(obj), STUBS["functions"][name]), (name, _params(obj), STUBS["functions"][name])
    else:
        assert name in STUBS["constants"], "fake nuke invents constant %s" % name


def test_unknown_things_raise(fake):
    with pytest.raises(AttributeError):
        nuke.renderEverything  # noqa: B018 - not Foundry API
    with pytest.raises(RuntimeError, match="unknown command"):
        nuke.nodes.NoSuchNode()
    with pytest.raises(NameError):
        nuke.nodes.Write(filename="/tmp/x.exr")  # the knob is `file`
    read = nuke.nodes.Read()
    with pytest.raises(NameError):
        read["colourspace"]
    with pytest.raises(ValueError):
        nuke.nodes.Write(datatype="32 bit")  # the value is "32 bit float"


def test_nuke_objects_only_on_the_main_thread(fake):
    import threading
    errors = []

    def worker():
        try:
            nuke.nodes.Dot()
        except RuntimeError as e:
            errors.append(e)
        try:
            nuke.executeInMainThread(lambda: None)
        except RuntimeError as e:  # pragma: no cover - must not happen
            errors.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])
    with pytest.raises(RuntimeError, match="hang"):
        nuke.executeInMainThread(lambda: None)


def test_gizmo_parses_with_known_knob_types(fake):
    node = nuke.createNode("VOID", inpanel=False)
    assert node.Class() == "VOID"
    names = {n.name(): n for n in node.nodes()}
    assert names["Source"]["number"].value() == 0 and names["Target"]["number"].value() == 1
    assert names["Output1"].input(0) is names["Source"]
    for button in ("remove", "cancel", "check_server"):
        assert "nuke_void.node" in node[button].value()


def test_gizmo_knobs_match_the_settings_snapshot(fake):
    from nuke_void import settings
    node = nuke.createNode("VOID", inpanel=False)
    for name, default in settings.KNOBS.items():
        assert node[name].value() == default, name
    assert "token" not in " ".join(node.knobs())


def test_gizmo_syntax_errors_are_caught():
    with pytest.raises(fake_gizmo.GizmoSyntaxError):
        fake_gizmo.tokenize("Gizmo { addUserKnob {1 a}")
    with pytest.raises(fake_gizmo.GizmoSyntaxError):
        fake_gizmo._user_knob(["99", "weird"])
