"""Helpers shared by the Nuke-side tests (the strict fake `nuke` is on sys.path: tests/nuke/conftest.py)."""
from __future__ import annotations


def ready_void_node(server_url: str, prompt: str = "an empty street at dusk"):
    """A VOID node with Source and Target connected, a prompt and a server: nothing wrong but what a test changes."""
    import nuke

    const = nuke.nodes.Constant()
    void = nuke.createNode("VOID", inpanel=False)
    void.setInput(0, const)
    void.setInput(1, const)
    void["prompt"].setValue(prompt)
    void["server"].setValue(server_url)
    return void
