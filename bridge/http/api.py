"""HTTP handlers of the webhook receiver and the alerts REST API (wiring only, rules in store)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from bridge.config import Secret
from bridge.core.alerts import Notification, ReceivedAlert
from bridge.core.errors import BridgeError, StoreError, Unprocessable
from bridge.core.times import now_ns
from bridge.escalation.engine import change_of, override, override_input
from bridge.export.report import of_store, window
from bridge.http.auth import Principal, authorize
from bridge.http.errors import HttpError, status_of
from bridge.http.keys import ESCALATOR, METRICS, SETTINGS, STORE
from bridge.http.openapi import SPEC
from bridge.http.util import (
    BODIES,
    SIGNED_BODIES,
    Handler,
    decode_json,
    json_response,
    read_body,
    read_json,
    tokens_equal,
)
from bridge.http.wake import kick_reconciler
from bridge.ingest.internal import split
from bridge.ingest.webhook import is_grafana_test, parse_notification
from bridge.store import Event, IngestResult, StoredAlert
from bridge.store.interface import Actions
from bridge.store.query import parse_alert_query, parse_id

routes = web.RouteTableDef()
T = TypeVar("T")


def check_webhook_auth(request: web.Request, expected: Secret | None) -> None:
    """Bearer token, or basic auth whose password is the token; constant-time comparison."""
    if expected is None:
        return
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    given = value.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode().partition(":")[2]
        except ValueError:  # not base64 (binascii.Error), not ASCII, not UTF-8
            given = ""
    elif scheme.lower() != "bearer":
        given = ""
    if not tokens_equal(given, expected):
        raise HttpError(401, "unauthorized", "missing or invalid webhook credentials")


def check_grafana_signature(
    request: web.Request,
    raw: bytes,
    secret: Secret,
    header: str,
    timestamp_header: str,
    max_skew: int,
) -> bool:
    """Whether the body carries Grafana's valid HMAC-SHA256 signature (hex, of the body or of
    "timestamp:body"); False when it carries none; 401 when it is wrong or stale."""
    given = request.headers.get(header)
    if given is None:
        return False
    signed = raw
    if timestamp_header:
        stamp = request.headers.get(timestamp_header, "")
        if not stamp.isascii() or not stamp.isdigit():
            raise HttpError(401, "unauthorized", f"missing or malformed {timestamp_header}")
        if abs(time.time() - int(stamp)) > max_skew:
            raise HttpError(401, "unauthorized", f"{timestamp_header} is more than {max_skew}s"
                            " off: a replay, or a clock to set")  # fmt: skip
        signed = stamp.encode() + b":" + raw
    expected = hmac.new(secret.data, signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(given.strip().lower().encode(), expected.encode()):
        raise HttpError(401, "unauthorized", f"the {header} signature does not match the body")
    return True


@routes.post("/api/v1/alertmanager")
@routes.put("/api/v1/alertmanager")  # Grafana's contact point may be set to PUT
async def alertmanager_webhook(request: web.Request) -> web.Response:
    """Store an Alertmanager (or Grafana) notification; 2xx only once it is committed to
    disk. 503 while the bodies in flight hold the server's budget (the sender retries)."""
    app = request.app
    metrics = app[METRICS]
    started = time.perf_counter()
    try:
        server = app[SETTINGS].server
        budget = app[BODIES]
        if server.grafana_hmac_secret and server.grafana_signature_header in request.headers:
            # A signed body is checked once read: until then its sender is anyone, so such
            # bodies hold a share of their own and never what Alertmanager's webhook needs.
            budget = app[SIGNED_BODIES]
        else:
            check_webhook_auth(request, server.webhook_token)
        # The body's bytes are held against the budget until its alerts are stored: what a
        # notification costs in memory lasts as long as its handling.
        async with budget.held(request):
            notification, alerts, result = await _store_notification(request)
    except BridgeError as exc:
        metrics.webhook_requests.labels(code=str(status_of(exc))).inc()
        raise
    except web.HTTPException as exc:
        metrics.webhook_requests.labels(code=str(exc.status)).inc()
        raise
    clipped = sum(1 for a in alerts if a.clipped)
    if clipped:
        metrics.alerts_clipped.labels(sender=notification.sender).inc(clipped)
    firing = sum(1 for a in notification.alerts if a.status == "firing")
    if firing:
        metrics.received_firing.inc(firing)
    if len(notification.alerts) > firing:
        metrics.received_resolved.inc(len(notification.alerts) - firing)
    metrics.webhook_ok.inc()
    metrics.webhook_duration.observe(time.perf_counter() - started)
    if notification.truncated_alerts:
        metrics.truncations.record(
            notification.receiver, notification.group_key,
            len(notification.alerts), notification.truncated_alerts,
        )  # fmt: skip
    if result.resolved or result.reopened:  # a silence to expire, a reopened alert's view
        await kick_reconciler(request.app)
    answer = {"stored": len(alerts), "fired": len(result.fired),
              "resolved": len(result.resolved), "repeats": result.repeats}  # fmt: skip
    if clipped:
        answer["clipped"] = clipped
    if is_grafana_test(notification):
        answer["test"] = True
    return json_response(answer)


