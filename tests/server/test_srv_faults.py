"""Faults: the server killed at every stage, GPU out of memory, a full disk, a cancel at every stage. Each job
ends succeeded, failed with a clear error, or cancelled; nothing that had finished is lost; nothing partial is served."""
from __future__ import annotations

import json

import pytest
import requests

from nuke_void.client import JobCancelledError, JobFailed, VoidClient
from void_server.pipelines.testing import stages_run
from void_test_harness import ServerProcess, cut_upload, exr_plates, png_mattes, poll, spec_for


def _files(tmp_path, name, frames):
    return exr_plates(tmp_path / name, 1, frames), png_mattes(tmp_path / name, 1, frames)


def _submit(vc, tmp_path, name, frames=2, **overrides):
    plates, mattes = _files(tmp_path, name, frames)
    spec = spec_for(plates, mattes, 1, **overrides)
    return vc.submit(spec, {"plate": [str(p) for p in plates], "target": [str(p) for p in mattes]})


def _at(vc, job, stage):
    return poll(lambda: vc.status(job)["stage"] == stage, what="job %s to reach %s" % (job, stage))


def _result_dir(server, job):
    return server.data_dir / "jobs" / job / "results"


def _option(name, value):
    return ["--pipeline-option", "%s=%s" % (name, json.dumps(value))]


# -- killed at every stage ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["pass1", "pass2", "merge"])
def test_server_killed_in_a_stage_resumes_and_keeps_what_finished(tmp_path, stage):
    server = ServerProcess(tmp_path / "data", step_delay=0.05).start()
    try:
        vc = VoidClient(server.url, retries=3)
        done = _submit(vc, tmp_path, "done", passes=1, steps_pass1=1)
        vc.wait(done, poll=0.05)
        before = {f["name"]: f["sha256"] for f in vc.results(done)}
        frames = 12 if stage == "merge" else 2  # merge takes a step delay per frame: room to be caught in it
        job = _submit(vc, tmp_path, "job", frames=frames, steps_pass1=20, steps_pass2=20)
        queued = _submit(vc, tmp_path, "queued", passes=1, steps_pass1=1)
        _at(vc, job, stage)
        assert vc.status(queued)["state"] == "queued"
        server.kill()

        server = ServerProcess(tmp_path / "data", port=server.port, step_delay=0.05).start()
        final = vc.wait(job, poll=0.05)
        assert final["state"] == "succeeded" and final["attempts"] == 2
        ran = stages_run(tmp_path / "data" / "jobs" / job / "work")
        order = ["quadmask", "pass1", "pass2", "merge"]
        assert ran.count(stage) == 2  # the interrupted stage ran again...
        assert all(ran.count(s) == 1 for s in order[:order.index(stage)])  # ...the finished ones did not
        assert vc.wait(queued, poll=0.05)["attempts"] == 1  # the queued job waited, then ran once
        assert len(vc.download_results(job, str(tmp_path / "out"))) == frames + 1
        assert {f["name"]: f["sha256"] for f in vc.results(done)} == before
        assert not list(_result_dir(server, job).glob("*.tmp"))
    finally:
        server.stop()


