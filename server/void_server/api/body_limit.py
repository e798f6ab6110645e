"""A cap on every JSON request body, counted as it streams in, so no request can fill memory past it.

A body whose Content-Length is over the cap is refused before it is read. File uploads stream to disk and have
their own per-file cap (`--max-upload-mb`), enforced by jobs.uploads with the file's name in the error.
"""
from __future__ import annotations

import json
from typing import Any, Awaitable, Callable, Dict

from starlette.exceptions import HTTPException

MAX_JSON_BODY = 1 << 20  # a 1000-frame spec with three uploaded inputs is ~150 KB

Scope = Dict[str, Any]
Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _too_large(cap: int) -> str:
    return "the request body is over this server's limit of %d bytes for this endpoint" % cap


def is_upload(scope: Scope) -> bool:
    return scope.get("method") == "PUT" and "/inputs/" in scope.get("path", "")


class BodyLimit:
    def __init__(self, app: Any, cap: int = MAX_JSON_BODY) -> None:
        self.app, self.cap = app, cap

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_upload(scope):
            await self.app(scope, receive, send)
            return
        cap = self.cap
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            await self._refuse(send, cap)
            return
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:  # chunked bodies announce no length: stop at the cap
                    raise HTTPException(413, _too_large(cap))
            return message

        await self.app(scope, capped, send)

    @staticmethod
    async def _refuse(send: Send, cap: int) -> None:
        body = json.dumps({"error": _too_large(cap), "field": "Content-Length", "detail": {"limit": cap}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
