from nuke_void import progress


def test_running_status_names_stage_step_and_eta():
    pct, text = progress.describe({"state": "running", "stage": "pass1", "step": 12, "total_steps": 30,
                                    "progress": 0.4, "eta_seconds": 185})
    assert pct == 40
    assert text == "Pass 1: step 12/30 - about 3 min left"


def test_terminal_and_waiting_states():
    assert progress.describe({"state": "queued", "queue_position": 2}) == (0, "Queued on the server (position 2)")
    assert progress.describe({"state": "succeeded", "progress": 1.0}) == (100, "Finished")
    assert progress.describe({"state": "failed", "progress": 0.5, "error": "out of GPU memory"}) == (
        50, "Failed: out of GPU memory")


def test_eta_formats():
    assert progress.format_eta(None) == ""
    assert progress.format_eta(0.2) == "about 1 s"
    assert progress.format_eta(3725) == "about 1 h 02 min"


def test_progress_is_clamped():
    assert progress.describe({"state": "running", "progress": 7})[0] == 100
    assert progress.transfer("Uploading", 5_000_000, 10_000_000) == (50, "Uploading: 5.0 of 10.0 MB")
