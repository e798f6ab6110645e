"""The real loading and inference paths on tiny random-weight checkpoints: VLM generate, SAM2 tracking,
SAM3 text segmentation, and auto mode end to end through build_quadmask."""
from __future__ import annotations

from typing import List

import numpy as np
import pytest

from reasoning_helpers import Endpoint, answer
from tiny_models import build_tiny_qwen3_vl, build_tiny_sam2_video, build_tiny_sam3
from void_server.media.frames import ArrayFrames
from void_server.pipelines.base import PipelineInputs, PipelineSettings
from void_server.reasoning.auto import AutoReasoner, AutoSettings, display_rgb, sample_indices
from void_server.reasoning.combine import AFFECTED, KEEP, OVERLAP, REMOVE, combine
from void_server.reasoning.quadmask import build_quadmask
from void_server.reasoning.remote_vlm import OpenAICompatibleVLM, RemoteVLMConfig
from void_server.reasoning.schema import parse_answer
from void_server.reasoning.segment import Prompt, Sam2Tracker, keep_near, near_target, proximity_radius
from void_server.reasoning.text_segment import Sam3TextSegmenter
from void_server.reasoning.weights import check_reasoning_models
from void_server.reasoning.vlm import LocalVLM, ask, model_class_for

pytestmark = pytest.mark.slow
T, H, W = 6, 72, 128  # 16:9: an 8 x 14 grid of 9 px cells


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    build_tiny_qwen3_vl(root / "Qwen3-VL-8B-Instruct")
    build_tiny_sam2_video(root / "sam2.1-hiera-large")
    build_tiny_sam3(root / "sam3")
    return root


@pytest.fixture(scope="module")
def vlm(model_dir):
    return LocalVLM.from_pretrained(model_dir / "Qwen3-VL-8B-Instruct", device="cpu", max_new_tokens=6)


@pytest.fixture(scope="module")
def tracker(model_dir):
    return Sam2Tracker.from_pretrained(model_dir / "sam2.1-hiera-large", device="cpu")


@pytest.fixture(scope="module")
def text_segmenter(model_dir):
    segmenter = Sam3TextSegmenter.from_pretrained(model_dir / "sam3", device="cpu")
    # Random weights score every instance ~0.2 with mask probabilities mostly under 0.1: these thresholds give
    # partial masks that differ between frames, so reuse and filtering show.
    segmenter.threshold, segmenter.mask_threshold = 0.0, 0.1
    return segmenter


def clip():
    rng = np.random.default_rng(1)
    plate = rng.uniform(0, 1, (T, H, W, 3)).astype(np.float32)
    target = np.zeros((T, H, W), bool)
    for i in range(T):
        target[i, 20:40, 30 + 4 * i:50 + 4 * i] = True
    return plate, target


class ScriptedVLM:
    """A backend that replays recorded answers and keeps the conversations it was sent."""

    name = "scripted"

    def __init__(self, replies: List[str]) -> None:
        self.replies, self.seen = list(replies), []

    def chat(self, messages):
        self.seen.append(messages)
        return self.replies.pop(0)


def test_model_class_from_config(model_dir, tmp_path):
    assert model_class_for(model_dir / "Qwen3-VL-8B-Instruct").__name__ == "Qwen3VLForConditionalGeneration"
    (tmp_path / "config.json").write_text('{"model_type": "qwen2_5_vl"}')
    assert model_class_for(tmp_path).__name__ == "Qwen2_5_VLForConditionalGeneration"
    with pytest.raises(FileNotFoundError, match="config.json"):
        model_class_for(tmp_path / "nowhere")


def test_tiny_vlm_generates_and_garbage_falls_back(vlm):
    images = [np.full((36, 64, 3), 100 + 50 * i, np.uint8) for i in range(2)]
    text = vlm.chat([{"role": "user", "content": [{"type": "image", "image": im} for im in images]
                      + [{"type": "text", "text": "which cells?"}]}])
    assert isinstance(text, str)
    result = ask(vlm, images, "which cells?", lambda s: parse_answer(s, 8, 14, T))
    assert result.answer is None and len(result.replies) == 2 and result.error


