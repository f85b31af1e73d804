"""The HTTP surface: /metrics negotiation, health, the push API's auth and errors, status."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Secret, Settings, TelemetrySettings, load_settings
from bridge.core.errors import StoreError
from bridge.http.app import create_app
from bridge.http.keys import STORE
from bridge.store.sqlite.actions import probe_write
from tests.stores import sqlite_of

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
TOKEN = "api-token-for-tests"


def settings(tmp_path: Path, **server: Any) -> Settings:
    base = load_settings(None, {}, db=str(tmp_path / "alerts.db"))
    return dataclasses.replace(
        base,
        server=dataclasses.replace(base.server, **server),
        telemetry=TelemetrySettings(system="push", max_latencies_per_push=100),
    )


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    """A fresh app with an API token, system metrics pushed, no background tasks."""
    app_settings = settings(tmp_path, api_token=Secret(TOKEN), max_body_bytes=4096)
    return await aiohttp_client(create_app(app_settings, background=False))


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_metrics_text_format(client: Client) -> None:
    """Plain GET /metrics is Prometheus text format with telemetry and alertbridge_ series."""
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    names = {f.name for f in text_string_to_metric_families(await response.text())}
    assert {
        "telemetry_system_cpu_usage_ratio",
        "alertbridge_build_info",
        "alertbridge_webhook_requests",
    } <= names


async def test_metrics_openmetrics_negotiated(client: Client) -> None:
    """Accept: application/openmetrics-text gets OpenMetrics, ending in # EOF."""
    response = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.text()
    assert text.endswith("# EOF\n")
    # prometheus_client's OpenMetrics parser has no annotations
    families = list(parse_openmetrics(text))  # type: ignore[no-untyped-call]
    assert any(f.name == "telemetry_search_latency_seconds" for f in families)


async def test_metrics_name_filter_and_gzip(client: Client) -> None:
    """name[] restricts the output; gzip is used when asked for."""
    response = await client.get(
        "/metrics",
        params={"name[]": "telemetry_system_cpu_usage_ratio"},
        headers={"Accept-Encoding": "gzip"},
    )
    assert response.headers.get("Content-Encoding") == "gzip"
    families = list(text_string_to_metric_families(await response.text()))
    assert [f.name for f in families] == ["telemetry_system_cpu_usage_ratio"]


async def test_health_and_ready(client: Client) -> None:
    """/-/healthy and /-/ready answer 200 without a token."""
    assert (await client.get("/-/healthy")).status == 200
    assert (await client.get("/-/ready")).status == 200


async def _ready(client: Client) -> tuple[int, str]:
    response = await client.get("/-/ready")
    return response.status, await response.text()


async def test_ready_flips_when_the_writer_stops(client: Client) -> None:
    """No writer thread, no readiness: 503 naming it."""
    writer = sqlite_of(client.app[STORE]).writer
    await asyncio.to_thread(writer.stop)
    status, text = await _ready(client)
    assert status == 503
    assert "writer is not running" in text
    writer.start()  # the cleanup context stops it again
    assert (await _ready(client))[0] == 200


async def test_ready_flips_when_the_syncer_dies(client: Client) -> None:
    """The syncer thread gone (it answers the writer's callers): 503."""
    writer = sqlite_of(client.app[STORE]).writer
    syncer = writer._syncer
    await asyncio.to_thread(syncer.stop)
    status, text = await _ready(client)
    assert status == 503
    assert "writer is not running" in text


async def test_ready_flips_when_the_store_is_closed(client: Client) -> None:
    """A closed store: 503."""
    await client.app[STORE].close()
    status, text = await _ready(client)
    assert status == 503
    assert "storage is not open" in text


async def test_ready_flips_while_storage_fails_and_back(client: Client, tmp_path: Path) -> None:
    """While writes fail (the database locked by another process) readiness is 503, checked by
    a probe write; once writes work again it is 200 without a restart."""
    writer = sqlite_of(client.app[STORE]).writer
    await writer.submit(lambda c: c.execute("PRAGMA busy_timeout = 50"))
    blocker = sqlite3.connect(tmp_path / "alerts.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        push = await client.post(
            "/api/v1/alerts/1/note", json={"by": "a", "text": "b"}, headers=AUTH
        )
        assert push.status in (404, 503)
        with pytest.raises(StoreError):
            await writer.submit(probe_write)
        assert writer.failing
        status, text = await _ready(client)
        assert status == 503
        assert "storage is failing" in text
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await _ready(client) == (200, "alertbridge is Ready.\n")
    assert not writer.failing


