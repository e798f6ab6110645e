"""Tests of the Nuke side. The strict fake `nuke` (tests/fake_nuke) is put on sys.path for every test here."""
from __future__ import annotations

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FAKE = os.path.join(REPO, "tests", "fake_nuke")
if FAKE not in sys.path:
    sys.path.insert(0, FAKE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)
HARNESS = os.path.join(REPO, "tests", "server")  # void_test_harness: the real server, free ports
if HARNESS not in sys.path:
    sys.path.insert(0, HARNESS)


@pytest.fixture
def fake(tmp_path):
    """A fresh fake Nuke session with a saved script in tmp_path and the plugin registered like install.sh does."""
    import fake_control
    import nuke

    script = str(tmp_path / "shots" / "sh010_comp_v003.nk")
    os.makedirs(os.path.dirname(script))
    fake_control.reset(gui=True, script=script)
    nuke.pluginAddPath(REPO)
    nuke.root().setModified(False)
    yield fake_control
    fake_control.reset()


@pytest.fixture
def dead_server_url() -> str:
    """The address of a port nothing listens on: a server that is down."""
    from void_test_harness import free_port

    return "http://127.0.0.1:%d" % free_port()
