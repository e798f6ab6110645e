import pytest

from nuke_void import settings


def test_defaults_make_a_valid_spec_for_the_server():
    models = pytest.importorskip("void_server.api.models")
    s = settings.Settings.from_values({"prompt": "an empty street", "passes": "1", "steps_pass1": 12,
                                        "target_channel": "mask.a"})
    spec = s.build_spec(1001, 1010, {"plate": ["plate.1001.exr"], "target": ["target.1001.exr"]}, fps=25.0)
    job = models.JobSpec.model_validate(spec)
    assert job.passes == 1 and job.steps_pass1 == 12 and job.steps_pass2 == 50
    assert job.inputs["target"].channel == "mask.a"
    assert job.fps == 25.0


def test_manual_mode_sends_affected():
    s = settings.Settings.from_values({"prompt": "p", "mask_mode": "manual"})
    spec = s.build_spec(1, 2, {"plate": ["p.1.exr"], "target": ["t.1.exr"], "affected": ["a.1.exr"]})
    assert spec["inputs"]["affected"]["channel"] == "alpha"


def test_frame_range_input_or_custom():
    s = settings.Settings.from_values({})
    assert s.frame_range(1, 50) == (1, 50)
    s = settings.Settings.from_values({"range_mode": "custom", "range_first": 10, "range_last": 20})
    assert s.frame_range(1, 50) == (10, 20)


def test_token_only_from_environment():
    assert settings.token_from_env({"VOID_TOKEN": " abc "}) == "abc"
    assert settings.token_from_env({}) is None
    assert "token" not in settings.KNOBS