def test_server_killed_during_an_upload_resumes_the_upload(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        vc = VoidClient(server.url, retries=3)
        plates, mattes = _files(tmp_path, "in", 2)
        job = vc.create_job(spec_for(plates, mattes, 1, passes=1, steps_pass1=1))["id"]
        data = plates[0].read_bytes()
        url_path = "/v1/jobs/%s/inputs/plate/%s" % (job, plates[0].name)
        sock = cut_upload(url_path, server.port, data[: len(data) // 2], len(data))
        poll(lambda: requests.get(server.url + url_path).json()["size"] == len(data) // 2, what="half the file")
        server.kill()
        sock.close()
        server = ServerProcess(tmp_path / "data", port=server.port).start()
        assert vc.status(job)["state"] == "created"
        assert requests.get(server.url + url_path).json()["size"] == len(data) // 2  # kept across the crash
        vc.upload_inputs(job, "plate", [str(p) for p in plates])
        vc.upload_inputs(job, "target", [str(p) for p in mattes])
        vc.start(job)
        assert vc.wait(job, poll=0.05)["state"] == "succeeded"
    finally:
        server.stop()


# -- GPU out of memory ----------------------------------------------------------------------------------------------

def test_out_of_memory_retries_in_the_next_memory_mode_from_the_checkpoint(tmp_path):
    server = ServerProcess(tmp_path / "data", args=_option("oom_modes", ["gpu"])).start()
    try:
        vc = VoidClient(server.url, retries=2)
        job = _submit(vc, tmp_path, "a")
        final = vc.wait(job, poll=0.05)
        assert any("pass1: out of GPU memory in memory mode gpu: retried from the last finished stage in "
                   "model_offload" in n for n in final["notes"])
        # the quadmask had finished: only pass 1 ran again
        assert stages_run(tmp_path / "data" / "jobs" / job / "work") == ["quadmask", "pass1", "pass1", "pass2", "merge"]
        assert vc.health()["models"]["memory_mode"] == "model_offload"  # later jobs start in the mode that fits
        assert vc.wait(_submit(vc, tmp_path, "b"), poll=0.05)["attempts"] == 1
    finally:
        server.stop()


def test_out_of_memory_in_every_mode_fails_with_what_was_tried(tmp_path):
    modes = ["gpu", "model_offload", "sequential_offload"]
    server = ServerProcess(tmp_path / "data", args=_option("oom_modes", modes)).start()
    try:
        vc = VoidClient(server.url, retries=2)
        job = _submit(vc, tmp_path, "a")
        with pytest.raises(JobFailed) as e:
            vc.wait(job, poll=0.05)
        assert "pass1: out of GPU memory even in memory mode sequential_offload" in e.value.message
        notes = e.value.status["notes"]
        assert len(notes) == 2 and "in model_offload" in notes[0] and "in sequential_offload" in notes[1]
        assert not any(_result_dir(server, job).iterdir())
    finally:
        server.stop()


# -- disk full ------------------------------------------------------------------------------------------------------

def test_disk_full_while_writing_results_fails_cleanly(tmp_path):
    server = ServerProcess(tmp_path / "data", args=_option("disk_full_at_frame", 1)).start()
    try:
        vc = VoidClient(server.url, retries=2)
        small = _submit(vc, tmp_path, "small", frames=1, passes=1, steps_pass1=1)  # never reaches frame index 1
        assert vc.wait(small, poll=0.05)["state"] == "succeeded"
        before = {f["name"]: f["sha256"] for f in vc.results(small)}
        job = _submit(vc, tmp_path, "big", frames=3, passes=1, steps_pass1=1)
        with pytest.raises(JobFailed) as e:
            vc.wait(job, poll=0.05)
        assert "merge: the disk holding the server's data dir is full" in e.value.message
        assert not any(_result_dir(server, job).iterdir())  # the frame written before the fault is gone too
        assert {f["name"]: f["sha256"] for f in vc.results(small)} == before
        assert len(vc.download_results(small, str(tmp_path / "out"))) == 2
    finally:
        server.stop()


# -- cancelled at every stage ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["created", "queued", "pass1", "pass2", "merge", "succeeded"])
def test_cancel_at_every_stage(client, testing_server, tmp_path, stage):
    blocker = None
    if stage == "created":
        plates, mattes = _files(tmp_path, "in", 2)
        job = client.create_job(spec_for(plates, mattes, 1))["id"]
    elif stage == "queued":
        blocker = _submit(client, tmp_path, "blocker", steps_pass1=200)
        _at(client, blocker, "pass1")
        job = _submit(client, tmp_path, "job")
        assert client.status(job)["state"] == "queued"
    elif stage == "succeeded":
        job = _submit(client, tmp_path, "job", passes=1, steps_pass1=1)
        client.wait(job, poll=0.05)
    else:
        job = _submit(client, tmp_path, "job", frames=20 if stage == "merge" else 2, steps_pass1=20, steps_pass2=20)
        _at(client, job, stage)
    client.cancel(job)
    if stage == "succeeded":
        assert client.status(job)["state"] == "succeeded" and client.results(job)  # finished work is kept
        return
    with pytest.raises(JobCancelledError):
        client.wait(job, poll=0.05)
    assert client.status(job)["results"] == []
    results = _result_dir(testing_server, job)
    assert not results.exists() or not any(results.iterdir())  # nothing partial left to mistake for a result
    if blocker:
        client.cancel(blocker)
        with pytest.raises(JobCancelledError):
            client.wait(blocker, poll=0.05)
