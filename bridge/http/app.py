"""The aiohttp application factory: wires telemetry, storage, the API and background tasks."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from bridge.config import Settings
from bridge.core.errors import StoreError
from bridge.core.model import Severity
from bridge.core.times import format_time
from bridge.feed.notify import Notifier
from bridge.host.apikeys import KeyRing
from bridge.http import adapters, api, oncall, pages, rules, slack, stream, websocket
from bridge.http.auth import authorize
from bridge.http.background import (
    PRUNE_EVERY_SECONDS,
    alertmanager_ctx,
    embedded,
    every,
    prune,
    sampler,
    storage_ctx,
)
from bridge.http.keys import (
    ATTEMPTS,
    GUARD,
    HUB,
    KEYRING,
    METRICS,
    NOTIFIER,
    REGISTRY,
    SESSIONS,
    SETTINGS,
    STORE,
    STREAM_WORKER,
    TELEMETRY,
    WATCHDOG,
)
from bridge.http.ratelimit import Attempts
from bridge.http.selfmetrics import BridgeMetrics
from bridge.http.server import ConnectionGuard, ConnectionLimits, GuardedHandler
from bridge.http.sessions import Sessions
from bridge.http.util import (
    ALLOWED_HOSTS,
    BODIES,
    BODY_TIMEOUT,
    SIGNED_BODIES,
    BodyBudget,
    Handler,
    allowed_hosts,
    make_errors_middleware,
    read_json,
)
from bridge.telemetry.exporter import (
    Telemetry,
    apply_batch,
    parse_batch,
)
from bridge.telemetry.status import rule_states

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition with content negotiation (OpenMetrics or text)."""
    registry = request.app[REGISTRY]
    store = request.app.get(STORE)
    if store is not None:  # the stored-alerts counts of this scrape
        try:
            await request.app[METRICS].stored_alerts.read(store)
            await request.app[METRICS].escalations.read()
        except StoreError:
            request.app[METRICS].store_errors.labels(operation="read").inc()
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
    """Readiness: storage open, its writer and syncer threads alive, and writing works (after
    a storage failure, a probe write through the writer must succeed again)."""
    problem = await _unready(request.app)
    if problem is not None:
        return web.Response(status=503, text=f"alertbridge is not ready: {problem}\n")
    return web.Response(text="alertbridge is Ready.\n")


async def _unready(app: web.Application) -> str | None:
    store = app.get(STORE)
    if store is None:
        return "storage is not open"
    return await store.problem()


@routes.post("/api/v1/telemetry")
async def push_telemetry(request: web.Request) -> web.Response:
    """Record a batch of telemetry from another process."""
    settings = request.app[SETTINGS]
    authorize(request, "write")
    batch = parse_batch(
        await read_json(request),
        max_latencies=settings.telemetry.max_latencies_per_push,
        system_pushed=settings.telemetry.system == "push",
        declared=request.app[TELEMETRY].custom,
    )
    apply_batch(request.app[TELEMETRY], batch)
    counts = {
        "search_latency_seconds": len(batch.search_latency_seconds),
        "documents": batch.documents,
        "operations": batch.operations,
        "errors": batch.errors,
        "cpu_usage_ratio": int(batch.cpu_usage_ratio is not None),
        "memory_used_bytes": int(batch.memory_used_bytes is not None),
        "metrics": len(batch.custom),
    }
    samples = request.app[METRICS].telemetry_samples
    for name, count in counts.items():
        if count:
            samples.labels(field=name).inc(count)
    return web.json_response({"recorded": counts})


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    """The telemetry snapshot (seed units) against every enabled rule, and alert counts."""
    authorize(request, "read")
    snapshot = request.app[TELEMETRY].snapshot()
    values = snapshot.as_metrics()
    counts = await request.app[STORE].counts()
    by_state: dict[str, int] = {"firing": 0, "acknowledged": 0, "resolved": 0}
    for (state, _), count in counts.by_state.items():
        by_state[state] = by_state.get(state, 0) + count
    by_am: dict[str, int] = {"active": 0, "suppressed": 0}
    for (_, _, am_state), count in counts.firing.items():
        by_am[am_state] += count
    return web.json_response(
        {
            "snapshot": {**values, "window_seconds": snapshot.span_seconds},
            "rules": rule_states(rules.rules_in_force(request.app), values),
            "alerts": by_state,
            "alertmanager": by_am,  # firing alerts, by whether Alertmanager mutes them
            "heartbeat": _heartbeat_status(request.app),
        }
    )


def _heartbeat_status(app: web.Application) -> dict[str, Any]:
    """The dead man's switch: off, or its state (waiting, ok, silent) and the last arrival."""
    watchdog = app.get(WATCHDOG)
    if watchdog is None:
        return {"state": "off"}
    age = watchdog.age()
    return {
        "state": watchdog.state,
        "last_at": format_time(watchdog.last),
        "age_seconds": None if age != age else round(age, 3),  # NaN: none yet
        "timeout_seconds": watchdog.timeout,
    }


WEBHOOK_PATH = "/api/v1/alertmanager"  # counted by alertbridge_webhook_requests_total


