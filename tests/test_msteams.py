"""Microsoft Teams: the receiver's config (secrets from files), what is generated for each
Alertmanager version, and the bridge's adapter (card, retries asked of Alertmanager by 5xx,
errors) against a loopback Teams stand-in. End to end: tests/test_e2e_escalation.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge.channels.msteams import MAX_ALERTS, render_card
from bridge.config import Secret, load_settings
from bridge.core.alerts import Notification, ReceivedAlert
from bridge.core.errors import ConfigError
from bridge.generate.alertmanager import render_alertmanager
from bridge.http.app import create_app
from tests.payloads import am_alert, notification

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
HOOK = {"Authorization": "Bearer hook-secret"}


def teams_config(tmp_path: Path, version: str = "0.25", **extra: Any) -> Path:
    doc = {
        "alertmanager": {
            "version": version,
            "webhook_url": "http://127.0.0.1:9470/api/v1/alertmanager",
            "receivers": [{"name": "teams-ops", "type": "msteams", "severities": ["critical"],
                           "config": {"webhook_url_file": str(tmp_path / "teams-url"),
                                      **extra}}],
        }
    }  # fmt: skip
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"webhook_url": "https://x"}, "config.webhook_url: a secret: give webhook_url_file"),
        ({"webhook_url_file": ""}, "config.webhook_url_file: required"),
        ({"colour": "red"}, "config.colour: unknown setting"),
    ],
)
def test_a_teams_receiver_takes_its_url_from_a_file(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(teams_config(tmp_path, **extra), {})


@pytest.mark.parametrize(
    ("version", "message"),
    [(0.27, 'quote it, as version: "0.27"'), ("0.24", "must be one of 0.25, 0.26, 0.27, 0.28")],
)
def test_the_alertmanager_version_is_checked(tmp_path: Path, version: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(teams_config(tmp_path, version=version), {})


@pytest.mark.parametrize(
    ("version", "kind"),
    [("0.25", "webhook_configs"), ("0.26", "webhook_configs"), ("0.27", "msteams_configs"),
     ("0.28", "msteamsv2_configs")],
)  # fmt: skip
def test_what_is_generated_for_teams_depends_on_the_alertmanager_version(
    tmp_path: Path, version: str, kind: str
) -> None:
    settings = load_settings(teams_config(tmp_path, version=version), {})
    doc = yaml.safe_load(render_alertmanager(list(settings.rules), settings.alertmanager))
    [teams] = [r for r in doc["receivers"] if r["name"] == "teams-ops"]
    [config] = teams[kind]
    if kind == "webhook_configs":
        assert config["url"] == "http://127.0.0.1:9470/api/v1/adapters/msteams/teams-ops"
        assert config["http_config"]["authorization"]["credentials_file"] == (
            settings.alertmanager.webhook_token_file
        )
    else:
        assert config == {"webhook_url_file": str(tmp_path / "teams-url"), "send_resolved": True}


def _alerts(count: int) -> Notification:
    alerts = tuple(
        ReceivedAlert(f"{n:016x}", "firing", 0, None,
                      {"alertname": "critical_cpu", "severity": "critical", "instance": f"h{n}"},
                      {"summary": f"CPU saturated on h{n}"}, "http://prom/graph")
        for n in range(count)
    )  # fmt: skip
    return Notification("teams-ops", "firing", "{}", 0, alerts)


def test_the_card_lists_alerts_with_severity_and_the_ack_command_and_counts_the_rest() -> None:
    card = render_card(_alerts(MAX_ALERTS + 3), {f"{0:016x}": 41}, "https://bridge.example")
    body = card["attachments"][0]["content"]["body"]
    assert body[0]["text"] == f"[FIRING:{MAX_ALERTS + 3}] critical_cpu"
    facts = {f["title"]: f["value"] for f in body[2]["facts"]}
    assert facts["Severity"] == "critical"
    assert facts["Acknowledge"] == "alertbridge ack 41 --url https://bridge.example"
    assert body[1] == {"type": "TextBlock", "weight": "Bolder", "wrap": True,
                       "color": "attention", "text": "CPU saturated on h0"}  # fmt: skip
    assert body[-1]["text"] == "... and 3 more"
    assert card["attachments"][0]["content"]["actions"][0]["url"] == "http://prom/graph"


class Teams:
    """A Teams webhook stand-in: answers `statuses` in turn (then 200), records bodies."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.received: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="1" if status == 200 else "Server error")


