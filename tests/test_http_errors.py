"""Domain errors carry no HTTP status: the errors middleware gives each kind its status and
the one JSON shape, and never shows a client the text of an internal failure."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from bridge.core.alerts import InvalidPayload
from bridge.core.errors import (
    BridgeError,
    ConfigError,
    Conflict,
    InvalidInput,
    NotFound,
    QueryTimeout,
    StoreError,
    TooLarge,
    Unprocessable,
)
from bridge.http.errors import HttpError
from bridge.http.util import ALLOWED_HOSTS, make_errors_middleware

CASES: list[tuple[BridgeError, int, dict[str, Any]]] = [
    (InvalidInput("limit", "must be 1 to 1000"), 400,
     {"error": "invalid_input", "message": "limit: must be 1 to 1000", "field": "limit"}),
    (InvalidPayload("alerts[0].status", "must be firing"), 400,
     {"error": "invalid_input", "message": "alerts[0].status: must be firing",
      "field": "alerts[0].status"}),
    (TooLarge("body", "at most 10 bytes"), 413,
     {"error": "too_large", "message": "body: at most 10 bytes", "field": "body"}),
    (NotFound("no alert with id 7"), 404, {"error": "not_found", "message": "no alert with id 7"}),
    (Conflict("alert 7 is already resolved"), 409,
     {"error": "conflict", "message": "alert 7 is already resolved"}),
    (Conflict("sampled here", field="cpu_usage_ratio", code="system_sampled"), 409,
     {"error": "system_sampled", "message": "sampled here", "field": "cpu_usage_ratio"}),
    (Unprocessable("by", "must be a non-empty string"), 422,
     {"error": "unprocessable", "message": "by: must be a non-empty string", "field": "by"}),
    (HttpError(401, "unauthorized", "missing or invalid bearer token"), 401,
     {"error": "unauthorized", "message": "missing or invalid bearer token"}),
    (StoreError("storage failed: disk I/O error at /var/lib/secret/path"), 503,
     {"error": "storage_unavailable", "message": "storage failed; retry later"}),
    (QueryTimeout(5.0), 503,
     {"error": "query_timeout",
      "message": "the query ran longer than 5s and was stopped; narrow it"}),
    (ConfigError("alertbridge.yml", "server.port", "must be a port"), 500,
     {"error": "internal", "message": "internal error"}),
]  # fmt: skip


@pytest.mark.parametrize(("error", "status", "body"), CASES)
async def test_each_error_kind_has_its_status(
    aiohttp_client: Any, error: BridgeError, status: int, body: dict[str, Any]
) -> None:
    """A handler raising the domain error answers the status and body of its kind."""

    async def handler(request: web.Request) -> web.Response:
        raise error

    app = web.Application(middlewares=[make_errors_middleware(1024)])
    app[ALLOWED_HOSTS] = frozenset({"*"})
    app.router.add_get("/x", handler)
    client = await aiohttp_client(app)
    response = await client.get("/x")
    assert response.status == status
    assert await response.json() == body
