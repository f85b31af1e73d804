"""The dead man's switch: configuration, the generated rule and route, the webhook recording
heartbeats without storing them, and the watchdog raising and resolving
AlertingPipelineSilent and telling a receiver directly (a loopback stand-in here; end to end
with the real Alertmanager stopped: tests/test_e2e_heartbeat.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.config import Secret, load_settings
from bridge.core.errors import ConfigError
from bridge.core.times import NS
from bridge.escalation.heartbeat import Watchdog
from bridge.generate import ALERTMANAGER_PATH, RULES_PATH, TESTS_PATH, render_all
from bridge.http.app import create_app
from bridge.http.keys import STORE
from bridge.store import AlertQuery, AlertStore, open_store
from tests.payloads import am_alert, notification
from tests.stores import T0

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
HOOK = {"Authorization": "Bearer hook-secret"}


def config(tmp_path: Path, **heartbeat: Any) -> Path:
    doc = {
        "alertmanager": {"receivers": [
            {"name": "direct", "type": "webhook", "severities": ["critical"],
             "config": {"url_file": str(tmp_path / "direct-url")}},
            {"name": "mail", "type": "email", "severities": ["critical"],
             "config": {"to": "a@example.org"}},
        ]},
        "heartbeat": {"interval": "1m", "timeout": "5m", "notify": "direct", **heartbeat},
    }  # fmt: skip
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("heartbeat", "message"),
    [
        ({"timeout": "90s"}, "heartbeat.timeout: must be at least twice the interval"),
        ({"interval": "0s"}, "heartbeat.interval: must be longer than 0s"),
        ({"notify": "mail"}, "heartbeat.notify: must name a webhook or msteams receiver"),
        ({"notify": "nobody"}, "heartbeat.notify: must name a webhook or msteams receiver"),
        ({"enabled": "yes"}, "heartbeat.enabled: must be true or false"),
        ({"every": "1m"}, "heartbeat.every: unknown setting"),
    ],
)
def test_heartbeat_config_errors(tmp_path: Path, heartbeat: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(config(tmp_path, **heartbeat), {})


def test_the_rule_fires_always_and_its_route_goes_to_the_bridge_alone(tmp_path: Path) -> None:
    settings = load_settings(config(tmp_path), {})
    files = render_all(settings).files
    groups = yaml.safe_load(files[RULES_PATH])["groups"]
    assert groups[-1]["rules"] == [{
        "alert": "AlertbridgeHeartbeat", "expr": "vector(1)",
        "labels": {"alertbridge": "heartbeat", "severity": "none"},
        "annotations": {"summary": "The alerting pipeline works (the bridge's dead man's switch)"},
    }]  # fmt: skip
    assert "heartbeat: fires from the first evaluation" in files[TESTS_PATH]
    first = yaml.safe_load(files[ALERTMANAGER_PATH])["route"]["routes"][0]
    assert first == {"matchers": ['alertname="AlertbridgeHeartbeat"'], "receiver": "alertbridge",
                     "group_by": ["alertname"], "group_wait": "0s", "group_interval": "1m",
                     "repeat_interval": "1m", "continue": False}  # fmt: skip
    off = render_all(load_settings(None, {})).files
    assert "AlertbridgeHeartbeat" not in off[RULES_PATH] + off[ALERTMANAGER_PATH]


async def test_the_webhook_records_heartbeats_and_never_stores_them(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    base = load_settings(config(tmp_path), {}, db=str(tmp_path / "a.db"))
    settings = dataclasses.replace(
        base, server=dataclasses.replace(base.server, webhook_token=Secret("hook-secret"))
    )
    client = await aiohttp_client(create_app(settings, background=False))
    beat = am_alert("00000000000000be", alertname="AlertbridgeHeartbeat", alertbridge="heartbeat",
                    severity="none")  # fmt: skip
    response = await client.post("/api/v1/alertmanager", json=notification(beat), headers=HOOK)
    assert response.status == 200
    store = client.app[STORE]
    assert await store.list_alerts(AlertQuery()) == []
    assert await store.last_heartbeat() is not None
    metrics = await (await client.get("/metrics")).text()
    assert "alertbridge_heartbeats_received_total 1.0" in metrics


class Direct:
    """The direct receiver: records what it is told; answers `statuses` in turn, then 200."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.bodies: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = open_store(tmp_path / "a.db")
    await opened.start()
    yield opened
    await opened.close()


