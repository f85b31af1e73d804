"""The alerts REST API: listing, detail with events, actions, errors, OpenAPI coverage."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import _refresh_counts, create_app
from bridge.config import Secret, load_settings
from bridge.embedded import EmbeddedEvaluator
from bridge.errors import StoreError
from bridge.keys import STORE, TELEMETRY, WRITER
from bridge.store import AlertQuery, list_alerts
from tests.payloads import am_alert, notification

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
API = {"Authorization": "Bearer api-secret"}
HOOK = {"Authorization": "Bearer hook-secret"}


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    """An app with both tokens and four stored alerts (ids 1-4)."""
    base = load_settings(None, {}, db=str(tmp_path / "alerts.db"))
    server = dataclasses.replace(
        base.server, webhook_token=Secret("hook-secret"), api_token=Secret("api-secret")
    )
    client = await aiohttp_client(
        create_app(dataclasses.replace(base, server=server), background=False)
    )
    payload = notification(
        am_alert("0000000000000001", alertname="high_cpu", team="infra"),
        am_alert("0000000000000002", alertname="critical_cpu", severity="critical", team="infra"),
        am_alert("0000000000000003", alertname="slow_search", team="search"),
        am_alert(
            "0000000000000004",
            "resolved",
            ends_at="2026-11-23T10:10:00Z",
            alertname="high_cpu",
            team="search",
        ),
    )
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200
    return client


async def ids(client: Client, **params: Any) -> list[int]:
    response = await client.get("/api/v1/alerts", params=params, headers=API)
    assert response.status == 200, await response.text()
    return [a["id"] for a in (await response.json())["alerts"]]


async def test_list_filters(client: Client) -> None:
    """Each filter narrows the list; newest first."""
    assert await ids(client) == [4, 3, 2, 1]
    assert await ids(client, status="firing") == [3, 2, 1]
    assert await ids(client, severity="critical,warning", status="resolved") == [4]
    assert await ids(client, rule="high_cpu") == [4, 1]
    assert await ids(client, filter='team="search"') == [4, 3]
    assert await ids(client, since="2026-11-23T09:00:00Z", until="2026-11-23T11:00:00Z") == [
        4, 3, 2, 1]  # fmt: skip
    assert await ids(client, since="2026-11-23T10:00:01Z") == []
    assert await ids(client, acknowledged="true") == []


async def test_cursor_pagination(client: Client) -> None:
    """limit + next_cursor walks the whole list once."""
    seen, cursor = [], None
    for _ in range(10):
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = await (await client.get("/api/v1/alerts", params=params, headers=API)).json()
        seen += [a["id"] for a in body["alerts"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [4, 3, 2, 1]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"status": "open"}, "status"), ({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
     ({"cursor": "abc"}, "cursor"), ({"since": "last week"}, "since"),
     ({"acknowledged": "maybe"}, "acknowledged"), ({"filter": "team~x"}, "matcher"),
     ({"filter": 'team=~"("'}, "matcher")],
)  # fmt: skip
async def test_bad_list_parameters_are_400(
    client: Client, params: dict[str, str], field: str
) -> None:
    """Each bad parameter is a 400 naming it."""
    response = await client.get("/api/v1/alerts", params=params, headers=API)
    assert response.status == 400
    assert (await response.json())["field"] == field


async def test_detail_actions_and_trail(client: Client) -> None:
    """ack, note, assign, unack change the alert; the detail shows every event."""
    ack = await client.post("/api/v1/alerts/1/ack", json={"by": "alice", "comment": "on it"},
                            headers=API)  # fmt: skip
    assert ack.status == 200
    assert (await ack.json())["state"] == "acknowledged"
    note = await client.post("/api/v1/alerts/1/notes", json={"by": "bob", "text": "cpu fan"},
                             headers=API)  # fmt: skip
    assert note.status == 201
    assign = await client.post("/api/v1/alerts/1/assign", json={"by": "bob", "assignee": "carol"},
                               headers=API)  # fmt: skip
    assert (await assign.json())["assignee"] == "carol"
    unack = await client.post("/api/v1/alerts/1/unack", json={"by": "alice"}, headers=API)
    assert (await unack.json())["acknowledged"] is False
    detail = await (await client.get("/api/v1/alerts/1", headers=API)).json()
    assert [(e["kind"], e["actor"]) for e in detail["events"]] == [
        ("fired", "alertmanager"), ("acknowledged", "alice"), ("note", "bob"),
        ("assigned", "bob"), ("unacknowledged", "alice")]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/alerts/99/ack", {"by": "a"}, 404),
        ("/api/v1/alerts/x/ack", {"by": "a"}, 400),
        ("/api/v1/alerts/4/ack", {"by": "a"}, 409),  # resolved
        ("/api/v1/alerts/1/unack", {"by": "a"}, 409),  # not acknowledged
        ("/api/v1/alerts/1/ack", {}, 422),
        ("/api/v1/alerts/1/ack", {"by": 7}, 422),
        ("/api/v1/alerts/1/ack", ["by"], 422),
        ("/api/v1/alerts/1/notes", {"by": "a"}, 422),
        ("/api/v1/alerts/1/assign", {"by": "a", "assignee": 3}, 422),
    ],
)
async def test_action_errors(client: Client, path: str, body: Any, status: int) -> None:
    """404 unknown, 409 wrong state, 422 unacceptable values: JSON, and nothing changes."""
    response = await client.post(path, json=body, headers=API)
    assert response.status == status
    assert (await response.json())["message"]
    detail = await (await client.get("/api/v1/alerts/1", headers=API)).json()
    assert [e["kind"] for e in detail["events"]] == ["fired"]


async def test_api_needs_token(client: Client) -> None:
    """Every alerts endpoint is 401 without the API token (the webhook token is not enough)."""
    for method, path in [("GET", "/api/v1/alerts"), ("GET", "/api/v1/alerts/1"),
                         ("POST", "/api/v1/alerts/1/ack")]:  # fmt: skip
        response = await client.request(method, path, json={"by": "a"}, headers=HOOK)
        assert response.status == 401


async def test_openapi_documents_every_route(client: Client) -> None:
    """The OpenAPI document lists exactly the app's routes and methods."""
    spec = await (await client.get("/api/v1/openapi.json")).json()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    app: web.Application = client.app
    served = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert documented == served


