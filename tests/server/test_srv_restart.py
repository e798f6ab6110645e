"""A server killed with SIGKILL mid-job and started again loses nothing: finished results stay downloadable,
queued jobs stay queued, and the running job resumes from its last completed stage."""
from __future__ import annotations

import numpy as np

from nuke_void.client import VoidClient
from void_server.pipelines.testing import stages_run
from void_test_harness import ServerProcess, exr_plates, png_mattes, poll, spec_for


def _submit(client, tmp_path, name, **overrides):
    plates = exr_plates(tmp_path / name, 1, 2)
    mattes = png_mattes(tmp_path / name, 1, 2)
    spec = spec_for(plates, mattes, 1, **overrides)
    return client.submit(spec, {"plate": [str(p) for p in plates], "target": [str(p) for p in mattes]})


def test_sigkill_mid_job_then_restart_resumes_from_last_stage(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(data, step_delay=0.05).start()
    try:
        client = VoidClient(server.url, retries=2)
        finished = _submit(client, tmp_path, "a")
        client.wait(finished, poll=0.05)
        finished_files = {f["name"]: f["sha256"] for f in client.results(finished)}

        interrupted = _submit(client, tmp_path, "b", steps_pass2=200)
        waiting = _submit(client, tmp_path, "c")
        poll(lambda: (lambda s: s["stage"] == "pass2" and s["step"] >= 2)(client.status(interrupted)),
             what="the second job to be in pass 2")
        assert client.status(waiting)["state"] == "queued"
        assert client.status(waiting)["queue_position"] == 1
        health = client.health()
        assert health["queue_length"] == 1 and health["running"] == [interrupted]
        server.kill()

        server = ServerProcess(data, port=server.port).start()  # no step delay now: the rest runs at once
        assert client.status(interrupted)["state"] in ("queued", "running", "succeeded")
        assert client.status(waiting)["state"] in ("queued", "running", "succeeded")
        resumed = client.wait(interrupted, poll=0.05)
        assert resumed["attempts"] == 2
        # quadmask and pass 1 had finished before the kill: only pass 2 (interrupted) and merge ran again.
        assert stages_run(data / "jobs" / interrupted / "work") == ["quadmask", "pass1", "pass2", "pass2", "merge"]
        assert client.wait(waiting, poll=0.05)["attempts"] == 1
        assert {f["name"]: f["sha256"] for f in client.results(finished)} == finished_files

        out = client.download_results(interrupted, str(tmp_path / "out"))
        assert len(out) == 3  # two frames and the manifest
    finally:
        server.stop()


def test_cancel_requested_before_a_crash_stays_cancelled(tmp_path):
    data = tmp_path / "data"
    server = ServerProcess(data, step_delay=0.5).start()  # slow steps: the cancel is still pending at the kill
    try:
        client = VoidClient(server.url, retries=2)
        job = _submit(client, tmp_path, "a", steps_pass1=100)
        poll(lambda: client.status(job)["stage"] == "pass1", what="the job to run pass 1")
        assert client.cancel(job)["state"] in ("running", "cancelled")
        server.kill()
        server = ServerProcess(data, port=server.port).start()
        assert client.status(job)["state"] == "cancelled"
        assert np.isfinite(client.status(job)["updated_at"])
    finally:
        server.stop()
