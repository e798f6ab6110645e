"""The VOID node's buttons without a server: validation messages, unreachable server, script left untouched."""
from __future__ import annotations

import os

import nuke
from nk_helpers import ready_void_node


def test_unconnected_node_lists_every_problem_and_changes_nothing(fake):
    void = nuke.createNode("VOID", inpanel=False)
    nuke.root().setModified(False)
    fake.press(void, "remove")
    [(kind, text)] = fake.messages()
    assert kind == "message"
    assert "Connect the plate to the Source input" in text and "Target input" in text and "prompt" in text
    assert not os.path.exists(os.path.join(os.path.dirname(nuke.root()["name"].value()), "void"))
    assert not nuke.allNodes("Write")


def test_unsaved_script_asks_to_save_or_pick_a_folder(fake):
    fake.reset(script="")
    nuke.pluginAddPath(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    void = nuke.createNode("VOID", inpanel=False)
    fake.press(void, "remove")
    assert "Save the script first" in fake.messages()[0][1]


def test_unreachable_server_is_explained(fake, dead_server_url):
    void = ready_void_node(dead_server_url, prompt="a clear sky")
    fake.press(void, "check_server")
    assert "Cannot reach the VOID server" in fake.messages()[-1][1]
    fake.press(void, "remove")
    assert "Cannot reach the VOID server" in fake.messages()[-1][1]
    assert void["status"].value().startswith("Cannot reach")


def test_cancel_without_a_job(fake):
    void = nuke.createNode("VOID", inpanel=False)
    fake.press(void, "cancel")
    assert void["status"].value() == "Nothing to cancel"


def test_token_never_lands_in_a_knob(fake, monkeypatch):
    from nuke_void import node
    monkeypatch.setenv("VOID_TOKEN", "s3cret")
    void = nuke.createNode("VOID", inpanel=False)
    assert node.token() == "s3cret"
    assert all("s3cret" not in str(k.value()) for k in void.allKnobs())


def test_menu_entry_with_icon_and_shortcut(fake):
    from nuke_void import startup
    startup.menu()
    item = nuke.menu("Nodes").findItem("VOID/VOID")
    assert item is not None and item.shortcut() == startup.SHORTCUT and item.icon() == "VOID.png"
    item.invoke()
    assert nuke.allNodes("VOID")
    assert os.path.isfile(os.path.join(startup.GIZMOS, "VOID.png"))
