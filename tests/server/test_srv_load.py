"""Load and soak, bounded in time: 20 clients against one testing-pipeline server on loopback; then a short soak
watching the server's open files and memory. Timings are printed for docs/reliability.md, never asserted."""
from __future__ import annotations

import statistics
import threading
import time

from nuke_void.client import TERMINAL, VoidClient
from void_test_harness import ServerProcess, exr_plates, png_mattes, poll, spec_for

CLIENTS = 20
LOAD_SECONDS = 12.0
SOAK_SECONDS = 10.0


def _one_job(vc, folder, latencies):
    plates, mattes = exr_plates(folder, 1, 1), png_mattes(folder, 1, 1)
    spec = spec_for(plates, mattes, 1, passes=1, steps_pass1=1)
    job = vc.submit(spec, {"plate": [str(p) for p in plates], "target": [str(p) for p in mattes]})

    while True:  # wait() by hand, timing every status request
        t = time.monotonic()
        state = vc.status(job)["state"]
        latencies.append(time.monotonic() - t)
        if state in TERMINAL:
            break
        time.sleep(0.05)
    if state != "succeeded":
        raise AssertionError("job %s ended %s" % (job, state))
    vc.download_results(job, str(folder / "out"))
    return job


def test_twenty_clients_for_a_fixed_time_lose_nothing(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    submitted, errors, latencies = [], [], []
    deadline = time.monotonic() + LOAD_SECONDS

    def client_loop(i):
        vc = VoidClient(server.url, retries=2, timeout=60)
        n = 0
        while time.monotonic() < deadline:
            try:
                submitted.append(_one_job(vc, tmp_path / ("c%d-%d" % (i, n)), latencies))
            except Exception as e:  # recorded, and the test fails below
                errors.append("%s: %s" % (type(e).__name__, e))
            n += 1

    try:
        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(LOAD_SECONDS + 120)
        elapsed = time.monotonic() - started
        assert errors == []
        states = {j["id"]: j["state"] for j in VoidClient(server.url).list_jobs()}
        assert sorted(states) == sorted(submitted) and set(states.values()) == {"succeeded"}  # every job accounted for
        lat = sorted(latencies)
        print("\nLOAD: %d clients, %.1f s, %d jobs submitted, run and downloaded, %d errors, 0 lost; status latency "
              "ms: median %.1f, p95 %.1f, max %.1f over %d polls"
              % (CLIENTS, elapsed, len(submitted), len(errors), 1000 * statistics.median(lat),
                 1000 * lat[int(0.95 * (len(lat) - 1))], 1000 * lat[-1], len(lat)))
    finally:
        server.stop()


def test_short_soak_keeps_open_files_and_memory_bounded(tmp_path):
    server = ServerProcess(tmp_path / "data").start()
    try:
        vc = VoidClient(server.url, retries=2)
        for i in range(3):  # warm up: imports, caches, the thread pool
            vc.delete(_one_job(vc, tmp_path / ("warm%d" % i), []))
        fds, rss = server.fd_count(), server.rss_mib()
        deadline, jobs, peak_fds = time.monotonic() + SOAK_SECONDS, 0, fds
        while time.monotonic() < deadline:
            job = _one_job(vc, tmp_path / ("soak%d" % jobs), [])
            vc.delete(job)
            jobs += 1
            peak_fds = max(peak_fds, server.fd_count())
        # open files settle back once the last request's connections close
        end_fds = poll(lambda: (lambda n: n if n <= fds + 4 else None)(server.fd_count()), timeout=20,
                       what="open files to return to the baseline (%d)" % fds)
        growth = server.rss_mib() - rss
        print("\nSOAK: %d jobs in %.0f s; open files %d -> %d (peak %d); RSS %.0f -> %.0f MiB"
              % (jobs, SOAK_SECONDS, fds, end_fds, peak_fds, rss, rss + growth))
        assert jobs >= 5
        assert growth < 150, "server memory grew %.0f MiB over %d jobs" % (growth, jobs)
        assert not list((tmp_path / "data" / "jobs").iterdir())  # deleted jobs leave no files
    finally:
        server.stop()
