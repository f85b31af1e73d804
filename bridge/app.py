"""The aiohttp application: wiring of telemetry, metrics and the HTTP API (no business logic)."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from bridge.config import Secret, Settings
from bridge.errors import ApiError, InvalidInput
from bridge.selfmetrics import BridgeMetrics
from bridge.status import rule_states
from bridge.telemetry import CpuSampler, Telemetry, apply_batch, memory_used_bytes, parse_batch

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", CollectorRegistry)
TELEMETRY = web.AppKey("telemetry", Telemetry)
METRICS = web.AppKey("metrics", BridgeMetrics)

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    """The one JSON error shape: {"error": code, "message": ..., "field": ...}."""
    body: dict[str, Any] = {"error": code, "message": message}
    if field is not None:
        body["field"] = field
    return web.json_response(body, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map domain errors and aiohttp's HTTP errors to JSON; never leak internals."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS].server.max_body_bytes
        return error_response(413, "too_large", f"request body exceeds {limit} bytes")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error")


def check_token(request: web.Request, expected: Secret | None) -> None:
    """Require `Authorization: Bearer <token>` when a token is configured (constant-time)."""
    if expected is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), expected.value.encode()
    )
    if not ok:
        raise ApiError(401, "unauthorized", "missing or invalid bearer token")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON: 413 when too large, 400 for bad UTF-8 or malformed JSON."""
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput("body", f"not valid UTF-8 at byte {exc.start}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput("body", f"malformed JSON: {exc.msg} at line {exc.lineno}") from None


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition with content negotiation (OpenMetrics or text)."""
    registry = request.app[REGISTRY]
    names = request.query.getall("name[]", [])
    target = registry.restricted_registry(names) if names else registry
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    # generate_latest is pure Python (~20 us a series): keep it off the event loop.
    body = await asyncio.to_thread(encoder, target)
    response = web.Response(body=body, headers={"Content-Type": content_type})
    response.enable_compression()
    return response


@routes.get("/-/healthy")
async def healthy(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return web.Response(text="alertbridge is Healthy.\n")


@routes.get("/-/ready")
async def ready(request: web.Request) -> web.Response:
    """Readiness: the application has finished starting."""
    return web.Response(text="alertbridge is Ready.\n")


@routes.post("/api/v1/telemetry")
async def push_telemetry(request: web.Request) -> web.Response:
    """Record a batch of telemetry from another process."""
    settings = request.app[SETTINGS]
    check_token(request, settings.server.api_token)
    batch = parse_batch(
        await read_json(request),
        max_latencies=settings.telemetry.max_latencies_per_push,
        system_pushed=settings.telemetry.system == "push",
    )
    apply_batch(request.app[TELEMETRY], batch)
    counts = {
        "search_latency_seconds": len(batch.search_latency_seconds),
        "documents": batch.documents,
        "operations": batch.operations,
        "errors": batch.errors,
        "cpu_usage_ratio": int(batch.cpu_usage_ratio is not None),
        "memory_used_bytes": int(batch.memory_used_bytes is not None),
    }
    samples = request.app[METRICS].telemetry_samples
    for name, count in counts.items():
        if count:
            samples.labels(field=name).inc(count)
    return web.json_response({"recorded": counts})


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    """The telemetry snapshot (seed units) against every enabled rule."""
    settings = request.app[SETTINGS]
    check_token(request, settings.server.api_token)
    snapshot = request.app[TELEMETRY].snapshot()
    metrics = snapshot.as_metrics()
    return web.json_response(
        {
            "snapshot": {**metrics, "window_seconds": snapshot.span_seconds},
            "rules": rule_states(settings.rules, metrics),
        }
    )


async def _sample_forever(app: web.Application) -> None:
    settings, telemetry = app[SETTINGS], app[TELEMETRY]
    cpu = CpuSampler() if settings.telemetry.system == "psutil" else None
    while True:
        if cpu is not None:
            telemetry.set_system(cpu(), memory_used_bytes())
        telemetry.tick()
        await asyncio.sleep(settings.telemetry.sample_interval)


async def sampler_ctx(app: web.Application) -> AsyncIterator[None]:
    """Sample system metrics and remember counters for snapshots, in the background."""
    task = asyncio.create_task(_sample_forever(app), name="alertbridge-sampler")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    settings: Settings,
    *,
    telemetry: Telemetry | None = None,
    background: bool = True,
) -> web.Application:
    """Build the application. `background=False` leaves out the sampler (for tests)."""
    app = web.Application(
        middlewares=[errors_middleware], client_max_size=settings.server.max_body_bytes
    )
    telemetry = telemetry or Telemetry(settings.namespace, window_seconds=settings.telemetry.window)
    app[SETTINGS] = settings
    app[TELEMETRY] = telemetry
    app[REGISTRY] = telemetry.registry
    app[METRICS] = BridgeMetrics(telemetry.registry)
    app.add_routes(routes)
    if background:
        app.cleanup_ctx.append(sampler_ctx)
    return app