def test_retry_quotes_the_parse_error():
    backend = ScriptedVLM([answer("bad_kind.txt"), answer("good_shadow.txt")])
    result = ask(backend, [np.zeros((9, 16, 3), np.uint8)], "q", lambda s: parse_answer(s, 8, 14, 24))
    assert result.answer is not None and result.answer.objects[0].kind == "shadow"
    retry = backend.seen[1]
    assert retry[-2]["role"] == "assistant" and "vehicle" in retry[-2]["content"][0]["text"]
    assert "kind is 'vehicle'" in retry[-1]["content"][0]["text"]
    twice = ask(ScriptedVLM([answer("bad_prose.txt")] * 2), [], "q", lambda s: parse_answer(s, 8, 14, 24))
    assert twice.answer is None and "no JSON object" in twice.error


def test_sam2_tracks_both_ways(tracker, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 255, (T, 48, 80, 3), dtype=np.uint8)
    visited = []
    original = tracker.model.propagate_in_video_iterator

    def recording(session, start_frame_idx=None, reverse=False, **kw):
        for out in original(session, start_frame_idx=start_frame_idx, reverse=reverse, **kw):
            visited.append((reverse, out.frame_idx))
            yield out

    monkeypatch.setattr(tracker.model, "propagate_in_video_iterator", recording)
    masks = tracker.track(frames, [[Prompt(2, [(20.0, 15.0)], (10.0, 10.0, 40.0, 30.0))], []])
    assert len(masks) == 2 and masks[0].shape == (T, 48, 80) and masks[0].dtype == bool
    assert not masks[1].any()  # an object without prompts is not tracked
    assert sorted(f for r, f in visited if not r) == [2, 3, 4, 5]
    assert sorted(f for r, f in visited if r) == [0, 1, 2]
    again = tracker.track(frames, [[Prompt(2, [(20.0, 15.0)], (10.0, 10.0, 40.0, 30.0))]])
    assert np.array_equal(again[0], masks[0])  # the session is reset between objects and calls


def auto_inputs(tmp_path, plate, target):
    return PipelineInputs(plate=ArrayFrames(plate), settings=PipelineSettings(prompt="x", mask_mode="auto"),
                          workdir=tmp_path / "job", target=ArrayFrames(target.astype(np.float32)))


MOVER = """{"affected": [
 {"name": "cup", "kind": "held", "will_move": true,
  "locations": [{"frame": 0, "box": [250, 300, 400, 500]}],
  "path": [{"frame": 1, "cell": [3, 3]}, {"frame": 5, "cell": [7, 3]}]},
 {"name": "shadow", "kind": "shadow", "locations": [{"frame": 3, "cells": [[5, 5], [5, 6]]}]},
 {"name": "ghost", "kind": "other", "locations": []}
], "scene": "an empty table"}"""


def test_auto_end_to_end_with_scripted_answer(tmp_path, tracker):
    plate, target = clip()
    vlm = ScriptedVLM([MOVER])
    reasoner = AutoReasoner(vlm, tracker, AutoSettings(sample_frames=4, vlm_long_side=64))
    notes: List[str] = []
    q = np.asarray(build_quadmask(auto_inputs(tmp_path, plate, target), reasoner, notes))
    assert q.shape == (T, H, W) and set(np.unique(q)) <= {REMOVE, OVERLAP, AFFECTED, KEEP}
    assert ((q == REMOVE) | (q == OVERLAP))[target].all() and not ((q == REMOVE) | (q == OVERLAP))[~target].any()
    # The cup's box sweeps down column 3 from frame 1 on: cell (7, 3) is affected on the last frame.
    assert (q[5, 63:72, 27:36] == AFFECTED).all()
    assert ((q == AFFECTED) | (q == OVERLAP)).any(axis=(1, 2))[1:].all()
    # What the VLM saw: 4 gridded frames at 64 px wide, then the prompt naming them.
    user = vlm.seen[0][1]["content"]
    assert [b["image"].shape for b in user[:-1]] == [(36, 64, 3)] * 4
    assert "frame numbers 0, 2, 3, 5" in user[-1]["text"] and "8 rows x 14 columns" in user[-1]["text"]
    text = " | ".join(notes)
    assert "prompt void-nuke-quadmask/1" in text and "cup (held, moves)" in text
    assert "ghost (other): not located" in text and "an empty table" in text


