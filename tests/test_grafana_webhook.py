"""Grafana's webhook contact point (unified alerting, body version "1") at the webhook's
endpoint: its documented payloads stored with their links and values, as its own source."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.config import Secret
from bridge.http.keys import STORE
from tests.payloads import am_alert, notification
from tests.test_receiver import BEARER, WEBHOOK, Client, MakeClient, make_app, metric, stored

#: The example of Grafana's "Webhook notifier" documentation (Grafana 11): two alerts, times
#: with a zone offset and microseconds, per alert its silence, dashboard and panel links and
#: the values of the rule's expressions.
FIRING_V11: dict[str, Any] = {
    "receiver": "My Super Webhook",
    "status": "firing",
    "orgId": 1,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
            "annotations": {
                "description": "The system has high memory usage",
                "runbook_url": "https://myrunbook.com/runbook/1234",
                "summary": "This alert was triggered for zone us-1",
            },
            "startsAt": "2021-10-12T09:51:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
            "fingerprint": "c6eadffa33fcdf37",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana"
            "&matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
            "dashboardURL": "",
            "panelURL": "",
            "values": {"B": 44.23943737541908, "C": 1},
        },
        {
            "status": "firing",
            "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
            "annotations": {"description": "The system has high CPU usage"},
            "startsAt": "2021-10-12T09:56:03.157076+02:00",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
            "fingerprint": "bc97ff14869b13e3",
            "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana",
            "dashboardURL": "https://play.grafana.org/d/abc",
            "panelURL": "https://play.grafana.org/d/abc?viewPanel=2",
            "values": {"B": 44.23943737541908, "C": 1},
        },
    ],
    "groupLabels": {},
    "commonLabels": {"team": "blue"},
    "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/",
    "version": "1",
    "groupKey": "{}:{}",
    "truncatedAlerts": 0,
    "title": "[FIRING:2]  (blue)",
    "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = T2\n",
}


def v93(body: dict[str, Any]) -> dict[str, Any]:
    """The same body as Grafana 9.3 sent it: `valueString` in place of `values`."""
    old = copy.deepcopy(body)
    for alert in old["alerts"]:
        del alert["values"]
        alert["valueString"] = "[ var='B' labels={zone=us-1} value=44.23943737541908 ]"
    return old


def resolved(body: dict[str, Any]) -> dict[str, Any]:
    """The first alert of the body resolved, with the rule's panel image."""
    done = copy.deepcopy(body)
    done["status"] = done["state"] = "resolved"
    done["alerts"] = [done["alerts"][0]]
    done["alerts"][0].update(status="resolved", endsAt="2021-10-12T10:01:03.157076+02:00",
                             imageURL="https://grafana.example/images/a.png")  # fmt: skip
    return done


#: What a contact point's "Test" button sends.
TEST_NOTIFICATION: dict[str, Any] = {
    **{k: v for k, v in FIRING_V11.items() if k != "alerts"},
    "receiver": "test",
    "alerts": [{
        "status": "firing", "labels": {"alertname": "TestAlert", "instance": "Grafana"},
        "annotations": {"summary": "Notification test"},
        "startsAt": "2026-12-07T03:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "", "fingerprint": "57c6d9296de2ad39", "silenceURL": "",
        "dashboardURL": "", "panelURL": "",
        "valueString": "[ metric='foo' labels={instance=bar} value=10 ]",
    }],
}  # fmt: skip


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await aiohttp_client(make_app(tmp_path))


async def test_a_firing_grafana_11_body_is_stored_with_its_links_and_values(
    client: Client,
) -> None:
    """Both alerts stored as Grafana's (the reconciler, which reads Alertmanager, leaves them
    alone), with their non-empty links and their values beside the labels."""
    answer = await client.post(WEBHOOK, json=FIRING_V11, headers=BEARER)
    assert answer.status == 200, await answer.text()
    assert (await answer.json())["stored"] == 2
    alerts = {a.alertname: a for a in await stored(client)}
    memory, cpu = alerts["High memory usage"], alerts["High CPU usage"]
    assert memory.source == cpu.source == "grafana"
    assert memory.extra == {"silenceURL": FIRING_V11["alerts"][0]["silenceURL"],
                            "values": {"B": 44.23943737541908, "C": 1}}  # fmt: skip
    assert cpu.extra["panelURL"] == "https://play.grafana.org/d/abc?viewPanel=2"
    assert memory.to_json()["starts_at"] == "2021-10-12T07:51:03.157076Z"
    assert await client.app[STORE].firing("alertmanager") == []


async def test_a_grafana_9_3_body_keeps_its_value_string(client: Client) -> None:
    answer = await client.post(WEBHOOK, json=v93(FIRING_V11), headers=BEARER)
    assert answer.status == 200, await answer.text()
    (first, *_) = sorted(await stored(client), key=lambda a: a.alertname, reverse=True)
    assert first.extra["valueString"].startswith("[ var='B'")
    assert "values" not in first.extra