async def test_push_records_and_is_exported(client: Client) -> None:
    """An authorised push is recorded and visible in the next scrape."""
    body = {"documents": 7, "operations": 4, "errors": 1, "cpu_usage_ratio": 0.97,
            "search_latency_seconds": [0.5, 1.5]}  # fmt: skip
    response = await client.post("/api/v1/telemetry", json=body, headers=AUTH)
    assert response.status == 200
    assert (await response.json())["recorded"]["search_latency_seconds"] == 2
    text = await (await client.get("/metrics")).text()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["telemetry_ingestion_documents_total"] == 7
    assert values["telemetry_operation_errors_total"] == 1
    assert values["telemetry_system_cpu_usage_ratio"] == 0.97
    assert values["telemetry_search_latency_seconds_count"] == 2


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": TOKEN}, 401),
     ({"Authorization": f"Basic {TOKEN}"}, 401), (AUTH, 200)],
)  # fmt: skip
async def test_push_requires_the_api_token(
    client: Client, headers: dict[str, str], status: int
) -> None:
    """Only `Authorization: Bearer <API token>` is accepted."""
    response = await client.post("/api/v1/telemetry", json={"documents": 1}, headers=headers)
    assert response.status == status
    if status == 401:
        assert (await response.json())["error"] == "unauthorized"


@pytest.mark.parametrize(
    ("data", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"\xff\xfe{}", 400, "body"),
        (b'{"documents": "many"}', 400, "documents"),
        (b'{"operations": 1, "errors": 5}', 400, "errors"),
        (b'{"colour": 1}', 400, "colour"),
        (
            json.dumps({"search_latency_seconds": [0.1] * 101}).encode(),
            400,
            "search_latency_seconds",
        ),
        (b"[" + b"1," * 3000 + b"1]", 413, None),
    ],
)
async def test_push_errors_are_json_and_record_nothing(
    client: Client, data: bytes, status: int, field: str | None
) -> None:
    """Bad pushes get a 4xx JSON error naming the problem, and nothing is recorded."""
    response = await client.post(
        "/api/v1/telemetry", data=data, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status == status
    body = await response.json()
    assert body.get("field") == field
    assert body["message"]
    text = await (await client.get("/metrics")).text()
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["telemetry_ingestion_documents_total"] == 0
    assert values["telemetry_operations_total"] == 0


async def test_push_of_system_metrics_conflicts_when_sampled(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """With telemetry.system: psutil, a pushed CPU value is a 409 naming the setting."""
    app_settings = dataclasses.replace(
        settings(tmp_path), telemetry=TelemetrySettings(system="psutil")
    )
    client = await aiohttp_client(create_app(app_settings, background=False))
    response = await client.post("/api/v1/telemetry", json={"cpu_usage_ratio": 0.5})
    assert response.status == 409
    assert "telemetry.system: push" in (await response.json())["message"]


async def test_unknown_route_and_method_are_json(client: Client) -> None:
    """404 and 405 come back as JSON errors too."""
    missing = await client.get("/nope")
    assert (missing.status, (await missing.json())["error"]) == (404, "not_found")
    wrong = await client.get("/api/v1/telemetry")
    assert wrong.status == 405
    assert (await wrong.json())["error"] == "method_not_allowed"


async def test_status_reports_rule_states(client: Client) -> None:
    """GET /api/v1/status evaluates the snapshot against each rule."""
    await client.post("/api/v1/telemetry", json={"cpu_usage_ratio": 0.9}, headers=AUTH)
    response = await client.get("/api/v1/status", headers=AUTH)
    data = await response.json()
    states = {r["rule"]: r["state"] for r in data["rules"]}
    assert states["high_cpu"] == "WARNING"
    assert states["critical_cpu"] == "OK"
    assert states["slow_search"] == "NO_DATA"
    assert data["snapshot"]["system.cpu.percent"] == 90.0
    assert (await client.get("/api/v1/status")).status == 401