def test_auto_through_a_remote_vlm_and_its_failure(tmp_path, tracker, model_dir, monkeypatch):
    """The same scripted answer from an OpenAI-compatible endpoint gives the same quadmask as from a local backend;
    the endpoint down leaves the target alone, noted. The local VLM folder is then not needed."""
    from void_server.reasoning import remote_vlm

    monkeypatch.setattr(remote_vlm, "_sleep", lambda s: None)  # the tries after a busy answer, without the waits
    plate, target = clip()
    settings = AutoSettings(sample_frames=4, vlm_long_side=64)
    want = np.asarray(build_quadmask(auto_inputs(tmp_path / "local", plate, target),
                                     AutoReasoner(ScriptedVLM([MOVER]), tracker, settings), []))
    endpoint = Endpoint()
    try:
        endpoint.reply = {"choices": [{"message": {"content": MOVER}}]}
        remote = OpenAICompatibleVLM(RemoteVLMConfig(endpoint.url, "qwen3-vl"))
        reasoner = AutoReasoner.from_model_dir(model_dir, device="cpu", vlm="absent", vlm_backend=remote,
                                               settings=settings)
        notes: List[str] = []
        got = np.asarray(build_quadmask(auto_inputs(tmp_path / "remote", plate, target), reasoner, notes))
        assert np.array_equal(got, want) and (got == AFFECTED).any()
        (req,) = endpoint.requests
        assert len(req["body"]["messages"][1]["content"]) == 5  # the 4 frames shown, then the prompt
        assert "auto mask (qwen3-vl at 127.0.0.1:" in " | ".join(notes)
        endpoint.reply = (503, "loading the model")
        notes = []
        down = np.asarray(build_quadmask(auto_inputs(tmp_path / "down", plate, target), reasoner, notes))
        assert np.array_equal(down, np.stack([combine(t.astype(np.float32)) for t in target]))
        assert any("HTTP 503: loading the model (3 tries): target only" in n for n in notes)
    finally:
        endpoint.close()
    with pytest.raises(FileNotFoundError, match="absent"):  # without the remote backend the VLM folder is needed
        AutoReasoner.from_model_dir(model_dir, device="cpu", vlm="absent")


def test_auto_with_tiny_vlm_falls_back_to_target(tmp_path, vlm, tracker):
    plate, target = clip()
    reasoner = AutoReasoner(vlm, tracker, AutoSettings(sample_frames=3, vlm_long_side=64))
    notes: List[str] = []
    q = np.asarray(build_quadmask(auto_inputs(tmp_path, plate, target), reasoner, notes))
    assert np.array_equal(q, np.stack([combine(t.astype(np.float32)) for t in target]))
    assert any("malformed twice" in n and "target only" in n for n in notes)


def test_from_model_dir_and_unload(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="download"):
        AutoReasoner.from_model_dir(tmp_path, device="cpu")
    assert check_reasoning_models(model_dir) == []  # the tiny folders have the real layouts
    reasoner = AutoReasoner.from_model_dir(model_dir, device="cpu")
    assert reasoner.vlm.name == "Qwen3-VL-8B-Instruct" and isinstance(reasoner.text_segmenter, Sam3TextSegmenter)
    assert AutoReasoner.from_model_dir(model_dir, device="cpu", sam3="absent").text_segmenter is None  # optional
    reasoner.unload()
    assert reasoner.vlm is None and reasoner.tracker is None and reasoner.text_segmenter is None
    notes: List[str] = []
    plate, target = clip()
    assert not reasoner.affected(ArrayFrames(plate), target, notes).any() and "unloaded" in notes[0]


def test_sample_indices():
    assert sample_indices(50, 10) == [0, 5, 11, 16, 22, 27, 33, 38, 44, 49]
    assert sample_indices(3, 10) == [0, 1, 2]


