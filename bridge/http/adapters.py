"""Channel adapters: Alertmanager notifies the bridge for receivers Alertmanager 0.25 has no
integration for, and the bridge delivers them through the channel of their type
(bridge.channels: Microsoft Teams); and the channels' delivery statistics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from bridge.alertmanager.channels import INTEGRATION_OF, cluster_stats
from bridge.channels import CHANNELS
from bridge.channels.delivery import DeliveryError, TargetError, send
from bridge.config import person_contacts
from bridge.core.errors import NotFound
from bridge.http.api import check_webhook_auth
from bridge.http.auth import authorize
from bridge.http.errors import HttpError
from bridge.http.keys import ADAPTER_SESSION, ESCALATOR, METRICS, SETTINGS, STORE
from bridge.http.util import decode_json, json_response, read_body
from bridge.ingest.webhook import parse_notification

routes = web.RouteTableDef()
#: Seconds the far end (Teams) has to take a message; then 502, and Alertmanager retries.
ADAPTER_TIMEOUT = 8.0


@routes.post("/api/v1/adapters/{type}/{receiver}")
async def adapter(request: web.Request) -> web.Response:
    """Deliver an Alertmanager notification to a receiver of a type Alertmanager 0.25 cannot
    deliver (bridge.channels: Microsoft Teams); 2xx once the far end took it, 502 when it
    refused or could not be reached (Alertmanager retries), 503 when the receiver's target
    (its URL file) cannot be read. /api/v1/adapters/msteams/RECEIVER is the Teams one."""
    app = request.app
    settings = app[SETTINGS]
    check_webhook_auth(request, settings.server.webhook_token)
    kind, name = request.match_info["type"], request.match_info["receiver"]
    channel = CHANNELS.get(kind)
    if channel is None or not channel.adapter:
        raise NotFound(f"no adapter for receivers of type {kind!r}")
    receivers = [*settings.alertmanager.receivers, *person_contacts(settings.oncall)]
    receiver = next((r for r in receivers if r.name == name and r.type == kind), None)
    if receiver is None:
        raise NotFound(f"no {kind} receiver named {name!r} in the configuration")
    raw = await read_body(request)
    notification = parse_notification(decode_json(raw), settings.limits, len(raw))
    keys = [(a.fingerprint, a.starts_at) for a in notification.alerts]
    ids = {fp: alert_id for (fp, _), alert_id in (await app[STORE].ids_of(keys)).items()}
    metrics = app[METRICS]
    try:
        status = await send(channel, receiver.config, app[ADAPTER_SESSION], notification, ids,
                            settings.server.public_url, timeout=ADAPTER_TIMEOUT,
                            timed=metrics.adapter_latency.labels(kind).observe)  # fmt: skip
    except TargetError as exc:
        metrics.adapter_notifications.labels(kind, name, "failed").inc()
        raise HttpError(503, "channel_unavailable", str(exc)) from None
    except DeliveryError as exc:
        metrics.adapter_notifications.labels(kind, name, "failed").inc()
        raise HttpError(502, "delivery_failed", f"receiver {name}: {exc}") from None
    metrics.adapter_notifications.labels(kind, name, "delivered").inc()
    return json_response({"delivered": len(notification.alerts), "teams_status": status,
                          "status": status})  # fmt: skip


@routes.get("/api/v1/channels")
async def channels(request: web.Request) -> web.Response:
    """Delivery statistics: each Alertmanager replica's notifications by integration (from
    its metrics), the escalation steps taken since start by policy and level, and the
    Teams adapter's deliveries."""
    app = request.app
    settings = app[SETTINGS]
    authorize(request, "read")
    raw = await cluster_stats(app[ADAPTER_SESSION], settings.alertmanager.urls)
    alertmanager = {url: per if isinstance(per, str) else [s.to_json() for s in per.values()]
                    for url, per in raw.items()}  # fmt: skip
    engine = app.get(ESCALATOR)
    taken: dict[tuple[str, str], int] = dict(engine.steps_taken) if engine else {}
    if engine is None:  # the engine's own process keeps its counters in the store
        kept = (await app[STORE].engine_counts()).get("steps", {})
        taken = {(k.rsplit("/", 1)[0], k.rsplit("/", 1)[1]): v for k, v in kept.items()}
    steps = [{"policy": p, "level": int(lv), "steps": n} for (p, lv), n in sorted(taken.items())]
    adapter = [
        {"receiver": s.labels["receiver"], "outcome": s.labels["outcome"], "count": int(s.value)}
        for family in app[METRICS].adapter_notifications.collect()
        for s in family.samples if s.name.endswith("_total")
    ]  # fmt: skip
    receivers = [{"name": r.name, "type": r.type, "severities": [s.value for s in r.severities],
                  "integration": INTEGRATION_OF.get(r.type, r.type)}
                 for r in settings.alertmanager.receivers]  # fmt: skip
    return json_response({"receivers": receivers, "alertmanager": alertmanager,
                          "escalation_steps": steps, "msteams_adapter": adapter})  # fmt: skip


async def session_ctx(app: web.Application) -> AsyncIterator[None]:
    """One client session for the adapters' deliveries."""
    async with aiohttp.ClientSession() as session:
        app[ADAPTER_SESSION] = session
        yield