async def test_silence_past_the_timeout_raises_the_alert_and_tells_the_receiver_directly(
    tmp_path: Path, store: AlertStore
) -> None:
    direct = Direct(500)  # the first attempt fails: told again at the next check
    app = web.Application()
    app.router.add_post("/hook", direct.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    (tmp_path / "direct-url").write_text(f"http://127.0.0.1:{server.port}/hook")
    settings = load_settings(config(tmp_path), {})
    now = [T0]
    async with aiohttp.ClientSession() as session:
        watchdog = Watchdog(store, settings, session, clock=lambda: now[0])
        assert await watchdog.check() == "waiting"
        now[0] = T0 + 600 * NS  # none ever: twice the timeout from the start
        assert await watchdog.check() == "waiting"
        now[0] = T0
        await store.record_heartbeat(T0 + 10 * NS)
        now[0] = T0 + 310 * NS
        assert await watchdog.check() == "ok"  # 300 s since the last: not yet past
        assert watchdog.age() == 300.0
        now[0] = T0 + 311 * NS
        assert await watchdog.check() == "silent"
        [alert] = await store.list_alerts(AlertQuery(status="firing"))
        assert (alert.alertname, alert.severity, alert.source) == (
            "AlertingPipelineSilent", "critical", "local"
        )  # fmt: skip
        assert [b["status"] for b in direct.bodies] == ["firing"]  # answered 500
        now[0] += 5 * NS
        assert await watchdog.check() == "silent"
        assert [b["status"] for b in direct.bodies] == ["firing", "firing"]  # told again
        assert direct.bodies[1]["alerts"][0]["labels"]["alertname"] == "AlertingPipelineSilent"
        await watchdog.check()
        assert len(direct.bodies) == 2  # once delivered, not again
        assert len(await store.list_alerts(AlertQuery(status="firing"))) == 1  # raised once
        await store.record_heartbeat(now[0])  # back
        now[0] += NS
        assert await watchdog.check() == "ok"
        assert await store.list_alerts(AlertQuery(status="firing")) == []
        assert [b["status"] for b in direct.bodies] == ["firing", "firing", "resolved"]
    await server.close()


async def test_a_bridge_that_never_had_a_heartbeat_waits_twice_the_timeout(
    tmp_path: Path, store: AlertStore
) -> None:
    settings = load_settings(config(tmp_path, notify=None), {})
    now = [T0]
    watchdog = Watchdog(store, settings, None, clock=lambda: now[0])
    now[0] = T0 + 600 * NS
    assert await watchdog.check() == "waiting"
    now[0] += NS
    assert await watchdog.check() == "silent"
    assert [a.alertname for a in await store.list_alerts(AlertQuery())] == [
        "AlertingPipelineSilent"
    ]


async def test_the_direct_receiver_may_be_teams(tmp_path: Path, store: AlertStore) -> None:
    cards: list[Any] = []

    async def teams(request: web.Request) -> web.Response:
        cards.append(await request.json())
        return web.Response(text="1")

    app = web.Application()
    app.router.add_post("/teams", teams)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    (tmp_path / "teams-url").write_text(f"http://127.0.0.1:{server.port}/teams")
    doc = {"alertmanager": {"receivers": [
        {"name": "chat", "type": "msteams", "severities": ["critical"],
         "config": {"webhook_url_file": str(tmp_path / "teams-url")}}]},
        "heartbeat": {"interval": "1m", "timeout": "5m", "notify": "chat"}}  # fmt: skip
    path = tmp_path / "t.yml"
    path.write_text(yaml.safe_dump(doc))
    now = [T0]
    async with aiohttp.ClientSession() as session:
        watchdog = Watchdog(store, load_settings(path, {}), session, clock=lambda: now[0])
        await store.record_heartbeat(T0)
        now[0] = T0 + 301 * NS
        assert await watchdog.check() == "silent"
    [card] = cards
    body = card["attachments"][0]["content"]["body"]
    assert body[0]["text"] == "[FIRING:1] AlertingPipelineSilent"
    facts = {f["title"]: f["value"] for f in body[-1]["facts"]}
    assert facts["Acknowledge"] == "alertbridge ack 1"
    await server.close()
