"""Every error leaves the server as an ErrorBody: what is wrong, and which field it is about."""
from __future__ import annotations

import re
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..jobs.errors import JobError
from .models import ErrorBody

_NAMED_FIELDS = (re.compile(r"\b(inputs\.[a-z_]+)\b"), re.compile(r"\b(mask_mode|frames|prompt)\b"))


def error_response(status: int, message: str, field: Optional[str] = None, detail: object = None,
                   headers: Optional[dict] = None) -> JSONResponse:
    body = ErrorBody(error=message, field=field, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field(loc: tuple, message: str) -> Optional[str]:
    parts = [str(p) for p in loc if p not in ("body", "path", "query", "header")]
    if parts:
        return ".".join(parts)
    for pattern in _NAMED_FIELDS:  # a whole-spec check names its field in the message
        m = pattern.search(message)
        if m:
            return m.group(1)
    return None


def _message(e: dict) -> str:
    msg = str(e.get("msg", "invalid"))
    return msg[len("Value error, "):] if msg.startswith("Value error, ") else msg


def install(app: FastAPI) -> None:
    @app.exception_handler(JobError)
    async def job_error(request: Request, e: JobError) -> JSONResponse:
        return error_response(e.status_code, e.message, e.field, e.detail)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = []
        for err in e.errors():
            message = _message(err)
            field = _field(tuple(err.get("loc", ())), message)
            errors.append({"field": field, "error": message})
        first = errors[0] if errors else {"field": None, "error": "invalid request"}
        named = not first["field"] or first["field"] in first["error"]
        text = first["error"] if named else "%s: %s" % (first["field"], first["error"])
        if len(errors) > 1:
            text += " (and %d more problem%s, see detail)" % (len(errors) - 1, "s" if len(errors) > 2 else "")
        return error_response(422, text, first["field"], errors)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> JSONResponse:
        return error_response(e.status_code, str(e.detail), headers=getattr(e, "headers", None))
