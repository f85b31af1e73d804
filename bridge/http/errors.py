"""Domain errors as HTTP answers: the one place that gives them a status, and the one JSON
error shape, {"error": code, "message": ..., "field": ...}."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bridge.core.errors import (
    BridgeError,
    Conflict,
    InvalidInput,
    NotFound,
    QueryTimeout,
    RequestError,
    StoreError,
    TooLarge,
    Unprocessable,
)


class HttpError(RequestError):
    """An answer only HTTP has (unauthorized, forbidden, a body too slow, a media type).

    >>> HttpError(401, "unauthorized", "missing or invalid bearer token").status
    401
    """

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self.status = status
        self.headers = headers or {}  # sent with the answer (Retry-After of a 429)
        super().__init__(message, field, code)


#: Most specific first.
_STATUS: tuple[tuple[type[RequestError], int], ...] = (
    (TooLarge, 413),
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (Unprocessable, 422),
)


def answer(exc: BridgeError) -> tuple[int, str, str, str | None] | None:
    """(status, code, message, field) of a domain error, or None for one no client should see
    (a bug, or a configuration problem: answered as an internal error)."""
    if isinstance(exc, HttpError):
        return exc.status, exc.code, exc.message, exc.field
    if isinstance(exc, RequestError):
        status = next((s for kind, s in _STATUS if isinstance(exc, kind)), 400)
        return status, exc.code, exc.message, exc.field
    if isinstance(exc, QueryTimeout):
        return 503, "query_timeout", str(exc), None
    if isinstance(exc, StoreError):  # its text may name paths: not for the client
        return 503, "storage_unavailable", "storage failed; retry later", None
    return None


def status_of(exc: BridgeError) -> int:
    found = answer(exc)
    return 500 if found is None else found[0]


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The one JSON error shape."""
    body: dict[str, Any] = {"error": code, "message": message}
    if field is not None:
        body["field"] = field
    response = web.json_response(body, status=status)
    if status == 503:  # every 503 is worth a retry, soon
        response.headers["Retry-After"] = "1"
    return response
