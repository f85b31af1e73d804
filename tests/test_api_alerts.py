"""The alerts REST API: listing, detail with events, actions, errors, OpenAPI coverage."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Secret, load_settings
from bridge.core.errors import StoreError
from bridge.http import pages
from bridge.http.app import create_app
from bridge.http.keys import STORE, TELEMETRY
from bridge.store import AlertQuery
from bridge.store.sqlite.schema import build_label_index
from bridge.telemetry.embedded import EmbeddedEvaluator
from tests.payloads import am_alert, notification
from tests.stores import sqlite_of

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
    """The OpenAPI document lists exactly the app's routes and methods (but the operators'
    page's: HTML for browsers, not an API)."""
    spec = await (await client.get("/api/v1/openapi.json")).json()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    app: web.Application = client.app
    page = {(r.path, r.method) for r in pages.routes if isinstance(r, web.RouteDef)}
    served = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    } - page
    assert page
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
    fired = await embedded.evaluate_once(app[STORE])
    assert len(fired.fired) == 2
    alerts = await app[STORE].list_alerts(AlertQuery())
    by_name = {a.alertname: a for a in alerts}
    cpu = by_name["critical_cpu"]
    assert (cpu.source, cpu.status, cpu.severity) == ("local", "firing", "critical")
    assert cpu.labels == {"alertname": "critical_cpu", "instance": "127.0.0.1:9470",
                          "job": "alertbridge", "metric": "system.cpu.percent",
                          "severity": "critical"}  # fmt: skip
    assert cpu.annotations["description"].startswith("system.cpu.percent is 97%")
    app[TELEMETRY].set_system(cpu_ratio=0.10)
    resolved = await embedded.evaluate_once(app[STORE])
    assert sorted(resolved.resolved) == sorted(a.id for a in alerts)
    states = {a.status for a in await app[STORE].list_alerts(AlertQuery())}
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
    """Each scrape reads the counts by state and severity, and for firing alerts by whether
    Alertmanager mutes them (am_state): what was just stored shows at once."""
    app: web.Application = client.app
    await client.post("/api/v1/alerts/1/ack", json={"by": "a"}, headers=API)
    await app[STORE].set_am_states([(3, "suppressed", ["s1"], [])])
    name = "alertbridge_stored_alerts"
    active = {"am_state": "active"}
    assert await metric_value(client, name, state="acknowledged", severity="warning",
                              **active) == 1  # fmt: skip
    assert await metric_value(client, name, state="firing", severity="critical", **active) == 1
    assert await metric_value(client, name, state="firing", severity="warning",
                              am_state="suppressed") == 1  # fmt: skip
    assert await metric_value(client, name, state="resolved", severity="warning",
                              am_state="") == 1  # fmt: skip
    status = await (await client.get("/api/v1/status", headers=API)).json()
    assert status["alertmanager"] == {"active": 2, "suppressed": 1}


