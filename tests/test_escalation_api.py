"""Escalation through the REST API and the CLI: overrides (escalate, pause, resume) audited
as the operator's, their input errors, the escalation state in `show`, and the webhook
never storing the escalation's own copies."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import Secret, load_settings
from bridge.core.policies import EscalationSettings, Policy, Route, Step
from bridge.core.times import NS, now_ns
from bridge.escalation import transitions
from bridge.host import apikeys
from bridge.http.app import create_app
from bridge.http.keys import STORE
from bridge.store import AlertQuery, open_store
from tests.payloads import am_alert, notification
from tests.stores import received

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
API = {"Authorization": "Bearer api-secret"}
HOOK = {"Authorization": "Bearer hook-secret"}
POLICY = Policy("standard", (Step("notify", ("a",)), Step("wait", wait=300),
                             Step("notify", ("b",)), Step("wait", wait=300),
                             Step("notify", ("c",))))  # fmt: skip
ESCALATION = EscalationSettings((POLICY,), (Route("standard"),))


def settings_at(db: Path) -> Any:
    base = load_settings(None, {}, db=str(db))
    server = dataclasses.replace(
        base.server, webhook_token=Secret("hook-secret"), api_token=Secret("api-secret")
    )
    return dataclasses.replace(base, server=server, escalation=ESCALATION)


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    """An app (no Alertmanager: no engine) with alert 1 escalating at level 0."""
    client = await aiohttp_client(create_app(settings_at(tmp_path / "a.db"), background=False))
    payload = notification(am_alert("0000000000000001", severity="critical"))
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200
    store = client.app[STORE]
    at = now_ns()
    esc = transitions.advance(transitions.start(1, POLICY, "high", at, 0), at).escalation
    await store.add_escalations([esc], ["policy standard (route 1), urgency high"], at)
    return client


async def post(client: Client, path: str, body: Any) -> tuple[int, Any]:
    response = await client.post(f"/api/v1/alerts/1/{path}", json=body, headers=API)
    return response.status, await response.json()


async def test_escalate_pause_resume_and_the_state_in_the_detail(client: Client) -> None:
    status, body = await post(client, "escalate", {"by": "carol"})
    assert status == 200
    [esc] = body["escalations"]
    assert (esc["policy"], esc["state"], esc["next_step"]) == ("standard", "running", 2)
    status, body = await post(client, "escalation/pause", {"by": "dave", "for": "30m"})
    assert (status, body["escalations"][0]["state"]) == (200, "paused")
    status, body = await post(client, "escalation/resume", {"by": "erin"})
    assert (status, body["escalations"][0]["state"]) == (200, "running")
    detail = await (await client.get("/api/v1/alerts/1", headers=API)).json()
    assert [e["policy"] for e in detail["escalations"]] == ["standard"]
    trail = [(e["kind"], e["actor"]) for e in detail["events"] if e["kind"].startswith("escal")]
    assert trail == [("escalation_started", "escalation"), ("escalation_override", "carol"),
                     ("escalation_paused", "dave"), ("escalation_resumed", "erin")]  # fmt: skip
    alone = await (await client.get("/api/v1/alerts/1/escalation", headers=API)).json()
    assert alone["escalations"] == detail["escalations"]


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("escalate", {}, 422, "by"),
        ("escalate", {"by": "  "}, 422, "by"),
        ("escalate", {"by": "a", "level": -1}, 422, "level"),
        ("escalate", {"by": "a", "level": True}, 422, "level"),
        ("escalate", {"by": "a", "level": "2"}, 422, "level"),
        ("escalate", {"by": "a", "level": 9}, 409, None),
        ("escalation/pause", {"by": "a", "for": "soon"}, 422, "for"),
        ("escalation/pause", {"by": "a", "for": "0s"}, 422, "for"),
        ("escalation/pause", {"by": "a", "for": "400d"}, 422, "for"),
        ("escalation/resume", {"by": "a"}, 409, None),
    ],
)
async def test_override_errors_name_what_is_wrong(
    client: Client, path: str, body: Any, status: int, field: str | None
) -> None:
    got, answer = await post(client, path, body)
    assert got == status, answer
    assert answer.get("field") == field
    assert answer["message"]
    trail = await (await client.get("/api/v1/alerts/1", headers=API)).json()
    assert [e["kind"] for e in trail["events"]][-1] == "escalation_started"  # nothing changed


async def test_overrides_of_unknown_alerts_or_none_escalating_are_404(client: Client) -> None:
    response = await client.post("/api/v1/alerts/99/escalate", json={"by": "a"}, headers=API)
    assert response.status == 404
    payload = notification(am_alert("0000000000000002", severity="info"))
    await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)
    response = await client.post("/api/v1/alerts/2/escalate", json={"by": "a"}, headers=API)
    assert (response.status, (await response.json())["message"]) == (
        404, "alert 2 has no escalation"
    )  # fmt: skip
    assert (await client.post("/api/v1/alerts/1/escalate", json={"by": "a"})).status == 401


async def test_the_webhook_never_stores_escalation_copies(client: Client) -> None:
    copy = am_alert("00000000000000c0", severity="critical", escalation_policy="standard",
                    escalation_level="1", escalation_round="1")  # fmt: skip
    real = am_alert("0000000000000003", severity="critical")
    payload = notification(copy, real)
    response = await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)
    assert response.status == 200
    stored = await client.app[STORE].list_alerts(AlertQuery())
    assert sorted(a.fingerprint for a in stored) == ["0000000000000001", "0000000000000003"]
    only_copies = notification(copy)
    assert (await client.post("/api/v1/alertmanager", json=only_copies, headers=HOOK)).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert "alertbridge_escalation_copies_ignored_total 2.0" in metrics


async def _stored(db: Path) -> None:
    store = open_store(db)
    await store.start()
    at = now_ns() - 60 * NS
    await store.ingest([received(severity="critical")], at)
    esc = transitions.advance(transitions.start(1, POLICY, "high", at, 0), at).escalation
    await store.add_escalations([esc], ["policy standard (route 1), urgency high"], at)
    await store.close()


def test_the_cli_escalates_pauses_resumes_and_shows(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    asyncio.run(_stored(db))
    run = CliRunner().invoke
    result = run(main, ["escalate", "1", "--db", str(db), "--by", "carol"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("alert 1: standard: level 0 of 3, running, next step at ")
    result = run(main, ["escalation", "pause", "1", "--for", "1h", "--db", str(db), "--by", "d"])
    assert result.exit_code == 0, result.output
    assert ", paused, resumes at " in result.output
    result = run(main, ["escalation", "pause", "1", "--for", "1 hour", "--db", str(db)])
    assert result.exit_code == 1
    assert "for: expected a duration" in result.output
    result = run(main, ["escalation", "resume", "1", "--db", str(db), "-o", "json"])
    assert json.loads(result.output)["escalations"][0]["state"] == "running"
    result = run(main, ["escalate", "1", "--level", "7", "--db", str(db)])
    assert result.exit_code == 1
    assert "policy standard has levels 0 to 2, not 7" in result.output
    shown = run(main, ["show", "1", "--db", str(db)])
    assert "escalation: standard: level 0 of 3, running" in shown.output
    assert "escalation_override by carol: level 1 now" in shown.output


async def test_the_alert_page_pauses_resumes_and_escalates(client: Client,
                                                            tmp_path: Path) -> None:  # fmt: skip
    """The page's buttons take the same overrides, as the signed-in person."""
    keys = tmp_path / "keys.json"
    _, token = apikeys.add(keys, "pat", "write")
    await client.close()  # the fixture's alert and escalation stay in its database
    settings = settings_at(tmp_path / "a.db")
    settings = dataclasses.replace(settings, server=dataclasses.replace(
        settings.server, keys_file=str(keys)))  # fmt: skip
    page_client = TestClient(TestServer(create_app(settings, background=False)))
    await page_client.start_server()
    try:
        signed = await page_client.post("/signin", data={"token": token, "next": "/alerts/1"},
                                        allow_redirects=False)  # fmt: skip
        assert signed.status == 303
        page = await (await page_client.get("/alerts/1")).text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)[1]  # type: ignore[index]
        assert "Pause escalation" in page
        assert "Escalate now" in page
        assert "Resume escalation" not in page

        async def act(action: str, **form: str) -> str:
            done = await page_client.post(f"/alerts/1/{action}", allow_redirects=False,
                                          data={"csrf": csrf, **form})  # fmt: skip
            assert (done.status, done.headers["Location"]) == (303, f"/alerts/1?done={action}")
            return await (await page_client.get(done.headers["Location"])).text()

        paused = await act("pause", **{"for": "1h"})
        assert "Escalation paused." in paused
        assert "Resume escalation" in paused
        assert "Escalate now" not in paused
        resumed = await act("resume")
        assert "Pause escalation" in resumed
        await act("escalate")
        detail = await (await page_client.get("/api/v1/alerts/1", headers=API)).json()
        trail = [
            (e["kind"], e["actor"])
            for e in detail["events"]
            if e["kind"].startswith("escalation_") and e["kind"] != "escalation_started"
        ]
        assert trail == [("escalation_paused", "pat"), ("escalation_resumed", "pat"),
                         ("escalation_override", "pat")]  # fmt: skip
        wrong = await page_client.post("/alerts/1/pause", data={"csrf": csrf, "for": "ever"})
        assert wrong.status == 422
        long = await page_client.post("/alerts/1/pause", data={"csrf": csrf, "for": "8d"})
        assert long.status == 422
        assert "a pause lasts from 1m to 7d" in await long.text()
    finally:
        await page_client.close()
