"""A VLM behind an OpenAI-compatible chat-completions endpoint: a studio's vLLM or Ollama box, or a hosted model
(Gemini, which the reference uses, answers on `https://generativelanguage.googleapis.com/v1beta/openai`).

Opt-in (`--pipeline-option vlm_url=...`): the sampled frames leave this machine, downsized to the VLM's image size
(768 px long side by default). The key is read from an environment variable the operator names
(`vlm_api_key_env`), so it is never in a config file, a command line or a log. Standard library only: a server
installed without the client extras has no `requests`.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Mapping, Optional
from urllib.parse import urlsplit

import numpy as np

from .vlm import Message

CHAT_PATH = "/chat/completions"
# Answers worth asking again: rate limits and a busy or restarting server (hosted endpoints send these under load).
RETRY_STATUSES = (429, 502, 503, 504)
RETRY_BASE_S = 2.0  # waits 2 s, 4 s, ... unless the endpoint says how long (Retry-After, up to RETRY_AFTER_MAX_S)
RETRY_AFTER_MAX_S = 60.0
_sleep = time.sleep  # tests replace it


class VLMUnavailable(RuntimeError):
    """The VLM could not be asked (transport, HTTP status, a reply without text); the message says which."""


class _Busy(VLMUnavailable):
    """A failure that may pass: asked again after `wait` seconds (None: the default backoff)."""

    def __init__(self, message: str, wait: Optional[float] = None) -> None:
        super().__init__(message)
        self.wait = wait


@dataclasses.dataclass(frozen=True)
class RemoteVLMConfig:
    """The `vlm_*` pipeline options."""

    url: str  # the API's base URL, e.g. http://vlm-box:8000/v1 (CHAT_PATH is appended)
    model: str
    api_key_env: Optional[str] = None  # the environment variable that holds the key, if the endpoint needs one
    timeout_s: float = 300.0
    max_tokens: int = 1536
    retries: int = 2  # more tries after a busy answer or a failed connection

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Optional["RemoteVLMConfig"]:
        """None without `vlm_url`; ValueError, naming the option, for a bad one."""
        url = options.get("vlm_url")
        if not url:
            return None
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("vlm_url must be an http(s) URL such as http://vlm-box:8000/v1, not %r" % (url,))
        model = options.get("vlm_model")
        if not model:
            raise ValueError("vlm_url needs vlm_model: the model name the endpoint serves "
                             "(e.g. Qwen/Qwen3-VL-8B-Instruct)")
        key_env = options.get("vlm_api_key_env")
        if key_env and not os.environ.get(str(key_env)):
            raise ValueError("vlm_api_key_env names %s, which is not set in the server's environment" % key_env)
        try:
            timeout, max_tokens = float(options.get("vlm_timeout_s", 300.0)), int(options.get("vlm_max_tokens", 1536))
            retries = int(options.get("vlm_retries", 2))
        except (TypeError, ValueError):
            raise ValueError("vlm_timeout_s, vlm_max_tokens and vlm_retries are numbers")
        if timeout <= 0 or max_tokens <= 0 or retries < 0:
            raise ValueError("vlm_timeout_s and vlm_max_tokens must be positive, vlm_retries 0 or more")
        return cls(str(url).rstrip("/"), str(model), str(key_env) if key_env else None, timeout, max_tokens, retries)


class OpenAICompatibleVLM:
    """`VLMBackend` over HTTP: our messages become chat-completions messages, images PNG data URLs."""

    def __init__(self, config: RemoteVLMConfig) -> None:
        self.config = config
        self.name = "%s at %s" % (config.model, urlsplit(config.url).netloc)  # what the job's notes show

    def chat(self, messages: List[Message]) -> str:
        body = {"model": self.config.model, "messages": [_message(m) for m in messages],
                "max_tokens": self.config.max_tokens, "temperature": 0}  # greedy, as the local model decodes
        request = urllib.request.Request(self.config.url + CHAT_PATH, data=json.dumps(body).encode(),
                                         headers=dict(_auth(self.config), **{"Content-Type": "application/json"}),
                                         method="POST")
        for attempt in range(self.config.retries + 1):
            try:
                return self._ask(request)
            except _Busy as e:
                if attempt == self.config.retries:
                    raise VLMUnavailable("%s (%d tries)" % (e, attempt + 1))
                _sleep(e.wait if e.wait is not None else RETRY_BASE_S * 2 ** attempt)
        raise AssertionError("unreachable")

    def _ask(self, request: "urllib.request.Request") -> str:
        """One request -> the reply's text; _Busy for what may pass, VLMUnavailable for what will not."""
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
                reply = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            message = "%s answered HTTP %d: %s" % (self.name, e.code, _error_text(e))
            if e.code in RETRY_STATUSES:
                raise _Busy(message, _retry_after(e))
            raise VLMUnavailable(message)
        except (urllib.error.URLError, OSError) as e:  # refused, reset, unresolvable, timed out
            if isinstance(e, socket.timeout) or isinstance(getattr(e, "reason", None), socket.timeout):
                # not asked again: each try would wait the whole timeout once more
                raise VLMUnavailable("%s did not answer within %g s (vlm_timeout_s)" % (self.name,
                                                                                     self.config.timeout_s))
            raise _Busy("%s could not be reached: %s" % (self.name, getattr(e, "reason", e)))
        except ValueError as e:
            raise VLMUnavailable("%s sent a reply that is not JSON: %s" % (self.name, e))
        try:
            content = reply["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise VLMUnavailable("%s sent no message in its reply: %s" % (self.name, str(reply)[:300]))
        if isinstance(content, list):  # some servers answer in content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise VLMUnavailable("%s sent a message without text" % self.name)
        return content


def probe(config: RemoteVLMConfig, timeout_s: float = 10.0) -> Optional[str]:
    """For `doctor`: does the endpoint answer, take the key and serve the model? Asks `GET {url}/models` (the
    OpenAI-compatible model list), which sends no frames. None when all is well, else what is wrong."""
    request = urllib.request.Request(config.url + "/models", headers=_auth(config), method="GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            listing = json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as e:
        return "%s answered HTTP %d to GET /models: %s" % (config.url, e.code, _error_text(e))
    except (urllib.error.URLError, OSError) as e:
        return "%s could not be reached: %s" % (config.url, getattr(e, "reason", e))
    except ValueError:
        return "%s/models did not answer JSON: is vlm_url the API's base (ending in /v1)?" % config.url
    served = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)] if isinstance(listing, dict) else []
    # Hosted APIs list ids with a prefix ("models/gemini-..."): a suffix match is enough.
    if served and not any(i == config.model or str(i).endswith("/" + config.model) for i in served):
        return "%s does not list the model %r (it lists %s)" % (config.url, config.model,
                                                                 ", ".join(map(str, served[:8])))
    return None