async def test_stored_alerts_are_never_missing_from_a_scrape(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scrapes concurrent with ingestion each show the series (the counts read for that
    scrape, one whole snapshot); when the read fails the last snapshot is shown."""
    names = "alertbridge_stored_alerts"

    async def scrape() -> float:
        text = await (await client.get("/metrics")).text()
        return sum(s.value for f in text_string_to_metric_families(text)
                   for s in f.samples if s.name == names)  # fmt: skip

    async def ingest(i: int) -> None:
        alert = am_alert(f"{i + 100:016x}")
        assert (await client.post("/api/v1/alertmanager", json=notification(alert),
                                  headers=HOOK)).status == 200  # fmt: skip

    scrapes = [asyncio.create_task(scrape()) for _ in range(20)]
    await asyncio.gather(*scrapes, *(ingest(i) for i in range(20)))
    totals = [task.result() for task in scrapes]
    assert all(4 <= t <= 24 for t in totals), totals  # 4 stored by the fixture, then more
    assert await scrape() == 24

    async def failing() -> None:
        raise StoreError("storage failed: disk I/O error")

    monkeypatch.setattr(client.app[STORE], "counts", failing)
    assert await scrape() == 24
    # That scrape's failed read, and the one of the scrape that reads the counter.
    assert await metric_value(client, "alertbridge_store_errors_total", operation="read") == 2


class FlakyStore:
    """A store whose first ingest fails as storage would."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    async def ingest(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise StoreError("storage failed: disk I/O error")
        return await self.real.ingest(*args, **kwargs)


async def test_embedded_changes_survive_a_storage_failure(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """What fired while storage failed is sent again with the next evaluation."""
    settings = load_settings(None, {}, db=str(tmp_path / "alerts.db"))
    app = create_app(settings, background=False)
    await aiohttp_client(app)
    rules = [r.replace(for_seconds=0) for r in settings.rules.enabled]
    embedded = EmbeddedEvaluator(rules, app[TELEMETRY], "alertbridge", "127.0.0.1:9470")
    flaky = FlakyStore(app[STORE])
    app[TELEMETRY].set_system(cpu_ratio=0.97)
    with pytest.raises(StoreError):
        await embedded.evaluate_once(flaky)
    assert await app[STORE].list_alerts(AlertQuery()) == []
    result = await embedded.evaluate_once(flaky)
    assert len(result.fired) == 2


def _many_rows(conn: sqlite3.Connection, count: int) -> None:
    """`count` resolved alerts made by SQLite itself (fast), labels with an instance each."""
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
        " INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity,"
        " labels, annotations, generator_url, source, first_received_at, last_received_at,"
        " receive_count, updated_at) SELECT printf('%016x', i + 4096), i, i + 1, 'resolved',"
        " 'bulk', 'info', json_object('alertname', 'bulk', 'instance', 'a' || i), '{}', '',"
        " 'alertmanager', i, i, 1, i FROM n",
        (count,),
    )


async def test_a_slow_filter_stops_at_the_query_budget(client: Client) -> None:
    """A filter that must test every one of 300,000 rows (a text of two characters found
    nowhere, shorter than a trigram: label matchers and longer texts are answered from the
    indexes) is stopped once over the read budget: 503 query_timeout naming it, soon after
    the budget, not after the whole scan. A longer text found nowhere, within the same
    budget, is answered from the free-text index: the empty page."""
    await sqlite_of(client.app[STORE]).writer.submit(lambda c: _many_rows(c, 300_000))
    sqlite_of(client.app[STORE]).db.query_timeout = 0.05
    indexed = await client.get(
        "/api/v1/alerts", params={"q": "zz-nowhere", "limit": "1"}, headers=API
    )
    assert indexed.status == 200
    assert (await indexed.json())["alerts"] == []
    started = time.perf_counter()
    response = await client.get("/api/v1/alerts", params={"q": "zz", "limit": "1"}, headers=API)
    elapsed = time.perf_counter() - started
    assert response.status == 503
    body = await response.json()
    assert body["error"] == "query_timeout"
    assert "longer than 0.05s" in body["message"]
    assert elapsed < 2.0  # the budget plus scheduling; the whole scan takes far longer
    sqlite_of(client.app[STORE]).db.query_timeout = 60
    full = await client.get("/api/v1/alerts", params={"q": "zz", "limit": "1"}, headers=API)
    assert full.status == 200  # with room, the same query completes (empty)
    assert (await full.json())["alerts"] == []


async def test_a_regex_over_a_label_of_many_values_stops_at_the_query_budget(
    client: Client,
) -> None:
    """A regular expression is tested against every stored value of its label (the label
    index's values, 300,000 instances here) inside the budgeted read: over the budget, 503
    query_timeout; with room, the empty page the index then gives."""

    def stored(conn: sqlite3.Connection) -> int:
        _many_rows(conn, 300_000)
        build_label_index(conn, 0)
        return int(conn.execute("SELECT count(*) FROM label_values").fetchone()[0])

    assert await sqlite_of(client.app[STORE]).writer.submit(stored) > 300_000
    sqlite_of(client.app[STORE]).db.query_timeout = 0.05
    params = {"filter": 'instance=~"zz.*"', "limit": "1"}
    started = time.perf_counter()
    response = await client.get("/api/v1/alerts", params=params, headers=API)
    elapsed = time.perf_counter() - started
    assert response.status == 503
    assert (await response.json())["error"] == "query_timeout"
    assert elapsed < 2.0  # the budget plus scheduling, not the whole label's values
    sqlite_of(client.app[STORE]).db.query_timeout = 60
    full = await client.get("/api/v1/alerts", params=params, headers=API)
    assert full.status == 200
    assert (await full.json())["alerts"] == []


async def test_a_pathological_pattern_is_answered_at_once(client: Client) -> None:
    """(a+)+$ over a stored value of 26 a's and a b (3 s with a backtracking engine) is
    answered while a webhook sent at the same time is stored."""
    payload = notification(am_alert("00000000000000aa", instance="a" * 26 + "b"))
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200
    listing = asyncio.ensure_future(
        client.get("/api/v1/alerts", params={"filter": 'instance=~"(a+)+$"'}, headers=API)
    )
    probe = notification(am_alert("00000000000000ab"))
    hook = await client.post("/api/v1/alertmanager", json=probe, headers=HOOK)
    assert hook.status == 200
    response = await asyncio.wait_for(listing, 5)
    assert response.status == 200
    assert (await response.json())["alerts"] == []


async def test_pages_stop_at_their_byte_budget_and_continue(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page holds at most about PAGE_CHARS of text: with big alerts it stops early, its
    next_cursor continues exactly where it stopped, and nothing is skipped."""
    monkeypatch.setattr("bridge.store.sqlite.queries.PAGE_CHARS", 3000)
    big = [am_alert(f"{0xB0 + i:016x}", note="n" * 1000) for i in range(8)]
    assert (await client.post("/api/v1/alertmanager", json=notification(*big),
                              headers=HOOK)).status == 200  # fmt: skip
    seen: list[int] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(20):
        params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
        page = await (await client.get("/api/v1/alerts", params=params, headers=API)).json()
        sizes.append(len(page["alerts"]))
        seen += [a["id"] for a in page["alerts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes[:2] == [3, 3]  # about 1,200 characters each: the third passes 3,000
    assert seen == list(range(12, 0, -1))


async def test_an_alerts_trail_is_bounded_and_says_so(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trail longer than the page budget stops, oldest events first, with events_truncated;
    a short one says it is whole."""
    whole = await (await client.get("/api/v1/alerts/1", headers=API)).json()
    assert whole["events_truncated"] is False
    for n in range(30):
        response = await client.post(
            "/api/v1/alerts/1/notes", json={"by": "ann", "text": f"{n:02d}" + "x" * 500},
            headers=API,
        )  # fmt: skip
        assert response.status == 201
    monkeypatch.setattr("bridge.store.sqlite.queries.PAGE_CHARS", 5000)
    detail = await (await client.get("/api/v1/alerts/1", headers=API)).json()
    assert detail["events_truncated"] is True
    kinds = [e["kind"] for e in detail["events"]]
    assert kinds[0] == "fired"
    assert 5 <= len(kinds) <= 12
    assert detail["events"][1]["detail"].startswith("00")


async def test_resolve_by_hand_then_alertmanager_says_firing(client: Client) -> None:
    """POST /resolve resolves with the actor and comment (409 when already resolved); the
    next firing delivery of that episode reopens it, with an event saying why."""
    response = await client.post("/api/v1/alerts/1/resolve", json={"by": "ann", "comment": "ok"},
                                 headers=API)  # fmt: skip
    assert response.status == 200
    body = await response.json()
    assert (body["status"], body["resolution"]) == ("resolved", "manual")
    again = await client.post("/api/v1/alerts/1/resolve", json={"by": "ann"}, headers=API)
    assert again.status == 409
    payload = notification(am_alert("0000000000000001", alertname="high_cpu", team="infra"))
    hook = await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)
    assert hook.status == 200
    detail = await (await client.get("/api/v1/alerts/1", headers=API)).json()
    assert detail["status"] == "firing"
    assert [(e["kind"], e["actor"]) for e in detail["events"]][-2:] == [
        ("resolved", "ann"), ("reopened", "alertmanager")]  # fmt: skip


async def test_am_state_and_sort_parameters(client: Client) -> None:
    """am_state filters firing alerts by Alertmanager's view; sort=attention orders them;
    bad values are 400 naming the parameter."""
    await client.app[STORE].set_am_states([(2, "suppressed", ["s"], [])])
    assert await ids(client, am_state="suppressed") == [2]
    assert await ids(client, am_state="active") == [3, 1]
    assert await ids(client, sort="attention") == [3, 1, 2, 4]
    for name, value in (("am_state", "muted"), ("sort", "oldest"), ("cursor", "a9.9.9")):
        response = await client.get(
            "/api/v1/alerts",
            params={name: value, "sort": "attention"} if name == "cursor" else {name: value},
            headers=API,
        )
        assert response.status == 400
        assert (await response.json())["field"] == name
