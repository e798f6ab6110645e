"""The OpenAI-compatible VLM backend against a local HTTP endpoint that records what it is sent: the request's
shape (model, greedy decoding, key from the named environment variable, frames as lossless PNG data URLs), the
reply's text, and every way the endpoint can fail, each a VLMUnavailable naming the endpoint."""
from __future__ import annotations

import base64
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from reasoning_helpers import Endpoint

from void_server.pipelines.base import PipelineUnavailable
from void_server.pipelines.void.pipeline import _remote_vlm_option
from void_server.reasoning import remote_vlm
from void_server.reasoning.remote_vlm import OpenAICompatibleVLM, RemoteVLMConfig, VLMUnavailable, probe
from void_server.reasoning.weights import check_reasoning_models


@pytest.fixture
def endpoint():
    e = Endpoint()
    yield e
    e.close()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch):
    """The waits between tries, recorded instead of slept."""
    waited = []
    monkeypatch.setattr(remote_vlm, "_sleep", waited.append)
    return waited


def _messages(image: np.ndarray) -> list:
    return [{"role": "system", "content": [{"type": "text", "text": "be brief"}]},
            {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "what?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "not json"}]}]


def test_the_request_carries_the_conversation_and_the_key(endpoint, monkeypatch):
    monkeypatch.setenv("STUDIO_VLM_KEY", "s3cret")
    endpoint.reply = {"choices": [{"message": {"role": "assistant", "content": '{"affected": []}'}}]}
    vlm = OpenAICompatibleVLM(RemoteVLMConfig.from_options(
        {"vlm_url": endpoint.url + "/", "vlm_model": "qwen3-vl", "vlm_api_key_env": "STUDIO_VLM_KEY"}))
    image = np.random.default_rng(0).integers(0, 255, (36, 64, 3), dtype=np.uint8)
    assert vlm.chat(_messages(image)) == '{"affected": []}'
    (req,) = endpoint.requests
    assert req["path"] == "/v1/chat/completions" and req["headers"]["Authorization"] == "Bearer s3cret"
    body = req["body"]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("qwen3-vl", 0, 1536)
    system, user, assistant = body["messages"]
    assert system == {"role": "system", "content": "be brief"}
    assert assistant == {"role": "assistant", "content": "not json"}
    picture, question = user["content"]
    assert question == {"type": "text", "text": "what?"}
    head, data = picture["image_url"]["url"].split(",", 1)
    assert head == "data:image/png;base64"
    sent = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(sent, image)  # lossless, and RGB as the frames were rendered
    assert vlm.name == "qwen3-vl at " + urlsplit(endpoint.url).netloc  # what the job's notes name: no key


def test_content_parts_in_the_reply_are_joined(endpoint):
    parts = [{"type": "text", "text": '{"a"'}, {"type": "text", "text": ": 1}"}]
    endpoint.reply = {"choices": [{"message": {"content": parts}}]}
    vlm = OpenAICompatibleVLM(RemoteVLMConfig(endpoint.url, "m"))
    assert vlm.chat(_messages(np.zeros((8, 8, 3), np.uint8))) == '{"a": 1}'
    assert "Authorization" not in endpoint.requests[0]["headers"]  # no key configured, none sent


@pytest.mark.parametrize("reply,says", [
    ((500, "model crashed"), "HTTP 500: model crashed"),
    ((401, '{"error": "bad key"}'), "HTTP 401"),
    ((200, "<html>proxy page</html>"), "not JSON"),
    ({"choices": []}, "no message"),
    ({"choices": [{"message": {"content": None}}]}, "without text"),
])
def test_every_failure_is_vlm_unavailable_naming_the_endpoint(endpoint, reply, says):
    endpoint.reply = reply
    vlm = OpenAICompatibleVLM(RemoteVLMConfig(endpoint.url, "m"))
    with pytest.raises(VLMUnavailable, match=says) as e:
        vlm.chat(_messages(np.zeros((8, 8, 3), np.uint8)))
    assert "m at 127.0.0.1" in str(e.value)


def test_an_unreachable_endpoint_is_tried_again_then_vlm_unavailable(sleeps):
    closed = Endpoint()
    url = closed.url
    closed.close()  # nothing listens there now
    with pytest.raises(VLMUnavailable, match=r"could not be reached.*\(3 tries\)"):
        OpenAICompatibleVLM(RemoteVLMConfig(url, "m", timeout_s=5)).chat(_messages(np.zeros((8, 8, 3), np.uint8)))
    assert sleeps == [2.0, 4.0]


def test_a_busy_endpoint_is_asked_again_as_long_as_it_says(endpoint, sleeps):
    ok = {"choices": [{"message": {"content": "fine"}}]}
    endpoint.reply = [(503, "loading", {"Retry-After": "7"}), (429, "slow down"), ok]
    vlm = OpenAICompatibleVLM(RemoteVLMConfig(endpoint.url, "m"))
    assert vlm.chat(_messages(np.zeros((8, 8, 3), np.uint8))) == "fine"
    assert len(endpoint.requests) == 3 and sleeps == [7.0, 4.0]  # its Retry-After, then the backoff's second wait
    endpoint.reply = [(503, "still loading", {"Retry-After": "3600"})]
    once_more = OpenAICompatibleVLM(RemoteVLMConfig(endpoint.url, "m", retries=1))
    with pytest.raises(VLMUnavailable, match=r"HTTP 503: still loading \(2 tries\)"):
        once_more.chat(_messages(np.zeros((8, 8, 3), np.uint8)))
    assert sleeps[2:] == [remote_vlm.RETRY_AFTER_MAX_S]  # an hour is capped


def test_a_timeout_is_not_asked_again(endpoint, sleeps):
    endpoint.delay_s = 3.0
    slow = OpenAICompatibleVLM(RemoteVLMConfig(endpoint.url, "m", timeout_s=0.5))
    with pytest.raises(VLMUnavailable, match=r"did not answer within 0.5 s \(vlm_timeout_s\)"):
        slow.chat(_messages(np.zeros((8, 8, 3), np.uint8)))
    assert len(endpoint.requests) == 1 and sleeps == []


def test_a_refusal_is_not_asked_again(endpoint, sleeps):
    endpoint.reply = (401, "bad key")
    with pytest.raises(VLMUnavailable, match="HTTP 401: bad key$"):
        OpenAICompatibleVLM(RemoteVLMConfig(endpoint.url, "m")).chat(_messages(np.zeros((8, 8, 3), np.uint8)))
    assert len(endpoint.requests) == 1 and sleeps == []


def test_options_are_checked_at_start(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    assert RemoteVLMConfig.from_options({}) is None and _remote_vlm_option({"compile": True}) is None
    cfg = RemoteVLMConfig.from_options({"vlm_url": "https://vlm.example/v1", "vlm_model": "m", "vlm_timeout_s": 30})
    assert (cfg.url, cfg.model, cfg.api_key_env, cfg.timeout_s) == ("https://vlm.example/v1", "m", None, 30.0)
    for options, says in [
        ({"vlm_url": "vlm-box:8000", "vlm_model": "m"}, "http"),
        ({"vlm_url": "ftp://vlm-box/v1", "vlm_model": "m"}, "http"),
        ({"vlm_url": "http://vlm-box/v1"}, "vlm_model"),
        ({"vlm_url": "http://vlm-box/v1", "vlm_model": "m", "vlm_api_key_env": "NO_SUCH_KEY_VAR"}, "NO_SUCH_KEY_VAR"),
        ({"vlm_url": "http://vlm-box/v1", "vlm_model": "m", "vlm_timeout_s": 0}, "positive"),
        ({"vlm_url": "http://vlm-box/v1", "vlm_model": "m", "vlm_max_tokens": "many"}, "numbers"),
        ({"vlm_url": "http://vlm-box/v1", "vlm_model": "m", "vlm_retries": -1}, "0 or more"),
    ]:
        with pytest.raises(PipelineUnavailable, match="pipeline option .*" + says):
            _remote_vlm_option(options)


def test_doctors_probe_asks_for_the_model_list_only(endpoint, monkeypatch):
    monkeypatch.setenv("STUDIO_VLM_KEY", "s3cret")
    cfg = RemoteVLMConfig(endpoint.url, "qwen3-vl", api_key_env="STUDIO_VLM_KEY")
    endpoint.models = ["llama", "qwen3-vl"]
    assert probe(cfg) is None
    (req,) = endpoint.requests
    assert (req["path"], req["body"], req["headers"]["Authorization"]) == ("/v1/models", None, "Bearer s3cret")
    endpoint.models = ["models/gemini-2.5-pro"]  # a hosted API's prefixed ids
    assert probe(RemoteVLMConfig(endpoint.url, "gemini-2.5-pro")) is None
    endpoint.models = ["llama"]
    assert "does not list the model 'qwen3-vl' (it lists llama)" in probe(cfg)
    assert "HTTP 404 to GET /models" in probe(RemoteVLMConfig(endpoint.url + "/wrong-base", "m"))
    closed = Endpoint()
    url = closed.url
    closed.close()
    assert "could not be reached" in probe(RemoteVLMConfig(url, "m"), timeout_s=5)


def test_doctor_needs_no_local_vlm_with_a_remote_one(tmp_path):
    assert any("Qwen3-VL-8B-Instruct" in p for p in check_reasoning_models(tmp_path))
    remote = check_reasoning_models(tmp_path, remote_vlm=True)
    assert remote and not any("Qwen3-VL-8B-Instruct" in p for p in remote)  # SAM2 is still needed