@web.middleware
async def outermost(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the connection its request head is complete (it is not cut as overdue while the
    handler runs); count alertbridge_api_requests_total by route template and status code
    (the JSON error responses included)."""
    protocol = request.protocol
    guarded = protocol if isinstance(protocol, GuardedHandler) else None  # None: a test server
    if guarded is not None:
        guarded.request_started()
    try:
        response = await handler(request)
    finally:
        if guarded is not None:
            guarded.request_done()
    resource = request.match_info.route.resource
    template = resource.canonical if resource is not None else None
    if template is not None and template.startswith("/api/") and template != WEBHOOK_PATH:
        request.app[METRICS].api_requests.labels(handler=template, code=str(response.status)).inc()
    return response


def create_app(
    settings: Settings,
    *,
    telemetry: Telemetry | None = None,
    notifier: Notifier | None = None,
    background: bool = True,
    stream_worker: bool = False,
) -> web.Application:
    """Build the application.

    `background=False` leaves out the periodic tasks (sampler, embedded evaluator, retention)
    so tests drive them; storage, and the feed for the notification callbacks, are always
    opened in a cleanup context. `stream_worker=True` (`serve`) hands the live event streams
    to a process of their own (bridge.http.fanout).
    """
    server = settings.server
    app = web.Application(
        middlewares=[outermost, make_errors_middleware(server.max_body_bytes)],
        client_max_size=server.max_body_bytes,
    )
    telemetry = telemetry or Telemetry(settings.namespace, window_seconds=settings.telemetry.window)
    app[SETTINGS] = settings
    app[KEYRING] = KeyRing(server.keys_path)  # a bad keys file stops the start (KeysError)
    if settings.metrics and not telemetry.custom:
        telemetry.declare(settings.metrics)
    app[TELEMETRY] = telemetry
    app[REGISTRY] = telemetry.registry
    metrics = app[METRICS] = BridgeMetrics(telemetry.registry)
    app[BODY_TIMEOUT] = float(server.body_timeout)
    app[BODIES] = BodyBudget(
        server.max_bodies_in_flight_bytes, server.max_body_bytes, metrics.webhook_busy.inc
    )
    app[SIGNED_BODIES] = BodyBudget(
        max(server.max_body_bytes, server.max_bodies_in_flight_bytes // 4),
        server.max_body_bytes,
        metrics.webhook_busy.inc,
    )
    app[ALLOWED_HOSTS] = allowed_hosts(
        server.allowed_hosts,
        [*settings.alertmanager.webhook_urls, *settings.prometheus.scrape_targets, server.host],
    )
    limits = ConnectionLimits(server.max_connections, server.header_timeout,
                              server.body_timeout, server.keepalive_timeout)  # fmt: skip
    guard = app[GUARD] = ConnectionGuard(
        limits, lambda event: metrics.http_connection_events.labels(event=event).inc()
    )
    metrics.http_connections.set_function(lambda: guard.open)
    metrics.event_streams.labels(served_by="server").set_function(
        lambda: app[HUB].watchers if HUB in app else 0
    )
    metrics.stream_worker_up.set_function(
        lambda: int(STREAM_WORKER in app and app[STREAM_WORKER].alive)
    )
    metrics.event_streams.labels(served_by="worker").set_function(
        lambda: (
            app[STREAM_WORKER].open_streams
            if STREAM_WORKER in app and app[STREAM_WORKER].alive
            else 0
        )
    )
    app.on_cleanup.append(lambda app: app[GUARD].stop())
    app[NOTIFIER] = notifier or Notifier(Severity.WARNING)
    app.add_routes(routes)
    app.add_routes(api.routes)
    app.add_routes(adapters.routes)
    app.add_routes(stream.routes)
    app.add_routes(websocket.routes)
    app.add_routes(oncall.routes)
    app.add_routes(slack.routes)
    app.add_routes(rules.routes)
    app[oncall.SIGNING] = oncall.SigningKey()
    app.add_routes(pages.routes)
    app[SESSIONS] = Sessions()
    app[ATTEMPTS] = Attempts(
        server.signin_attempts, server.token_failures,
        lambda what: metrics.attempts_limited.labels(what=what).inc(),
    )  # fmt: skip
    app.cleanup_ctx.append(adapters.session_ctx)
    app.cleanup_ctx.append(storage_ctx)
    app.cleanup_ctx.append(rules.manager_ctx)
    app.cleanup_ctx.append(stream.hub_ctx)
    if stream_worker:
        app.cleanup_ctx.append(stream.stream_worker_ctx)
    app.on_shutdown.append(stream.end_streams)
    if background:
        interval = settings.telemetry.sample_interval
        app.cleanup_ctx.append(every(interval, "sampler", sampler(app)))
        app.cleanup_ctx.append(every(PRUNE_EVERY_SECONDS, "retention", prune, True))
        if not settings.alertmanager.urls:
            app.cleanup_ctx.append(every(interval, "evaluator", embedded(app), True))
            if settings.escalation.policies:
                log.warning(
                    "escalation policies are configured but no Alertmanager is: nothing"
                    " escalates (escalation delivers through Alertmanager's receivers)"
                )
        else:
            app.cleanup_ctx.append(alertmanager_ctx)
    return app
