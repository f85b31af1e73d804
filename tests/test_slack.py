"""A Slack app's buttons: requests checked with the app's signing secret (Slack's documented
example is a doctest of bridge.core.signing), stale or forged ones refused, ack:ID and
resolve:ID acted on as the person whose Slack method is the user, answered for Slack."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import yaml

from bridge.config import Secret, load_settings
from bridge.http.app import create_app
from bridge.http.keys import STORE
from tests.payloads import am_alert, notification

HOOK = {"Authorization": "Bearer hook-secret"}
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
PEOPLE = {"alice": {"contacts": [{"type": "slack", "config": {
    "api_url_file": "/etc/alertmanager/slack-url", "channel": "@alice.m"}}]}}  # fmt: skip


async def make(aiohttp_client: Any, tmp_path: Path, secret: str | None = SECRET) -> Any:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"people": PEOPLE}))
    base = load_settings(path, {}, db=str(tmp_path / "a.db"))
    app_secret = Secret(secret) if secret else None
    server = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"),
                                 slack_signing_secret=app_secret)  # fmt: skip
    client = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                             background=False))  # fmt: skip
    body = notification(am_alert("00000000000000aa", alertname="disk_full", severity="critical"))
    assert (await client.post("/api/v1/alertmanager", json=body, headers=HOOK)).status == 200
    return client


def signed(value: str, user: str = "alice.m", stamp: int | None = None,
           secret: str = SECRET) -> tuple[bytes, dict[str, str]]:  # fmt: skip
    payload = {"type": "block_actions", "user": {"id": "U2CERLKJA", "username": user},
               "actions": [{"action_id": "alertbridge", "value": value}]}  # fmt: skip
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = stamp if stamp is not None else int(time.time())
    mac = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": str(stamp), "X-Slack-Signature": f"v0={mac}",
                  "Content-Type": "application/x-www-form-urlencoded"}  # fmt: skip


async def test_a_button_acknowledges_as_the_person_and_then_resolves(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    client = await make(aiohttp_client, tmp_path)
    body, headers = signed("ack:1")
    answer = await client.post("/api/v1/slack/actions", data=body, headers=headers)
    assert answer.status == 200
    assert (await answer.json())["text"] == "Alert 1 acknowledged by alice: escalation stops."
    alert = await client.app[STORE].get_alert(1)
    assert (alert.acked_by, alert.ack_comment) == ("alice", "via Slack")
    body, headers = signed("ack:1", user="bob")  # acked already: said in Slack, not an error
    again = await (await client.post("/api/v1/slack/actions", data=body, headers=headers)).json()
    assert again["text"].startswith("Not done: ")
    assert "already acknowledged" in again["text"]
    body, headers = signed("resolve:1", user="bob")
    done = await (await client.post("/api/v1/slack/actions", data=body, headers=headers)).json()
    assert done["text"] == "Alert 1 resolved by bob (Slack)."
    assert (await client.app[STORE].get_alert(1)).status == "resolved"


@pytest.mark.parametrize(
    ("case", "status", "said"),
    [
        ("forged", 401, "does not match"),
        ("stale", 401, "more than 300s off"),
        ("no timestamp", 401, "malformed"),
        ("bad value", 400, "ack:ID or resolve:ID"),
        ("not a payload", 400, "not a Slack interaction payload"),
    ],
)
async def test_what_is_refused(aiohttp_client: Any, tmp_path: Path, case: str, status: int,
                               said: str) -> None:  # fmt: skip
    client = await make(aiohttp_client, tmp_path)
    body, headers = signed("ack:1")
    if case == "forged":
        body, headers = signed("ack:1", secret="not the app's secret")
    elif case == "stale":
        body, headers = signed("ack:1", stamp=int(time.time()) - 301)
    elif case == "no timestamp":
        del headers["X-Slack-Request-Timestamp"]
    elif case == "bad value":
        body, headers = signed("acknowledge everything")
    else:
        body = b"payload=%7Bnot%20json"
        stamp = headers["X-Slack-Request-Timestamp"]
        mac = hmac.new(SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
        headers["X-Slack-Signature"] = f"v0={mac.hexdigest()}"
    answer = await client.post("/api/v1/slack/actions", data=body, headers=headers)
    assert answer.status == status
    assert said in (await answer.json())["message"]
    assert (await client.app[STORE].get_alert(1)).acked_by is None


async def test_without_a_slack_app_there_is_no_endpoint(aiohttp_client: Any,
                                                        tmp_path: Path) -> None:  # fmt: skip
    client = await make(aiohttp_client, tmp_path, secret=None)
    body, headers = signed("ack:1")
    answer = await client.post("/api/v1/slack/actions", data=body, headers=headers)
    assert answer.status == 404
    assert "no Slack app is configured" in (await answer.json())["message"]


def test_the_secret_comes_from_the_environment_never_the_file(tmp_path: Path) -> None:
    secret = tmp_path / "slack"
    secret.write_text(SECRET + "\n")
    settings = load_settings(None, {"ALERTBRIDGE_SLACK_SIGNING_SECRET_FILE": str(secret)})
    assert settings.server.slack_signing_secret is not None
    assert settings.server.slack_signing_secret.data == SECRET.encode()
    assert SECRET not in repr(settings)
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"server": {"slack_signing_secret": SECRET}}))
    with pytest.raises(Exception, match="unknown setting"):
        load_settings(config, {})
