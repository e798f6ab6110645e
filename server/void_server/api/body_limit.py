"""A cap on every request body, counted as it streams in, so no request can fill memory or disk past it.

JSON bodies (job specs) are small; file uploads have their own, larger cap (also enforced per file by
jobs.uploads). A body whose Content-Length is over the cap is refused before it is read.
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


class BodyLimit:
    def __init__(self, app: Any, upload_cap: int) -> None:
        self.app, self.upload_cap = app, upload_cap

    def cap_for(self, scope: Scope) -> int:
        is_upload = scope.get("method") == "PUT" and "/inputs/" in scope.get("path", "")
        return self.upload_cap if is_upload else MAX_JSON_BODY

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope)
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
