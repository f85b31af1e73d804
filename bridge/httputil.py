"""HTTP plumbing shared by the handlers: JSON errors, the error middleware, auth, JSON bodies."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from bridge.config import Secret
from bridge.errors import ApiError, InvalidInput

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The one JSON error shape: {"error": code, "message": ..., "field": ...}."""
    body: dict[str, Any] = {"error": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


def make_errors_middleware(max_body_bytes: int) -> Any:
    """Middleware mapping domain errors and aiohttp's HTTP errors to JSON, never internals."""

    @web.middleware
    async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.field)
        except web.HTTPRequestEntityTooLarge:
            message = f"request body exceeds {max_body_bytes} bytes"
            return error_response(413, "too_large", message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        except Exception:
            # Log the traceback, never the request body or headers (they may hold secrets).
            log.exception("unhandled error in %s %s", request.method, request.path)
            return error_response(500, "internal", "internal error")

    return errors_middleware


def check_token(request: web.Request, expected: Secret | None) -> None:
    """Require `Authorization: Bearer <token>` when a token is configured (constant-time)."""
    if expected is None:
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.value.encode()
    )
    if not ok:
        raise ApiError(401, "unauthorized", "missing or invalid bearer token")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON: 413 when too large, 400 for bad UTF-8 or malformed JSON.

    orjson is strict RFC 8259: NaN/Infinity literals and integers beyond 64 bits are malformed.
    """
    raw = await request.read()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise InvalidInput("body", f"not valid UTF-8 at byte {bad.start}") from None
        raise InvalidInput("body", f"malformed JSON: {exc.msg} at line {exc.lineno}") from None


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
