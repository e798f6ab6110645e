"""Press Remove on a VOID node in a fake Nuke script against a real `void-server --pipeline testing`."""
from __future__ import annotations

import os

import numpy as np
import OpenEXR
import pytest

import fake_render
import nuke

from void_test_harness import ServerProcess  # tests/server, on the path by conftest

W, H, PIXEL_ASPECT = 40, 24, 2.0  # anamorphic, not a default format
FIRST, LAST = 1001, 1004
BOX = (10, 6, 22, 14)  # roto box in Nuke pixels (x0, y0, x1, y1), y up


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("void-server") / "data").start()
    yield proc
    proc.stop()


def _plate(folder):
    os.makedirs(folder)
    for f in range(FIRST, LAST + 1):
        value = np.full((H, W), 0.1 * (f - 1000), np.float32)
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
                  "pixelAspectRatio": PIXEL_ASPECT}
        OpenEXR.File(header, {"R": value, "G": value * 2, "B": value + 3.0}).write(
            os.path.join(folder, "plate.%04d.exr" % f))
    return os.path.join(folder, "plate.%04d.exr").replace("\\", "/")


def _script(fake, tmp_path, server_url, matte_frames=(1002, 1003)):
    import fake_control

    read = nuke.nodes.Read()
    read["file"].setValue(_plate(str(tmp_path / "plates")))
    read["first"].setValue(FIRST)
    read["last"].setValue(LAST)
    roto = nuke.nodes.Roto()
    roto.setInput(0, read)  # a roto over the plate, as artists draw it
    fake_control.set_roto_shape(roto, lambda f: BOX if f in matte_frames else None)
    read.selectOnly()
    void = nuke.createNode("VOID", inpanel=False)  # connects Source to the selected Read, as in Nuke
    void.setInput(1, roto)
    void["server"].setValue(server_url)
    void["prompt"].setValue("an empty room [no props]")
    void["passes"].setValue("1")
    return read, roto, void


def _run(fake, void):
    fake.press(void, "remove")
    from nuke_void import node as void_node
    job = None
    for j in list(void_node._jobs.values()):
        job = j
    fake.pump(until=lambda: void.fullName() not in void_node._jobs, timeout=120)
    if job is not None and job.thread is not None:
        job.thread.join(30)
    fake.pump()


def _exr(path):
    with OpenEXR.File(path, separate_channels=True) as f:
        return {k: np.asarray(v.pixels) for k, v in f.channels().items()}


def test_remove_creates_versioned_results_from_the_manifest(fake, tmp_path, server):
    read, roto, void = _script(fake, tmp_path, server.url)
    nuke.root()["proxy"].setValue(True)  # proxy on: the inputs must still go out at full resolution
    void.setXYpos(0, 0)
    before = {n.name() for n in nuke.allNodes()}
    _run(fake, void)

    assert void["status"].value().startswith("Done: v001"), (void["status"].value(), fake.messages())
    assert fake.messages() == []
    assert nuke.root()["proxy"].value() is True
    assert not nuke.allNodes("Write"), "temporary Writes must be gone"
    made = [n for n in nuke.allNodes() if n.name() not in before]
    by_class = {}
    for n in made:
        by_class.setdefault(n.Class(), []).append(n)
    assert len(by_class["Read"]) == 2 and len(by_class["BackdropNode"]) == 1
    assert len(by_class["Shuffle2"]) == 4 and len(by_class["Switch"]) == 1 and len(by_class["Merge2"]) == 1

    version = os.path.join(os.path.dirname(nuke.root()["name"].value()), "void", "sh010_comp_v003", void.name(),
                           "v001")
    clean = [r for r in by_class["Read"] if "clean" in r["label"].value()][0]
    assert clean["file"].value() == os.path.join(version, "clean.%04d.exr").replace("\\", "/")
    assert (clean["first"].value(), clean["last"].value()) == (FIRST, LAST)
    assert clean["raw"].value() is True and clean["on_error"].value() == "error"
    assert not os.path.exists(os.path.join(version, "inputs")), "uploaded inputs are cleaned up after success"

    # The EXRs hold the clean plate and the quadmask regions where the roto was.
    remove = np.zeros((H, W), bool)
    x0, y0, x1, y1 = BOX
    remove[H - y1:H - y0, x0:x1] = True
    for f in range(FIRST, LAST + 1):
        planes = _exr(fake_render.frame_path(clean["file"].value(), f))
        assert {"R", "G", "B", "quadmask.remove", "quadmask.overlap", "quadmask.affected"} <= set(planes)
        assert planes["R"].shape == (H, W)  # full resolution although proxy mode was on
        expect = remove if f in (1002, 1003) else np.zeros_like(remove)
        assert np.array_equal(planes["quadmask.remove"] > 0.5, expect), f
        assert not planes["quadmask.affected"].any()
        np.testing.assert_allclose(planes["R"][~expect], 0.1 * (f - 1000), rtol=1e-3)

    # Each region on its own, and the QC switch follows the node's "QC shows" knob.
    shuffles = {s["label"].value(): s for s in by_class["Shuffle2"]}
    assert set(shuffles) == {"remove", "overlap", "affected", "all regions"}
    img = fake_render.evaluate(shuffles["remove"], 1002)
    assert np.array_equal(img.planes["rgba.red"] > 0.5, remove)
    switch = by_class["Switch"][0]
    assert switch["which"].value() == 0
    void["qc_channel"].setValue("all")
    assert switch["which"].value() == 3
    qc = fake_render.evaluate(by_class["Merge2"][0], 1002)
    np.testing.assert_allclose(qc.planes["rgba.red"][remove], 0.2 + 0.5 * 1.0, rtol=1e-3)  # plate + half the region
    np.testing.assert_allclose(qc.planes["rgba.red"][~remove], 0.2, rtol=1e-3)

    # Backdrop around all of them, labelled with the version.
    backdrop = by_class["BackdropNode"][0]
    assert backdrop["label"].value().startswith("VOID v001")
    inside = set(n.name() for n in backdrop.getNodes())
    assert {n.name() for n in made if n is not backdrop} <= inside

    # Re-running makes v002 and leaves v001's nodes alone.
    positions = {n.name(): (n.xpos(), n.ypos()) for n in made}
    _run(fake, void)
    assert void["status"].value().startswith("Done: v002"), void["status"].value()
    assert all((nuke.toNode(k).xpos(), nuke.toNode(k).ypos()) == v for k, v in positions.items())
    backdrops = nuke.allNodes("BackdropNode")
    assert len(backdrops) == 2 and backdrops[1]["label"].value().startswith("VOID v002")
    assert backdrops[1].ypos() > backdrops[0].ypos() + backdrops[0].screenHeight()
    assert os.path.isfile(os.path.join(os.path.dirname(version), "v001", "clean.1001.exr"))


