"""The VOID node's Speed knob: lossless (default) / fast / fastest, from the gizmo through settings.Settings to the one
spec builder (nuke_void.jobspec.build_spec), checked before anything is rendered."""
from __future__ import annotations

import os

import pytest

import nuke
from nk_helpers import ready_void_node
from nuke_void import jobspec, node as void_node, settings, validation

FILES = {"plate": ["plate.1001.exr", "plate.1002.exr"], "target": ["target.1001.exr", "target.1002.exr"]}
GIZMO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "gizmos", "VOID.gizmo")


def _spec(void):
    return void_node._settings(void).build_spec(1001, 1002, FILES, fps=24.0, client="Nuke test")


def test_gizmo_has_the_speed_pulldown_in_the_quality_settings(fake):
    void = nuke.createNode("VOID", inpanel=False)
    knob = void["speed"]
    assert isinstance(knob, nuke.Enumeration_Knob)
    assert knob.values() == ["lossless", "fast", "fastest"] == list(jobspec.SPEEDS) == list(settings.SPEEDS)
    assert knob.value() == "lossless" == settings.KNOBS["speed"]
    assert knob.label() == "Speed"
    order = [k.name() for k in void.allKnobs()]
    assert order.index("div_quality") < order.index("preset") < order.index("speed") < order.index("div_output")
    # a user knob of the gizmo itself (not one added by Python at run time), so Nuke saves it with the script
    with open(GIZMO) as f:
        assert " addUserKnob {4 speed l Speed " in f.read()


def test_speed_tooltip_states_each_presets_cost(fake):
    tip = nuke.createNode("VOID", inpanel=False)["speed"].tooltip()
    lines = {line.split(":")[0]: line for line in tip.splitlines()}
    assert "reference's math" in lines["lossless"]
    assert "step cache" in lines["fast"] and "skipped" in lines["fast"] and "Lossy" in lines["fast"]
    for words in ("step cache", "float8", "20 / 25", "Lossy", "H100", "8.9", "fails before any work"):
        assert words in lines["fastest"], words
    assert "docs/performance.md" in tip


@pytest.mark.parametrize("speed, fields", [
    ("lossless", {"steps_pass1": 30, "steps_pass2": 50}),
    ("fast", {"step_cache": jobspec.STEP_CACHE_FAST, "steps_pass1": 30, "steps_pass2": 50}),
    ("fastest", {"step_cache": jobspec.STEP_CACHE_FAST, "fp8_matmul": True, "steps_pass1": 20, "steps_pass2": 25}),
])
def test_each_speed_reaches_the_job_spec(fake, speed, fields):
    void = nuke.createNode("VOID", inpanel=False)
    void["prompt"].setValue("an empty street")
    void["speed"].setValue(speed)
    spec = _spec(void)
    assert {k: spec.get(k) for k in ("step_cache", "fp8_matmul", "steps_pass1", "steps_pass2") if k in spec} == fields
    if speed == "lossless":  # nothing new in the spec: servers that predate the lossy options accept it
        assert not {"step_cache", "fp8_matmul"} & set(spec)
    models = pytest.importorskip("void_server.api.models")
    job = models.JobSpec.model_validate(spec)
    assert (job.step_cache, job.fp8_matmul) == (fields.get("step_cache", 0.0), fields.get("fp8_matmul", False))


def test_advanced_steps_still_override_the_fastest_step_counts(fake):
    void = nuke.createNode("VOID", inpanel=False)
    void["prompt"].setValue("an empty street")
    void["speed"].setValue("fastest")
    void["steps_pass2"].setValue(40)
    spec = _spec(void)
    assert (spec["steps_pass1"], spec["steps_pass2"], spec["fp8_matmul"]) == (20, 40, True)


def test_unknown_speed_is_refused_naming_the_knob_before_anything_renders(fake, dead_server_url):
    void = ready_void_node(dead_server_url)
    # a gizmo whose menu has an item this nuke_void does not know (e.g. a newer gizmo with an older plugin)
    void["speed"].setValues(["lossless", "fast", "fastest", "ludicrous"])
    void["speed"].setValue("ludicrous")
    fake.press(void, "remove")
    [(kind, text)] = fake.messages()
    assert kind == "message"
    assert text == "Speed 'ludicrous' is not one of lossless, fast, fastest: pick one on the VOID node's Speed knob."
    assert not nuke.allNodes("Write")
    assert not os.path.exists(os.path.join(os.path.dirname(nuke.root()["name"].value()), "void"))


def test_fastest_with_layer_streaming_offload_is_refused_before_anything_renders(fake, dead_server_url):
    void = ready_void_node(dead_server_url)
    void["speed"].setValue("fastest")
    void["memory_mode"].setValue("sequential_offload")
    fake.press(void, "remove")
    text = fake.messages()[-1][1]
    assert "Speed 'fastest'" in text and "float8" in text and "GPU memory" in text
    assert not nuke.allNodes("Write")


def test_a_spec_error_after_rendering_is_a_message_and_leaves_no_version(fake, monkeypatch, dead_server_url):
    """Knob values the checks do not cover still reach the artist as a message (not a traceback), and the
    just-claimed version folder goes away."""
    from nuke_void import render
    void = ready_void_node(dead_server_url)
    void["preset"].setValues(["draft", "reference", "ultra"])
    void["preset"].setValue("ultra")
    monkeypatch.setattr(void_node, "_check_health", lambda server: {"ready": True})
    monkeypatch.setattr(render, "render_inputs", lambda *a, **k: dict(FILES))
    monkeypatch.setattr(render, "matte_has_signal", lambda *a, **k: True)
    fake.press(void, "remove")
    assert fake.messages()[-1][1] == "Quality preset 'ultra' is not one of draft, reference."
    root = void_node._output_root(void, void_node._settings(void))
    assert not os.path.isdir(os.path.join(root, "v001"))
    assert not void_node._jobs


def _facts(**kw):
    base = dict(source_connected=True, target_connected=True, affected_connected=False, mask_mode="none",
                input_first=1001, input_last=1100, first=1001, last=1100, prompt="an empty street",
                server="http://gpu:8420", output_root="/tmp/out")
    base.update(kw)
    return validation.Facts(**base)


@pytest.mark.parametrize("speed", list(jobspec.SPEEDS))
@pytest.mark.parametrize("memory_mode", settings.MEMORY_MODES)
def test_speed_checks(speed, memory_mode):
    found = validation.problems(_facts(speed=speed, memory_mode=memory_mode))
    # model offload lends each transformer whole to the GPU for its pass: float8 runs; layer streaming does not.
    assert bool(found) == (speed == "fastest" and memory_mode == "sequential_offload")


def test_unknown_speed_is_one_problem_among_the_others():
    found = validation.problems(_facts(speed="", prompt=""))
    assert len(found) == 2 and found[1].startswith("Speed '' is not one of lossless, fast, fastest")
