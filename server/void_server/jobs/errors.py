"""Errors the job service raises; the API turns each into its HTTP status and an ErrorBody naming the field."""
from __future__ import annotations

from typing import Optional


class JobError(Exception):
    status_code = 400

    def __init__(self, message: str, field: Optional[str] = None, detail: object = None) -> None:
        super().__init__(message)
        self.message, self.field, self.detail = message, field, detail


class Unauthorized(JobError):
    status_code = 401


class NotFound(JobError):
    status_code = 404


class Conflict(JobError):
    """The request does not fit the job's state (uploading to a started job, deleting a running one...)."""

    status_code = 409


class Invalid(JobError):
    status_code = 422


class TooLarge(JobError):
    """A request body or upload over the server's limit; the message names the limit and its setting."""

    status_code = 413


class Unavailable(JobError):
    """The server cannot take jobs (pipeline weights missing); the message says how to fix it."""

    status_code = 503