async def test_embedded_evaluator_stores_local_alerts(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """With no Alertmanager, the evaluator turns pushed telemetry into stored local alerts."""
    settings = load_settings(None, {}, db=str(tmp_path / "alerts.db"))
    rules = [r.replace(for_seconds=0) for r in settings.rules.enabled]
    app = create_app(settings, background=False)
    await aiohttp_client(app)
    embedded = EmbeddedEvaluator(rules, app[TELEMETRY], "alertbridge", "127.0.0.1:9470")
    app[TELEMETRY].set_system(cpu_ratio=0.97, memory_bytes=100.0)
    fired = await embedded.evaluate_once(app[WRITER])
    assert len(fired.fired) == 2
    alerts = app[STORE].read(lambda c: list_alerts(c, AlertQuery()))
    by_name = {a.alertname: a for a in alerts}
    cpu = by_name["critical_cpu"]
    assert (cpu.source, cpu.status, cpu.severity) == ("local", "firing", "critical")
    assert cpu.labels == {"alertname": "critical_cpu", "instance": "127.0.0.1:9470",
                          "job": "alertbridge", "metric": "system.cpu.percent",
                          "severity": "critical"}  # fmt: skip
    assert cpu.annotations["description"].startswith("system.cpu.percent is 97%")
    app[TELEMETRY].set_system(cpu_ratio=0.10)
    resolved = await embedded.evaluate_once(app[WRITER])
    assert sorted(resolved.resolved) == sorted(a.id for a in alerts)
    states = {a.status for a in app[STORE].read(lambda c: list_alerts(c, AlertQuery()))}
    assert states == {"resolved"}


async def metric_value(client: Client, name: str, **labels: str) -> float | None:
    text = await (await client.get("/metrics")).text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def test_api_requests_are_counted_by_route_and_code(client: Client) -> None:
    """alertbridge_api_requests_total counts by route template and status; not the webhook."""
    await client.get("/api/v1/alerts", headers=API)
    await client.get("/api/v1/alerts", headers=API)
    await client.post("/api/v1/alerts/99/ack", json={"by": "a"}, headers=API)
    await client.get("/api/v1/alerts")  # 401
    name = "alertbridge_api_requests_total"
    assert await metric_value(client, name, handler="/api/v1/alerts", code="200") == 2
    assert await metric_value(client, name, handler="/api/v1/alerts", code="401") == 1
    assert await metric_value(client, name, handler="/api/v1/alerts/{id}/ack", code="404") == 1
    assert await metric_value(client, name, handler="/api/v1/alertmanager", code="200") is None


async def test_stored_alerts_gauge_follows_the_store(client: Client) -> None:
    """The periodic refresh publishes counts by state and severity."""
    app: web.Application = client.app
    await client.post("/api/v1/alerts/1/ack", json={"by": "a"}, headers=API)
    await _refresh_counts(app)
    name = "alertbridge_stored_alerts"
    assert await metric_value(client, name, state="acknowledged", severity="warning") == 1
    assert await metric_value(client, name, state="firing", severity="warning") == 1
    assert await metric_value(client, name, state="firing", severity="critical") == 1
    assert await metric_value(client, name, state="resolved", severity="warning") == 1


class FlakyWriter:
    """A writer whose first submit fails as storage would."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    async def submit(self, job: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise StoreError("storage failed: disk I/O error")
        return await self.real.submit(job)


async def test_embedded_changes_survive_a_storage_failure(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """What fired while storage failed is sent again with the next evaluation."""
    settings = load_settings(None, {}, db=str(tmp_path / "alerts.db"))
    app = create_app(settings, background=False)
    await aiohttp_client(app)
    rules = [r.replace(for_seconds=0) for r in settings.rules.enabled]
    embedded = EmbeddedEvaluator(rules, app[TELEMETRY], "alertbridge", "127.0.0.1:9470")
    flaky = FlakyWriter(app[WRITER])
    app[TELEMETRY].set_system(cpu_ratio=0.97)
    with pytest.raises(StoreError):
        await embedded.evaluate_once(flaky)  # type: ignore[arg-type]
    assert app[STORE].read(lambda c: list_alerts(c, AlertQuery())) == []
    result = await embedded.evaluate_once(flaky)  # type: ignore[arg-type]
    assert len(result.fired) == 2