def test_sam3_segments_every_fifth_frame_in_batches(text_segmenter, monkeypatch):
    frames = list(np.random.default_rng(1).integers(0, 255, (11, 40, 64, 3), dtype=np.uint8))
    batches = []
    call = type(text_segmenter.processor).__call__

    def recording(self, images=None, text=None, **kw):
        batches.append(([next(i for i, f in enumerate(frames) if f is im) for im in images], list(text)))
        return call(self, images=images, text=text, **kw)

    monkeypatch.setattr(type(text_segmenter.processor), "__call__", recording)
    monkeypatch.setattr(text_segmenter, "batch", 2)
    keys = text_segmenter.keyframes(frames, "red cup", every=5)
    assert batches == [([0, 5], ["red cup"] * 2), ([10], ["red cup"])]  # keyframes only, in batches
    assert sorted(keys) == [0, 5, 10] and all(m.shape == (40, 64) and m.dtype == bool for m in keys.values())
    assert keys[0].any() and not np.array_equal(keys[0], keys[5])


def test_sam2_takes_mask_prompts_alone_and_tracks_from_them(tracker, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 255, (T, 48, 80, 3), dtype=np.uint8)
    first, last = np.zeros((48, 80), bool), np.zeros((48, 80), bool)
    first[10:30, 10:40], last[12:32, 30:60] = True, True
    sent = []
    add = tracker.processor.add_inputs_to_inference_session

    def recording(session, frame_idx, obj_ids, **kw):
        sent.append((frame_idx, sorted(kw)))
        if "input_masks" in kw:
            assert np.array_equal(kw["input_masks"], {1: first, 4: last}[frame_idx])
        return add(session, frame_idx=frame_idx, obj_ids=obj_ids, **kw)

    monkeypatch.setattr(tracker.processor, "add_inputs_to_inference_session", recording)
    # A frame with both a mask and a box sends the mask alone (SAM2 refuses the two together).
    prompts = [Prompt(1, mask=first), Prompt(4, mask=last), Prompt(4, box=(1.0, 1.0, 9.0, 9.0))]
    masks = tracker.track(frames, [prompts])
    assert sent == [(1, ["input_masks"]), (4, ["input_masks"])]
    assert masks[0].shape == (T, 48, 80) and masks[0].dtype == bool


UNLOCATED = """{"affected": [{"name": "ghost", "kind": "other", "locations": []}], "scene": "a table"}"""


def test_auto_tracks_unlocated_objects_from_their_sam3_keyframes(tracker, text_segmenter, monkeypatch):
    plate, target = clip()
    settings = AutoSettings(sample_frames=4, vlm_long_side=64, gridify=False)
    reasoner = AutoReasoner(ScriptedVLM([UNLOCATED]), tracker, settings, text_segmenter)
    tracked = []
    track = tracker.track

    def recording(frames, objects):
        tracked.append(objects)
        masks = track(frames, objects)
        tracked.append(masks)
        return masks

    monkeypatch.setattr(tracker, "track", recording)
    notes: List[str] = []
    out = reasoner.affected(ArrayFrames(plate), target, notes)
    near = near_target(target, proximity_radius(H, W))
    keys = text_segmenter.keyframes([display_rgb(f, "linear") for f in plate], "ghost", 5)  # keyframes 0 and 5
    (prompts,), (mask,) = tracked
    # SAM2 got SAM3's keyframe masks, cut to the pieces near the target, as mask prompts: nothing else
    assert [p.frame for p in prompts] == [k for k in sorted(keys) if keep_near(keys[k][None], near[k][None]).any()]
    for p in prompts:
        assert p.box is None and not p.points
        assert np.array_equal(p.mask, keep_near(keys[p.frame][None], near[p.frame][None])[0])
    assert prompts and any((keys[p.frame] & ~p.mask).any() for p in prompts)  # the proximity cut dropped pieces
    # ...and what it tracked, kept near the target, is the object's region on every frame
    assert out.shape == (T, H, W) and np.array_equal(out, keep_near(mask, near))
    assert "ghost (other): not located, SAM3 text every 5 frames, tracked, " in " | ".join(notes)
    notes = []
    AutoReasoner(ScriptedVLM([UNLOCATED]), tracker, settings).affected(ArrayFrames(plate), target, notes)
    assert "ghost (other): not located, skipped" in " | ".join(notes)  # no SAM3 folder: as before