async def rig(
    aiohttp_client: MakeClient, tmp_path: Path, teams: Teams
) -> tuple[Client, TestServer]:
    app = web.Application()
    app.router.add_post("/webhook", teams.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    (tmp_path / "teams-url").write_text(f"http://127.0.0.1:{server.port}/webhook\n")
    base = load_settings(teams_config(tmp_path), {}, db=str(tmp_path / "a.db"))
    settings = dataclasses.replace(
        base, server=dataclasses.replace(base.server, webhook_token=Secret("hook-secret"))
    )
    client = await aiohttp_client(create_app(settings, background=False))
    return client, server


async def test_the_adapter_delivers_a_card_with_the_bridges_alert_id(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    teams = Teams()
    client, server = await rig(aiohttp_client, tmp_path, teams)
    payload = notification(am_alert("00000000000000aa", alertname="critical_cpu",
                                    severity="critical"))  # fmt: skip
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200
    response = await client.post("/api/v1/adapters/msteams/teams-ops", json=payload,
                                 headers=HOOK)  # fmt: skip
    assert response.status == 200, await response.text()
    assert (await response.json())["delivered"] == 1
    [card] = teams.received
    facts = card["attachments"][0]["content"]["body"][-1]["facts"]
    assert {"title": "Acknowledge", "value": "alertbridge ack 1"} in facts
    metrics = await (await client.get("/metrics")).text()
    assert ('alertbridge_adapter_notifications_total{adapter="msteams",outcome="delivered",'
            'receiver="teams-ops"} 1.0') in metrics  # fmt: skip
    await server.close()


async def test_teams_failing_answers_5xx_so_that_alertmanager_retries(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    teams = Teams(500)
    client, server = await rig(aiohttp_client, tmp_path, teams)
    payload = notification(am_alert("00000000000000aa", severity="critical"))
    first = await client.post("/api/v1/adapters/msteams/teams-ops", json=payload, headers=HOOK)
    assert first.status == 502
    body = await first.json()
    assert body["error"] == "delivery_failed"
    assert "Teams answered HTTP 500" in body["message"]
    assert "127.0.0.1" not in body["message"]  # the URL is a secret
    again = await client.post("/api/v1/adapters/msteams/teams-ops", json=payload, headers=HOOK)
    assert again.status == 200
    assert len(teams.received) == 2
    await server.close()
    down = await client.post("/api/v1/adapters/msteams/teams-ops", json=payload, headers=HOOK)
    assert down.status == 502
    assert "could not be reached" in (await down.json())["message"]


async def test_adapter_errors(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    client, server = await rig(aiohttp_client, tmp_path, Teams())
    payload = notification(am_alert("00000000000000aa"))
    url = "/api/v1/adapters/msteams/teams-ops"
    assert (await client.post(url, json=payload)).status == 401
    unknown = await client.post("/api/v1/adapters/msteams/nobody", json=payload, headers=HOOK)
    assert unknown.status == 404
    bad = await client.post(url, json={"alerts": "no"}, headers=HOOK)
    assert bad.status == 400
    (tmp_path / "teams-url").unlink()
    missing = await client.post(url, json=payload, headers=HOOK)
    assert missing.status == 503
    assert "cannot read the URL file" in (await missing.json())["message"]
    (tmp_path / "teams-url").write_text("not a url")
    assert (await client.post(url, json=payload, headers=HOOK)).status == 503
    await server.close()


async def test_teams_that_never_answers_is_a_502_after_the_timeout(
    aiohttp_client: MakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import bridge.http.adapters

    never = asyncio.Event()

    class Silent(Teams):
        async def handle(self, request: web.Request) -> web.Response:
            self.received.append(await request.json())
            await never.wait()  # a Teams that takes the request and never answers
            return web.Response()

    monkeypatch.setattr(bridge.http.adapters, "ADAPTER_TIMEOUT", 0.2)
    teams = Silent()
    client, server = await rig(aiohttp_client, tmp_path, teams)
    payload = notification(am_alert("00000000000000aa", severity="critical"))
    response = await client.post("/api/v1/adapters/msteams/teams-ops", json=payload,
                                 headers=HOOK)  # fmt: skip
    assert response.status == 502
    assert "Teams could not be reached: TimeoutError" in (await response.json())["message"]
    assert len(teams.received) == 1
    await server.close()


def test_an_escalation_copy_with_a_link_gets_an_acknowledge_button() -> None:
    """Teams cards cannot call back: the button opens the bridge's confirmation page."""
    alerts = _alerts(1).alerts
    link = "https://bridge.example/ack/41?person=alice&exp=1796634000&sig=00"
    copy = alerts[0]._replace(annotations={**alerts[0].annotations, "alertbridge_id": "41",
                                           "alertbridge_ack_url": link})  # fmt: skip
    card = render_card(Notification("teams-ops", "firing", "{}", 0, (copy,)), {}, None)
    actions = card["attachments"][0]["content"]["actions"]
    assert actions[0] == {"type": "Action.OpenUrl", "title": "Acknowledge", "url": link}
    resolved = copy._replace(status="resolved")
    card = render_card(Notification("teams-ops", "resolved", "{}", 0, (resolved,)), {}, None)
    assert all(a["title"] != "Acknowledge" for a in card["attachments"][0]["content"]["actions"])