def _auth(config: RemoteVLMConfig) -> Dict[str, str]:
    """The key as a bearer token, read from its variable at each request (a rotated key is picked up)."""
    if not config.api_key_env:
        return {}
    return {"Authorization": "Bearer " + os.environ.get(config.api_key_env, "")}


def _message(m: Message) -> Dict[str, Any]:
    parts = []
    for block in m["content"]:
        if block["type"] == "image":
            parts.append({"type": "image_url", "image_url": {"url": png_data_url(block["image"])}})
        else:
            parts.append({"type": "text", "text": block["text"]})
    # System and assistant turns as plain text: not every server takes content parts there.
    if m["role"] != "user" and all(p["type"] == "text" for p in parts):
        return {"role": m["role"], "content": "".join(p["text"] for p in parts)}
    return {"role": m["role"], "content": parts}


def png_data_url(image: np.ndarray) -> str:
    """uint8 RGB (H, W, 3) -> a data: URL of its PNG (lossless: the grid's labels and the target's outline stay
    sharp)."""
    import cv2

    ok, png = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # OpenCV writes BGR
    if not ok:
        raise ValueError("could not encode a frame of shape %s as PNG" % (image.shape,))
    return "data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii")


def _retry_after(e: "urllib.error.HTTPError") -> Optional[float]:
    """The endpoint's Retry-After in seconds (capped), where it gives one as a number."""
    try:
        return min(RETRY_AFTER_MAX_S, max(0.0, float(e.headers.get("Retry-After", ""))))
    except (TypeError, ValueError, AttributeError):
        return None


def _error_text(e: "urllib.error.HTTPError") -> str:
    try:
        return e.read().decode("utf-8", "replace")[:300]
    except Exception:  # noqa: BLE001 - only for the message
        return e.reason or ""