async def _store_notification(
    request: web.Request,
) -> tuple[Notification, tuple[ReceivedAlert, ...], IngestResult]:
    """Read, parse and store a notification: (it, the alerts stored, what they changed)."""
    app = request.app
    metrics = app[METRICS]
    raw = await read_body(request)
    server = app[SETTINGS].server
    signed = server.grafana_hmac_secret is not None and check_grafana_signature(
        request, raw, server.grafana_hmac_secret, server.grafana_signature_header,
        server.grafana_timestamp_header, server.grafana_max_skew,
    )  # fmt: skip
    notification = parse_notification(decode_json(raw), app[SETTINGS].limits, len(raw))
    del raw
    if notification.sender == "grafana" and server.grafana_hmac_secret and not signed:
        raise HttpError(401, "unauthorized", "Grafana notifications must be signed"
                        f" ({server.grafana_signature_header})")  # fmt: skip
    if is_grafana_test(notification):  # a contact point's test: answered, nothing stored
        metrics.grafana_tests.inc()
        return notification, (), IngestResult()
    # The bridge's own alerts (escalation copies, the heartbeat...) are never stored.
    alerts, beats, ignored = split(notification.alerts)
    if beats:  # the dead man's switch: its arrival recorded
        await app[STORE].record_heartbeat(now_ns())
        metrics.heartbeats.inc()
    if ignored:
        metrics.copies_ignored.inc(ignored)
    if not alerts:
        return notification, alerts, IngestResult()
    try:
        result = await app[STORE].ingest(alerts, now_ns(), source=notification.sender)
    except StoreError:
        metrics.store_errors.labels(operation="ingest").inc()
        raise
    return notification, alerts, result


async def _counted(request: web.Request, operation: str, call: Awaitable[T]) -> T:
    """Await a store call, counting its storage failure (the middleware answers 503)."""
    try:
        return await call
    except StoreError:
        request.app[METRICS].store_errors.labels(operation=operation).inc()
        raise


def _api_auth(request: web.Request, needed: str = "read") -> Principal:
    return authorize(request, needed)


@routes.get("/api/v1/alerts")
async def alerts_list(request: web.Request) -> web.Response:
    """Alerts, newest first, filtered and paginated."""
    _api_auth(request)
    params = {key: request.query.getall(key) for key in request.query}
    query = parse_alert_query(params, now_ns())
    page = await _counted(request, "read", request.app[STORE].list_page(query))
    return json_response(page.to_json())


def _alert_id(request: web.Request) -> int:
    return parse_id(request.match_info["id"])


@routes.get("/api/v1/alerts/{id}")
async def alerts_get(request: web.Request) -> web.Response:
    """One alert with its audit trail and its escalations."""
    _api_auth(request)
    alert_id = _alert_id(request)
    store = request.app[STORE]
    detail = await _counted(request, "read", store.alert_detail(alert_id))
    escalations = await _counted(request, "read", store.escalations(alert_id))
    return json_response({**detail.to_json(), "escalations": [e.to_json() for e in escalations]})


@routes.get("/api/v1/alerts/{id}/escalation")
async def escalation_get(request: web.Request) -> web.Response:
    """An alert's escalations: policy, state, level, next step due, active copies."""
    _api_auth(request)
    alert_id = _alert_id(request)
    store = request.app[STORE]
    await _counted(request, "read", store.get_alert(alert_id))
    escalations = await _counted(request, "read", store.escalations(alert_id))
    return json_response({"escalations": [e.to_json() for e in escalations]})


