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
