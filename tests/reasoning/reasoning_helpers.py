"""Helpers for the reasoning tests: sample decoding, recorded VLM answers, a local chat-completions endpoint."""
from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List

import numpy as np

SAMPLES = Path(os.environ["VOID_SHARED_DIR"]) / "fixtures" / "void-samples"
ANSWERS = Path(__file__).parent / "answers"


def decode_quadmask(path: Path) -> np.ndarray:
    """Lossless-coded quadmask video -> (T, H, W) uint8 exact levels."""
    import cv2

    from void_server.reasoning.combine import quantise

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(quantise(frame[..., 0]))
    cap.release()
    if not frames:
        raise RuntimeError("could not decode %s" % path)
    return np.stack(frames)


def answer(name: str) -> str:
    return (ANSWERS / name).read_text()


class Endpoint:
    """A chat-completions endpoint on 127.0.0.1 that keeps the requests it gets. `reply` is a dict (sent as JSON),
    a (status, text) or (status, text, headers) tuple, or a list of those, answered in turn (the last one stays)."""

    def __init__(self) -> None:
        self.requests: List[dict] = []
        self.reply: object = {"choices": [{"message": {"role": "assistant", "content": "{}"}}]}
        self.delay_s = 0.0  # how long it thinks before answering
        self.models: List[str] = ["m"]  # what GET /models lists
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "body": None})
                found = self.path == "/v1/models"
                self.send_response(200 if found else 404)
                self.end_headers()
                self.wfile.write(json.dumps({"object": "list", "data": [{"id": m} for m in endpoint.models]}
                                            if found else {"error": "no such path"}).encode())

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                time.sleep(endpoint.delay_s)
                reply = endpoint.reply
                if isinstance(reply, list):
                    reply = reply.pop(0) if len(reply) > 1 else reply[0]
                status, text, headers = ((reply + ({},))[:3] if isinstance(reply, tuple)
                                         else (200, json.dumps(reply), {}))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(text.encode())
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/v1" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