async def test_a_grafana_resolution_ends_its_episode_and_keeps_the_image(client: Client) -> None:
    await client.post(WEBHOOK, json=FIRING_V11, headers=BEARER)
    answer = await client.post(WEBHOOK, json=resolved(FIRING_V11), headers=BEARER)
    assert (await answer.json())["resolved"] == 1
    memory = next(a for a in await stored(client) if a.alertname == "High memory usage")
    assert (memory.status, memory.resolution) == ("resolved", "alertmanager")
    assert memory.extra["imageURL"] == "https://grafana.example/images/a.png"


async def test_a_contact_points_test_is_answered_and_not_stored(client: Client) -> None:
    """The "Test" button's made-up alert would stay firing for ever: 200, nothing stored,
    counted."""
    answer = await client.post(WEBHOOK, json=TEST_NOTIFICATION, headers=BEARER)
    assert answer.status == 200
    assert (await answer.json())["test"] is True
    assert await stored(client) == []
    assert await metric(client, "alertbridge_grafana_test_notifications_total") == 1
    empty = await client.post(WEBHOOK, json={**FIRING_V11, "alerts": []}, headers=BEARER)
    assert "test" not in await empty.json()  # no alert is no test
    assert await metric(client, "alertbridge_grafana_test_notifications_total") == 1


async def test_extra_fields_of_unexpected_types_are_left_out(client: Client) -> None:
    """A link that is no string or a value that is no number is ignored, not refused (a newer
    Grafana's fields alike)."""
    body = copy.deepcopy(FIRING_V11)
    body["alerts"][0].update(dashboardURL=5, values={"B": "high", "C": 2}, newField={"x": 1})
    answer = await client.post(WEBHOOK, json=body, headers=BEARER)
    assert answer.status == 200, await answer.text()
    memory = next(a for a in await stored(client) if a.alertname == "High memory usage")
    assert memory.extra["values"] == {"C": 2}
    assert "dashboardURL" not in memory.extra


def _signed_app(tmp_path: Path, timestamp_header: str = "") -> Any:
    return make_app(tmp_path, grafana_hmac_secret=Secret("grafana-hmac"),
                    grafana_timestamp_header=timestamp_header)  # fmt: skip


def _sign(body: bytes, stamp: str = "") -> str:
    signed = f"{stamp}:".encode() + body if stamp else body
    return hmac.new(b"grafana-hmac", signed, hashlib.sha256).hexdigest()


async def test_a_grafana_body_signed_with_the_secret_needs_no_token(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """With a secret set: a valid signature authenticates (no bearer token), a wrong one and
    an unsigned Grafana body are 401; Alertmanager keeps its token."""
    client = await aiohttp_client(_signed_app(tmp_path))
    body = json.dumps(FIRING_V11).encode()
    json_type = {"Content-Type": "application/json"}
    good = {**json_type, "X-Grafana-Alerting-Signature": _sign(body)}
    assert (await client.post(WEBHOOK, data=body, headers=good)).status == 200
    bad = {**json_type, "X-Grafana-Alerting-Signature": _sign(body + b" ")}
    refused = await client.post(WEBHOOK, data=body, headers=bad)
    assert refused.status == 401
    assert "does not match" in (await refused.json())["message"]
    unsigned = await client.post(WEBHOOK, data=body, headers={**json_type, **BEARER})
    assert unsigned.status == 401
    assert "must be signed" in (await unsigned.json())["message"]
    am = notification(am_alert())
    assert (await client.post(WEBHOOK, json=am, headers=BEARER)).status == 200
    assert (await client.post(WEBHOOK, json=am)).status == 401


async def test_a_timestamped_signature_covers_the_time_and_refuses_replays(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    client = await aiohttp_client(_signed_app(tmp_path, "X-Grafana-Alerting-Timestamp"))
    body = json.dumps(FIRING_V11).encode()

    def headers(stamp: str, signed_stamp: str | None = None) -> dict[str, str]:
        return {"Content-Type": "application/json", "X-Grafana-Alerting-Timestamp": stamp,
                "X-Grafana-Alerting-Signature": _sign(body, signed_stamp or stamp)}  # fmt: skip

    now = str(int(time.time()))
    assert (await client.post(WEBHOOK, data=body, headers=headers(now))).status == 200
    stale = str(int(time.time()) - 3600)
    replay = await client.post(WEBHOOK, data=body, headers=headers(stale))
    assert replay.status == 401
    assert "off: a replay" in (await replay.json())["message"]
    moved = await client.post(WEBHOOK, data=body, headers=headers(now, str(int(now) - 1)))
    assert moved.status == 401


async def test_grafana_set_to_put_is_heard_too(client: Client) -> None:
    """A contact point's HTTP method may be PUT."""
    answer = await client.put(WEBHOOK, json=FIRING_V11, headers=BEARER)
    assert answer.status == 200, await answer.text()
    assert len(await stored(client)) == 2
