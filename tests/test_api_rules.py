"""The rule set over the API (bridge.http.rules, bridge.generate.managed), on the app with
the real promtool and amtool judging every change; aiohttp servers stand in for the
/-/reload of Prometheus and Alertmanager (the end-to-end test reloads the real ones)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.config import ManagedRulesSettings, Secret, Settings, load_settings
from bridge.generate import RULES_PATH, render_all, write_all
from bridge.host import apikeys
from bridge.http.app import create_app
from bridge.http.background import embedded
from bridge.http.keys import STORE, TELEMETRY
from bridge.http.rules import MANAGER, rules_in_force
from bridge.store import AlertQuery

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
MakeServer = Callable[..., Awaitable[TestServer]]
API = {"Authorization": "Bearer api-secret"}
CPU = {"name": "busy", "metric": "system.cpu.percent", "condition": ">", "threshold": 40,
       "severity": "warning", "for": 0}  # fmt: skip


class Reloads:
    """A stand-in for a /-/reload: counts the calls, answers `status`."""

    def __init__(self) -> None:
        self.calls = 0
        self.status = 200

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        return web.Response(status=self.status, text="" if self.status == 200 else "bad config")


async def stand_in(aiohttp_server: MakeServer) -> tuple[Reloads, str]:
    reloads = Reloads()
    app = web.Application()
    app.router.add_post("/-/reload", reloads.handle)
    server = await aiohttp_server(app)
    return reloads, str(server.make_url("")).rstrip("/")


def settings_for(tmp_path: Path, prometheus: str | None = None, mode: str = "api",
                 db: str = "alerts.db", out: str = "out") -> Settings:  # fmt: skip
    base = load_settings(None, {}, db=str(tmp_path / db))
    server = dataclasses.replace(base.server, api_token=Secret("api-secret"))
    return dataclasses.replace(
        base, server=server,
        prometheus=dataclasses.replace(base.prometheus, url=prometheus),
        managed_rules=ManagedRulesSettings(mode=mode, output=str(tmp_path / out)),
    )  # fmt: skip


@pytest.fixture
async def prometheus(aiohttp_server: MakeServer) -> tuple[Reloads, str]:
    return await stand_in(aiohttp_server)


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path,
                 prometheus: tuple[Reloads, str]) -> Client:  # fmt: skip
    return await aiohttp_client(create_app(settings_for(tmp_path, prometheus[1]),
                                           background=False))  # fmt: skip


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


async def history(client: Client) -> list[tuple[int, str, str]]:
    body = await (await client.get("/api/v1/rules/history", headers=API)).json()
    return [(v["version"], v["action"], v["rule"]) for v in body["versions"]]


async def test_a_new_rule_is_checked_written_reloaded_and_versioned(
    client: Client, tmp_path: Path, prometheus: tuple[Reloads, str]
) -> None:
    reloads, _ = prometheus
    response = await client.post("/api/v1/rules?by=ann", json=CPU, headers=API)
    body = await response.json()
    assert response.status == 201, body
    assert body["version"]["version"] == 2
    assert body["changed"] is True
    assert "promtool test rules prometheus/rules/telemetry.rules.test.yml" in body["checks"]
    assert "amtool config routes test busy -> alertbridge" in body["checks"]
    assert not [c for c in body["checks"] if "routes test high_cpu" in c]  # unchanged: its
    # route is the same (one per alertname), not tested again
    assert body["reloaded"] == [f"{prometheus[1]}/-/reload"]
    assert reloads.calls == 2  # at start (the output was empty: written), then the change
    assert "alert: busy" in (tmp_path / "out" / RULES_PATH).read_text()
    assert await history(client) == [(2, "created", "busy"), (1, "seeded", "")]
    versions = (await (await client.get("/api/v1/rules/history", headers=API)).json())["versions"]
    assert versions[0]["actor"] == "ann"
    assert "+  threshold: 40\n" in versions[0]["diff"]
    shown = await (await client.get("/api/v1/rules/busy", headers=API)).json()
    rule = shown["rule"]
    assert (rule["threshold"], rule["state"], shown["version"]) == (40, "inactive", 2)
    seed = await (await client.get("/api/v1/rules/versions/1", headers=API)).json()
    assert seed["entries"] == []  # the configuration's rules: the ten defaults unchanged


async def test_a_change_promtool_refuses_changes_nothing(
    client: Client, tmp_path: Path, prometheus: tuple[Reloads, str]
) -> None:
    await client.post("/api/v1/rules", json=CPU, headers=API)
    before, reloads = files(tmp_path / "out"), prometheus[0].calls
    bad = {**CPU, "name": "broken", "metric": "x", "expr": "rate(x[5m) > 1"}
    response = await client.post("/api/v1/rules", json=bad, headers=API)
    body = await response.json()
    assert (response.status, body["error"]) == (400, "checks_failed"), body
    assert body["message"].startswith("promtool check rules")
    assert "parse error" in body["checks"][0]["output"]
    assert files(tmp_path / "out") == before
    assert prometheus[0].calls == reloads
    assert await history(client) == [(2, "created", "busy"), (1, "seeded", "")]
    listed = await (await client.get("/api/v1/rules", headers=API)).json()
    assert "broken" not in [r["name"] for r in listed["rules"]]


async def test_a_failed_reload_puts_the_previous_files_back(
    client: Client, tmp_path: Path, prometheus: tuple[Reloads, str]
) -> None:
    """Prometheus refuses the reload: 502 saying so, the previous files written back and
    reloaded (a second call), nothing recorded, the rule as it was."""
    await client.post("/api/v1/rules", json=CPU, headers=API)
    before = files(tmp_path / "out")
    reloads = prometheus[0]
    reloads.status, calls = 500, reloads.calls
    response = await client.patch("/api/v1/rules/busy", json={"threshold": 50}, headers=API)
    body = await response.json()
    assert (response.status, body["error"]) == (502, "reload_failed"), body
    assert "HTTP 500: bad config" in body["message"]
    assert "the previous files are back; reloading them failed too" in body["message"]
    assert reloads.calls == calls + 2
    assert files(tmp_path / "out") == before
    assert await history(client) == [(2, "created", "busy"), (1, "seeded", "")]
    shown = await (await client.get("/api/v1/rules/busy", headers=API)).json()
    assert shown["rule"]["threshold"] == 40


async def test_wrong_changes_are_answered_with_what_is_wrong(client: Client) -> None:
    cases = [
        ("post", "/api/v1/rules", {**CPU, "threshold": "high"}, 400, "invalid_rule", "threshold"),
        ("post", "/api/v1/rules", {**CPU, "name": "high_cpu"}, 409, "conflict", None),
        ("patch", "/api/v1/rules/nope", {"threshold": 1}, 404, "not_found", None),
        ("patch", "/api/v1/rules/high_cpu", {"metric": "errors.rate"}, 400, "invalid_rule",
         "metric"),
        ("patch", "/api/v1/rules/high_cpu", {"escalation": "pager"}, 400, "invalid_rule",
         "escalation"),
        ("delete", "/api/v1/rules/high_cpu", None, 409, "conflict", None),
        ("post", "/api/v1/rules/rollback", {"to": 9}, 404, "not_found", None),
        ("post", "/api/v1/rules/rollback", {}, 400, "invalid_input", "to"),
        ("post", "/api/v1/rules", [1], 400, "invalid_input", "body"),
    ]  # fmt: skip
    for method, path, body, status, code, field in cases:
        response = await client.request(method, path, json=body, headers=API)
        answer = await response.json()
        assert (response.status, answer["error"], answer.get("field")) == (status, code, field), (
            path, body, answer)  # fmt: skip
    assert await history(client) == []


async def test_a_change_made_on_an_old_version_is_refused(client: Client) -> None:
    first = await client.post("/api/v1/rules", json=CPU, headers=API)
    assert (await first.json())["version"]["version"] == 2
    stale = await client.post("/api/v1/rules/busy/disable", headers={**API, "If-Match": "1"})
    assert stale.status == 409
    assert "the rule set is at version 2, not 1" in (await stale.json())["message"]
    fresh = await client.post("/api/v1/rules/busy/disable", headers={**API, "If-Match": '"2"'})
    assert fresh.status == 200
    again = await client.post("/api/v1/rules/busy/disable", headers=API)
    assert (again.status, (await again.json())["changed"]) == (200, False)


async def test_rollback_puts_an_old_rule_set_in_force_as_a_new_version(client: Client) -> None:
    await client.post("/api/v1/rules", json=CPU, headers=API)
    await client.patch("/api/v1/rules/high_cpu", json={"threshold": 70}, headers=API)
    response = await client.post("/api/v1/rules/rollback", json={"to": 1}, headers=API)
    body = await response.json()
    assert response.status == 200, body
    assert body["version"]["action"] == "rolled back to version 1"
    listed = await (await client.get("/api/v1/rules", headers=API)).json()
    assert "busy" not in [r["name"] for r in listed["rules"]]
    assert next(r for r in listed["rules"] if r["name"] == "high_cpu")["threshold"] == 80
    assert listed["version"] == 4


async def test_read_keys_and_read_only_mode_change_nothing(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.json"
    _, read = apikeys.add(keys, "rita", "read")
    _, write = apikeys.add(keys, "wendy", "write")
    open_ = settings_for(tmp_path, db="keys.db")
    open_ = dataclasses.replace(open_, server=dataclasses.replace(open_.server,
                                                                  keys_file=str(keys)))  # fmt: skip
    keyed = await aiohttp_client(create_app(open_, background=False))
    for token in (read, write):
        refused = await keyed.post("/api/v1/rules", json=CPU,
                                   headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert refused.status == 403
    listed = await keyed.get("/api/v1/rules", headers={"Authorization": f"Bearer {read}"})
    assert listed.status == 200
    client = await aiohttp_client(create_app(settings_for(tmp_path, mode="read-only"),
                                             background=False))  # fmt: skip
    response = await client.post("/api/v1/rules", json=CPU, headers=API)
    body = await response.json()
    assert (response.status, body["error"]) == (409, "rules_read_only")
    assert "managed_rules.mode: read-only" in body["message"]
    assert (await client.get("/api/v1/rules")).status == 401
    assert (await client.post("/api/v1/rules", json=CPU)).status == 401


async def test_another_replica_takes_the_version_and_writes_its_own_files(
    aiohttp_client: MakeClient, aiohttp_server: MakeServer, tmp_path: Path,
    prometheus: tuple[Reloads, str],
) -> None:  # fmt: skip
    """Two apps on one database: a change on one is in force on the other at its next
    round (sync_once: the path taken, counted), its files written and its Prometheus
    reloaded."""
    own, own_url = await stand_in(aiohttp_server)
    one = await aiohttp_client(create_app(settings_for(tmp_path, prometheus[1]),
                                          background=False))  # fmt: skip
    two = await aiohttp_client(create_app(settings_for(tmp_path, own_url, out="out-2"),
                                          background=False))  # fmt: skip
    assert (await one.post("/api/v1/rules", json=CPU, headers=API)).status == 201
    manager = two.app[MANAGER]
    assert rules_in_force(two.app).get("busy") is None
    assert await manager.sync_once() is True
    assert (manager.synced, manager.version, own.calls) == (1, 2, 2)  # (its start's, then)
    assert rules_in_force(two.app).get("busy") is not None
    assert "alert: busy" in (tmp_path / "out-2" / RULES_PATH).read_text()
    assert await manager.sync_once() is False


async def test_the_embedded_evaluator_takes_a_change_in_place(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """No Prometheus: a rule added over the API fires in the bridge's own evaluator at its
    next step; deleted, its alert resolves."""
    settings = dataclasses.replace(settings_for(tmp_path), managed_rules=ManagedRulesSettings())
    client = await aiohttp_client(create_app(settings, background=False))
    app = client.app
    step = embedded(app)
    app[TELEMETRY].set_system(cpu_ratio=0.5, memory_bytes=100.0)
    await step(app)
    assert await app[STORE].list_alerts(AlertQuery()) == []
    assert (await client.post("/api/v1/rules", json=CPU, headers=API)).status == 201
    await step(app)
    (alert,) = await app[STORE].list_alerts(AlertQuery())
    assert (alert.alertname, alert.status, alert.source) == ("busy", "firing", "local")
    assert (await client.delete("/api/v1/rules/busy", headers=API)).status == 200
    await step(app)
    (alert,) = await app[STORE].list_alerts(AlertQuery())
    assert alert.status == "resolved"


async def test_files_that_cannot_be_written_change_nothing(
    aiohttp_client: MakeClient, tmp_path: Path, prometheus: tuple[Reloads, str]
) -> None:
    """managed_rules.output is not a directory the bridge can write into: 500 saying so,
    no reload, no version."""
    (tmp_path / "out").write_text("a file, not a directory")
    client = await aiohttp_client(create_app(settings_for(tmp_path, prometheus[1]),
                                             background=False))  # fmt: skip
    response = await client.post("/api/v1/rules", json=CPU, headers=API)
    body = await response.json()
    assert (response.status, body["error"]) == (500, "write_failed"), body
    assert f"cannot write under {tmp_path / 'out'}" in body["message"]
    assert prometheus[0].calls == 0
    assert await history(client) == []


def test_a_changes_unit_tests_load_only_the_rules_they_test(tmp_path: Path) -> None:
    """The scratch tree of a change: promtool's unit tests load a file of the tested rules
    only (a custom rule, which has no test, is left out) and pass there; the rules file
    promtool checks keeps every rule."""
    import yaml

    from bridge.core import rulebook
    from bridge.generate import TESTS_PATH, render_all, write_all
    from bridge.generate.managed import TESTED_RULES, _tests_on_tested_rules
    from bridge.host.tools import run_tool

    custom = {"name": "custom", "metric": "x", "expr": "vector(1)", "condition": ">",
              "threshold": 0, "severity": "info"}  # fmt: skip
    rules = rulebook.create(load_settings(None, {}).rules, custom)
    settings = dataclasses.replace(settings_for(tmp_path), rules=rules)
    artifacts = render_all(settings)
    write_all(artifacts, tmp_path)
    _tests_on_tested_rules(settings, tmp_path, artifacts.untested)
    tests = yaml.safe_load((tmp_path / TESTS_PATH).read_text())
    assert tests["rule_files"] == [TESTED_RULES]
    tested = (tmp_path / "prometheus/rules" / TESTED_RULES).read_text()
    assert "alert: high_cpu" in tested
    assert "alert: custom" not in tested
    assert "alert: custom" in (tmp_path / RULES_PATH).read_text()
    run = run_tool("promtool", "test", "rules", str(tmp_path / TESTS_PATH))
    assert run.ok, run.output


async def test_the_rules_page_shows_definitions_states_episodes_and_changes(
    client: Client,
) -> None:
    """Signed in, /rules: each rule's definition and state, its recent episodes linked, the
    changes with their differences; text from a rule stays text."""
    from tests.payloads import am_alert, notification

    entry = {**CPU, "description": "<b>busy</b> cores"}
    assert (await client.post("/api/v1/rules?by=ann", json=entry, headers=API)).status == 201
    alert = notification(am_alert("00000000000000b1", alertname="busy"))
    assert (await client.post("/api/v1/alertmanager", json=alert)).status == 200
    assert (await client.get("/rules", allow_redirects=False)).status == 303
    form = {"token": "api-secret", "name": "ann", "next": "/rules"}
    signed = await client.post("/signin", allow_redirects=False, data=form)
    assert signed.status == 303
    page = await (await client.get("/rules")).text()
    assert "Version 2 in force" in page
    assert '<tr id="rule-busy">' in page
    assert "<code>system.cpu.percent &gt; 40 %</code>" in page
    assert '<td class="state-firing">firing (1)</td>' in page
    assert '<a href="/alerts/1">#1</a>' in page
    assert "&lt;b&gt;busy&lt;/b&gt; cores" in page
    assert "<b>busy</b>" not in page
    assert "<td>ann</td><td>created busy" in page
    assert "+  threshold: 40" in page
    assert '<a href="/rules">Rules</a>' in page
    # two listings for the whole rule set (firing counts, recent episodes), not one a rule
    store = client.app[STORE]
    listings = []
    original = store.list_alerts

    async def counted(query: Any) -> Any:
        listings.append(query)
        return await original(query)

    store.list_alerts = counted
    assert (await client.get("/rules")).status == 200
    assert len(listings) == 2


async def test_at_start_the_output_holds_the_rule_set_in_force(
    aiohttp_client: MakeClient, tmp_path: Path, prometheus: tuple[Reloads, str]
) -> None:
    """A first change killed after its files were written and reloaded, before its version
    was recorded: the next start finds no version, writes the configuration's rules again
    and reloads (the files never stay ahead of the store)."""
    settings = settings_for(tmp_path, prometheus[1])
    write_all(render_all(settings), tmp_path / "out")
    rules_file = tmp_path / "out" / RULES_PATH
    rules_file.write_text(rules_file.read_text() + "  - alert: written_then_killed\\n")
    await aiohttp_client(create_app(settings, background=False))
    assert "written_then_killed" not in rules_file.read_text()
    assert prometheus[0].calls == 1
