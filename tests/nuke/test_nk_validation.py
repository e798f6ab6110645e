from nuke_void import validation


def facts(**kw):
    base = dict(source_connected=True, target_connected=True, affected_connected=False, mask_mode="none",
                input_first=1001, input_last=1100, first=1001, last=1100, prompt="an empty street",
                server="http://gpu:8420", output_root="/tmp/out", target_channels=["rgba.red", "rgba.alpha"])
    base.update(kw)
    return validation.Facts(**base)


def test_good_setup_has_no_problems():
    assert validation.problems(facts()) == []


def test_everything_wrong_is_reported_at_once():
    found = validation.problems(facts(source_connected=False, target_connected=False, prompt="  ",
                                      server="gpu:8420", output_root=None, mask_mode="manual"))
    text = "\n".join(found)
    for words in ("Source input", "Target input", "Affected input", "prompt", "http://", "Save the script"):
        assert words in text
    assert validation.format_problems(found).startswith("VOID can't start yet")


def test_range_outside_input():
    [msg] = validation.problems(facts(first=990, last=1010))
    assert "990-1010" in msg and "1001-1100" in msg


def test_missing_target_channel_lists_what_exists():
    [msg] = validation.problems(facts(target_channel="mask.a"))
    assert "mask.a" in msg and "rgba.alpha" in msg


def test_busy_node():
    assert "already working" in validation.problems(facts(busy=True))[0]


def test_server_limits_are_checked_before_anything_is_rendered():
    limits = {"max_frames": 100, "max_resolution": 4096, "max_upload_mb": 4096.0}
    assert validation.server_limit_problems(1001, 1100, 4096, 2160, limits) == []
    [frames] = validation.server_limit_problems(1001, 1101, 1920, 1080, limits)
    assert "1001-1101 are 101 frames" in frames and "at most 100 per job" in frames and "--max-frames" in frames
    [size] = validation.server_limit_problems(1001, 1010, 8192, 4320, limits)
    assert "8192x4320" in size and "4096 pixels on the longest side" in size and "--max-resolution" in size
    assert len(validation.server_limit_problems(1, 500, 8192, 4320, limits)) == 2  # both at once
    assert validation.server_limit_problems(1, 5000, 0, 0, {}) == []  # an older server reports none: no check
    assert "Reformat it down before the VOID node" in size  # the node's wording; the `void` command words its own
    [cli] = validation.server_limit_problems(1, 10, 8192, 4320, limits, source="plate.mov", reformat="Scale it down")
    assert cli.startswith("plate.mov is 8192x4320") and "Scale it down, or ask" in cli


def test_files_over_the_servers_upload_limit_are_named_before_any_upload(tmp_path):
    small, big = tmp_path / "roto.0001.png", tmp_path / "plate.mov"
    small.write_bytes(b"x" * 1000)
    big.write_bytes(b"x" * 3 * 2**20)
    [problem] = validation.upload_size_problems([str(small), str(big)], {"max_upload_mb": 2.0})
    assert problem.startswith("plate.mov is 3 MB; this server takes files of at most 2 MB")
    assert validation.upload_size_problems([str(big)], {}) == []  # an older server reports none: no check
