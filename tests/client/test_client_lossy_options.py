"""The lossy speed options on the client: speed presets, overrides, range checks, the `void` flags; every spec
validates against the server's JobSpec, and a lossless spec carries none of the new keys."""
from __future__ import annotations

import pytest

from nuke_void import cli
from nuke_void.jobspec import SPEEDS, SpecError, build_spec
from void_server.api.models import JobSpec

PLATE, ROTO = ["a.0001.exr"], ["m.0001.png"]


def _spec(**kw):
    return build_spec(1, 1, "an empty wall", plate=PLATE, target=ROTO, **kw)


@pytest.mark.parametrize("speed", list(SPEEDS))
def test_speed_presets_validate_against_the_server_contract(speed):
    model = JobSpec.model_validate(_spec(speed=speed))
    expected = {"lossless": (0.0, False, 30, 50), "fast": (0.1, False, 30, 50), "fastest": (0.1, True, 20, 25)}[speed]
    assert (model.step_cache, model.fp8_matmul, model.steps_pass1, model.steps_pass2) == expected


def test_lossless_sends_none_of_the_new_keys_and_overrides_win():
    assert not {"step_cache", "fp8_matmul"} & set(_spec())
    assert not {"step_cache", "fp8_matmul"} & set(_spec(speed="fastest", step_cache=0, fp8_matmul=False))
    spec = _spec(speed="fastest", step_cache=0.05, steps_pass2=40)
    assert (spec["step_cache"], spec["fp8_matmul"], spec["steps_pass1"], spec["steps_pass2"]) == (0.05, True, 20, 40)


@pytest.mark.parametrize("kw, words", [
    (dict(speed="ludicrous"), "Speed 'ludicrous' is not one of lossless, fast, fastest"),
    (dict(step_cache=-0.1), "outside 0 (off) to 1"),
    (dict(step_cache=3.0), "outside 0 (off) to 1"),
])
def test_bad_values_are_refused_in_words(kw, words):
    with pytest.raises(SpecError, match=words.replace("(", r"\(").replace(")", r"\)")):
        _spec(**kw)


class _Submitted(Exception):
    pass


class _Client:
    def health(self):
        return {"ok": True}  # no limits reported: none checked

    def submit(self, spec, local, progress=None):
        raise _Submitted(spec)


@pytest.mark.parametrize("flags, expected", [
    ([], (None, None)),
    (["--speed", "fast"], (0.1, None)),
    (["--speed", "fastest"], (0.1, True)),
    (["--step-cache", "0.2", "--fp8-matmul"], (0.2, True)),
    (["--speed", "fastest", "--step-cache", "0"], (None, True)),
])
def test_void_remove_flags_reach_the_spec(tmp_path, flags, expected):
    for name in ("p.0001.exr", "m.0001.png"):
        (tmp_path / name).write_bytes(b"")
    args = cli.build_parser().parse_args(
        ["remove", "--plate", str(tmp_path / "p.####.exr"), "--target", str(tmp_path / "m.####.png"),
         "--frames", "1", "--prompt", "an empty wall", "--out", str(tmp_path / "out")] + flags)
    with pytest.raises(_Submitted) as e:
        cli.cmd_remove(args, _Client())
    spec = e.value.args[0]
    assert (spec.get("step_cache"), spec.get("fp8_matmul")) == expected
    JobSpec.model_validate(spec)