def test_empty_matte_is_refused_before_anything_is_sent(fake, tmp_path, server):
    _, _, void = _script(fake, tmp_path, server.url, matte_frames=())
    _run(fake, void)
    [(kind, text)] = fake.messages()
    assert "Target matte" in text and "empty on every frame of 1001-1004" in text
    assert not nuke.allNodes("Write") and not nuke.allNodes("BackdropNode")
    out = os.path.join(os.path.dirname(nuke.root()["name"].value()), "void", "sh010_comp_v003", void.name())
    assert os.listdir(out) == [], "the unused version folder is removed"


def test_a_range_over_the_servers_limit_is_refused_before_rendering(fake, tmp_path, tmp_path_factory):
    small = ServerProcess(tmp_path_factory.mktemp("void-small") / "data", args=["--max-frames", "3"]).start()
    try:
        _, _, void = _script(fake, tmp_path, small.url)
        _run(fake, void)
    finally:
        small.stop()
    [(kind, text)] = fake.messages()
    assert "Frames 1001-1004 are 4 frames; this server takes at most 3 per job" in text
    assert not nuke.allNodes("Write"), "nothing was rendered"
    out = os.path.join(os.path.dirname(nuke.root()["name"].value()), "void", "sh010_comp_v003", void.name())
    assert not os.path.isdir(out) or os.listdir(out) == []


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("void-slow") / "data", step_delay=0.5).start()
    yield proc
    proc.stop()


def test_cancel_stops_the_server_job(fake, tmp_path, slow_server):
    from nuke_void import node as void_node
    from nuke_void.client import VoidClient

    server = slow_server  # slow fake steps: the job is still running when Cancel is pressed
    _, _, void = _script(fake, tmp_path, server.url)
    fake.press(void, "remove")
    job = void_node._jobs[void.fullName()]
    fake.press(void, "cancel")
    job.thread.join(60)
    fake.pump()
    assert void["status"].value().startswith("Cancelled: the server job"), void["status"].value()
    assert job.job_id and VoidClient(server.url).status(job.job_id)["state"] == "cancelled"
    assert not nuke.allNodes("BackdropNode")


def test_terminal_session_runs_synchronously_without_main_thread_calls(fake, tmp_path, server):
    nuke.GUI = False  # `nuke -t`: no threads, no executeInMainThread (it would hang on the main thread)
    _, _, void = _script(fake, tmp_path, server.url)
    fake.press(void, "remove")  # returns only when the results are in
    assert void["status"].value().startswith("Done: v001"), void["status"].value()
    assert fake.state().main_queue == [] and len(nuke.allNodes("Read")) == 3
