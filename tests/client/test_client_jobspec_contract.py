"""What nuke_void.jobspec.build_spec makes is a valid api.models.JobSpec: the client and server cannot drift."""
from __future__ import annotations

import itertools

import pytest

from nuke_void.jobspec import PRESETS, build_spec, upload_files
from void_server.api.models import InputRole, JobSpec

PLATE = ["shot.%04d.exr" % f for f in range(1001, 1004)]
ROTO = ["roto.%04d.png" % f for f in range(1001, 1004)]


@pytest.mark.parametrize("mask_mode, preset, shared", list(itertools.product(
    ["none", "manual", "auto", "quadmask"], sorted(PRESETS), [False, True])))
def test_build_spec_validates_against_jobspec(mask_mode, preset, shared):
    spec = build_spec(1001, 1003, " a quiet street ", plate=PLATE, target=ROTO, affected=ROTO, quadmask=ROTO,
                      mask_mode=mask_mode, preset=preset, shared_paths=shared, seed=7, client="test")
    model = JobSpec.model_validate(spec)
    assert model.frames.count == 3 and model.prompt == "a quiet street" and model.seed == 7
    assert model.passes == PRESETS[preset]["passes"]
    roles = set(model.inputs)
    expected = {"none": {"plate", "target"}, "auto": {"plate", "target"}, "manual": {"plate", "target", "affected"},
                "quadmask": {"plate", "target", "quadmask"}}[mask_mode]
    assert {r.value for r in roles} == expected
    plate = model.inputs[InputRole.plate]
    if shared:
        assert plate.source == "path" and plate.path == PLATE[0]
    else:
        assert plate.files == PLATE
        assert set(upload_files(spec, {"plate": PLATE, "target": ROTO, "affected": ROTO, "quadmask": ROTO})) == {
            r.value for r in roles}


def test_overrides_are_carried_into_the_spec():
    spec = build_spec(1, 1, "x", plate=["a.exr"], target=["m.png"], passes=1, steps_pass1=9, steps_pass2=11,
                      input_encoding="srgb", memory_mode="fp8", fps=25.0)
    model = JobSpec.model_validate(spec)
    assert (model.passes, model.steps_pass1, model.steps_pass2) == (1, 9, 11)
    assert (model.input_encoding, model.memory_mode, model.fps) == ("srgb", "fp8", 25.0)
