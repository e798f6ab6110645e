"""Test-only controls for the fake `nuke` (kept out of the `nuke` namespace so that stays Foundry's API)."""
from __future__ import annotations

import time
from typing import Callable, Optional

import nuke


def reset(gui: bool = True, script: str = "") -> None:
    nuke._reset()
    nuke.GUI = gui
    nuke.root()["name"]._value = script
    nuke.root().setModified(False)


def state():
    return nuke._state


def pump(until: Optional[Callable[[], bool]] = None, timeout: float = 60.0) -> None:
    """Run queued executeInMainThread calls on this (the main) thread until `until()` or the queue is empty."""
    deadline = time.time() + timeout
    while True:
        with nuke._state.queue_lock:
            queued, nuke._state.main_queue[:] = list(nuke._state.main_queue), []
        for call, args, kwargs, box in queued:
            try:
                result = call(*args, **kwargs)
                if box is not None:
                    box["result"] = result
            except BaseException as e:  # noqa: B902 - handed back to the waiting thread
                if box is None:
                    raise
                box["error"] = e
            finally:
                if box is not None:
                    box["done"].set()
        if until is None and not queued:
            return
        if until is not None and until() and not queued:
            return
        if time.time() > deadline:
            raise TimeoutError("main-thread queue still busy after %.0f s" % timeout)
        time.sleep(0.02)


def press(node, knob_name: str) -> None:
    """Press a PyScript button the way Nuke does: thisNode()/thisKnob() set, script run with `nuke` in scope."""
    knob = node[knob_name]
    nuke._run_callback(node, knob, knob.value())


def set_roto_shape(node, shape: Callable[[int], Optional[tuple]]) -> None:
    """A fake Roto's matte: frame -> (x0, y0, x1, y1) box in pixels (Nuke's y-up), or None for nothing."""
    node._fake["shape"] = shape


def messages():
    return list(nuke._state.messages)