def _override(action: str) -> Handler:
    """POST .../escalate, .../escalation/pause, .../escalation/resume: an operator's
    override, audited as theirs; the engine (if this server runs one) acts on it at once."""

    async def handler(request: web.Request) -> web.Response:
        principal = _api_auth(request, "write")
        alert_id, body = _alert_id(request), await _body(request)
        body["by"] = principal.actor(body.get("by"))
        by, level, seconds = override_input(body)
        change = change_of(action, level, seconds)
        engine = request.app.get(ESCALATOR)
        if engine is not None:
            call = engine.override(alert_id, by, change)
        else:
            call = override(request.app[STORE], alert_id, by, change, now_ns())
        escalations = await _counted(request, "api", call)
        return json_response({"escalations": [e.to_json() for e in escalations]})

    return handler


routes.post("/api/v1/alerts/{id}/escalate")(_override("escalate"))
routes.post("/api/v1/alerts/{id}/escalation/pause")(_override("pause"))
routes.post("/api/v1/alerts/{id}/escalation/resume")(_override("resume"))


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.body_exists:
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise Unprocessable("body", "must be a JSON object")
    return body


#: An action's store method: (alert id, by, the body's field, at) -> what to answer.
Action = Callable[[Actions, int, object, object, int], Awaitable[StoredAlert | Event]]


def _action(act: Action, field: str, status: int = 200, observe: bool = False) -> Handler:
    """A handler for POST /api/v1/alerts/{id}/<action> with body {"by": ..., field: ...}
    (`by`: the caller's key name unless given; bridge.http.auth)."""

    async def handler(request: web.Request) -> web.Response:
        principal = _api_auth(request, "write")
        alert_id, body = _alert_id(request), await _body(request)
        store = request.app[STORE]
        by = principal.actor(body.get("by"))
        call = act(store, alert_id, by, body.get(field), now_ns())
        result = await _counted(request, "api", call)
        if observe and isinstance(result, StoredAlert):
            observe_ack(request, result)
        await kick_reconciler(request.app)
        return web.json_response(result.to_json(), status=status)

    return handler


# Lambdas, not Actions.acknowledge: a Protocol's own methods have no body to call.
routes.post("/api/v1/alerts/{id}/ack")(
    _action(lambda s, i, by, text, at: s.acknowledge(i, by, text, at), "comment", observe=True)
)
routes.post("/api/v1/alerts/{id}/unack")(
    _action(lambda s, i, by, text, at: s.unacknowledge(i, by, text, at), "comment")
)
routes.post("/api/v1/alerts/{id}/notes")(
    _action(lambda s, i, by, text, at: s.add_note(i, by, text, at), "text", status=201)
)
routes.post("/api/v1/alerts/{id}/assign")(
    _action(lambda s, i, by, who, at: s.assign(i, by, who, at), "assignee")
)
routes.post("/api/v1/alerts/{id}/resolve")(
    _action(lambda s, i, by, text, at: s.resolve(i, by, text, at), "comment")
)


@routes.get("/api/v1/report")
async def report(request: web.Request) -> web.Response:
    """Time to acknowledge and resolve, noisy and flapping rules, never acknowledged, time at
    each escalation level (bridge.export.report) over ?since= (default 30d) .. ?until=."""
    _api_auth(request)
    data = await report_data(request)
    return json_response(data)


async def report_data(request: web.Request) -> dict[str, Any]:
    """The report's JSON for the request's since, until and flap (the page uses it too)."""
    since, until, flap = window(request.query.get("since"), request.query.get("until"),
                                request.query.get("flap"))  # fmt: skip
    store = request.app[STORE]
    done = await _counted(request, "read", asyncio.to_thread(of_store, store, since, until, flap))
    return done.to_json()


def observe_ack(request: web.Request, alert: StoredAlert) -> None:
    """alertbridge_time_to_acknowledge_seconds, for an acknowledgement made here."""
    if alert.acked_at is not None:
        seconds = max(0.0, (alert.acked_at - alert.starts_at) / 1e9)
        request.app[METRICS].time_to_ack.labels(severity=alert.severity).observe(seconds)


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    return web.json_response(SPEC)
