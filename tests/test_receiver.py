"""The webhook receiver over HTTP: auth, 4xx classes, 503 on storage failure, metrics."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Secret, load_settings
from bridge.feed.notify import Notifier
from bridge.http.app import create_app
from bridge.http.keys import STORE
from bridge.store import AlertQuery, StoredAlert
from tests.payloads import am_alert, notification
from tests.stores import sqlite_of
from tests.test_webhook import json_values

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
WEBHOOK = "/api/v1/alertmanager"
TOKEN = "webhook-secret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def make_app(tmp_path: Path, notifier: Notifier | None = None, **server: Any) -> Any:
    base = load_settings(None, {}, db=str(tmp_path / "alerts.db"))
    server = {"webhook_token": Secret(TOKEN), **server}
    settings = dataclasses.replace(base, server=dataclasses.replace(base.server, **server))
    return create_app(settings, notifier=notifier, background=False)


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await aiohttp_client(make_app(tmp_path, max_body_bytes=64 * 1024))


async def stored(client: Client) -> list[StoredAlert]:
    app: web.Application = client.app
    return await app[STORE].list_alerts(AlertQuery(limit=1000))


async def metric(client: Client, name: str, **labels: str) -> float:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def test_stores_and_answers_after_commit(client: Client) -> None:
    """A valid notification is stored and the answer counts what changed."""
    payload = notification(am_alert(), am_alert("fedcba9876543210", severity="critical"))
    response = await client.post(WEBHOOK, json=payload, headers=BEARER)
    assert response.status == 200
    assert await response.json() == {"stored": 2, "fired": 2, "resolved": 0, "repeats": 0}
    assert sorted(a.severity for a in await stored(client)) == ["critical", "warning"]
    again = await client.post(WEBHOOK, json=payload, headers=BEARER)
    assert (await again.json())["repeats"] == 2
    assert await metric(client, "alertbridge_webhook_requests_total", code="200") == 2
    assert await metric(client, "alertbridge_alerts_received_total", status="firing") == 4
    assert await metric(client, "alertbridge_webhook_duration_seconds_count") == 2


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN},
     {"Authorization": "Basic " + base64.b64encode(b"am:nope").decode()},
     {"Authorization": "Basic !!!"}],
)  # fmt: skip
async def test_wrong_credentials_are_401_and_store_nothing(
    client: Client, headers: dict[str, str]
) -> None:
    """Without the token (bearer, or as basic-auth password) nothing is stored."""
    response = await client.post(WEBHOOK, json=notification(am_alert()), headers=headers)
    assert response.status == 401
    assert (await stored(client)) == []
    assert await metric(client, "alertbridge_webhook_requests_total", code="401") == 1


async def test_basic_auth_with_the_token_as_password(client: Client) -> None:
    """Alertmanager's basic_auth works when the password is the token."""
    auth = "Basic " + base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()
    response = await client.post(
        WEBHOOK, json=notification(am_alert()), headers={"Authorization": auth}
    )
    assert response.status == 200


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{", 400, "body"),
        (b"\xc3\x28", 400, "body"),
        (b'{"version": "3"}', 400, "version"),
        (json.dumps(notification(am_alert(fingerprint="nothex"))).encode(), 400,
         "alerts[0].fingerprint"),
        (b" " * (64 * 1024 + 1), 413, None),
    ],
)  # fmt: skip
async def test_bad_bodies_are_4xx_json_and_store_nothing(
    client: Client, body: bytes, status: int, field: str | None
) -> None:
    """Malformed, invalid or oversized notifications: 4xx naming the problem, nothing stored."""
    response = await client.post(
        WEBHOOK, data=body, headers={**BEARER, "Content-Type": "application/json"}
    )
    assert response.status == status
    error = await response.json()
    assert error.get("field") == field
    assert (await stored(client)) == []


async def test_storage_failure_is_503_then_recovers(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """While the database is locked the webhook answers 503 (Alertmanager retries); then 200."""
    app = make_app(tmp_path)
    client = await aiohttp_client(app)
    # Fail fast while locked instead of waiting the default 5 s busy timeout.
    await sqlite_of(app[STORE]).writer.submit(lambda c: c.execute("PRAGMA busy_timeout = 50"))
    blocker = sqlite3.connect(tmp_path / "alerts.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    payload = notification(am_alert())
    response = await client.post(WEBHOOK, json=payload, headers=BEARER)
    assert response.status == 503
    assert (await response.json())["error"] == "storage_unavailable"
    blocker.execute("ROLLBACK")
    blocker.close()
    assert (await stored(client)) == []
    assert await metric(client, "alertbridge_store_errors_total", operation="ingest") == 1
    retry = await client.post(WEBHOOK, json=payload, headers=BEARER)
    assert retry.status == 200
    assert len(await stored(client)) == 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=json_values)
async def test_arbitrary_json_is_never_5xx_nor_stored(client: Client, body: Any) -> None:
    """Whatever JSON arrives, the answer is 2xx or 4xx, and only valid payloads store rows."""
    before = len(await stored(client))
    response = await client.post(WEBHOOK, json=body, headers=BEARER)
    assert response.status < 500
    if response.status != 200:
        assert len(await stored(client)) == before


async def test_truncated_notifications_are_counted_and_warned_once(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """truncatedAlerts > 0 (Alertmanager's max_alerts) counts the alerts left out by receiver
    and warns once per group key per interval naming max_alerts; the sent alerts are stored."""
    payload = {**notification(am_alert()), "truncatedAlerts": 7, "receiver": "web\\.hook"}
    other = {**notification(am_alert("fedcba9876543210")), "truncatedAlerts": 2,
             "groupKey": "{}:{other}"}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="bridge.http.selfmetrics"):
        for body in (payload, payload, other):
            response = await client.post(WEBHOOK, json=body, headers=BEARER)
            assert response.status == 200
    assert await metric(client, "alertbridge_alerts_truncated_total", receiver="web.hook") == 14
    assert await metric(client, "alertbridge_alerts_truncated_total", receiver="alertbridge") == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # one per group key, the repeat held back
    assert "left out 7" in warnings[0]
    assert "max_alerts" in warnings[0]
    assert len(await stored(client)) == 2
