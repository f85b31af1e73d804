"""A Slack app's buttons (optional): Slack posts what was clicked to
`POST /api/v1/slack/actions` (the app's Interactivity Request URL); the request is checked
with the app's signing secret (ALERTBRIDGE_SLACK_SIGNING_SECRET or _FILE: HMAC-SHA256 over
"v0:timestamp:body", timestamps within five minutes) and answered at once (Slack waits three
seconds). A button's value says what to do: `ack:ID` or `resolve:ID` (the bridge's alert id,
the `alertbridge_id` annotation of an escalation copy). The actor is the person whose Slack
method is "@" and the Slack user's name, else the Slack user's name with " (Slack)"."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from bridge.core.errors import InvalidInput, NotFound, RequestError
from bridge.core.oncall import OnCall
from bridge.core.signing import slack_signature_ok
from bridge.core.times import now_ns
from bridge.http.errors import HttpError
from bridge.http.keys import SETTINGS, STORE
from bridge.http.util import json_response
from bridge.http.wake import kick_reconciler

routes = web.RouteTableDef()
#: The most a Slack action request may carry (it is a few KiB).
MAX_BODY = 64 * 1024
ACTIONS = ("ack", "resolve")


def actor_of(oncall: OnCall, user: str) -> str:
    """The person whose Slack method is "@user", else "user (Slack)"."""
    for name, person in sorted(oncall.people.items()):
        for contact in person.contacts:
            if contact.type == "slack" and contact.config.get("channel") == f"@{user}":
                return name
    return f"{user} (Slack)"


def parse_action(raw: bytes) -> tuple[str, int, str]:
    """(what, alert id, Slack user name) of an interaction payload; InvalidInput otherwise.
    Both Slack shapes: legacy attachments' `interactive_message` and blocks' `block_actions`."""
    try:
        (text,) = parse_qs(raw.decode(), strict_parsing=True)["payload"]
        payload = json.loads(text)
        action = payload["actions"][0]
        value = str(action.get("value", ""))
        user = payload["user"]
        name = str(user.get("name") or user.get("username") or user["id"])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise InvalidInput("payload", "not a Slack interaction payload") from None
    what, _, number = value.partition(":")
    if what not in ACTIONS or not (number.isascii() and number.isdigit()):
        raise InvalidInput("payload", f"a button's value is ack:ID or resolve:ID, got {value!r}")
    return what, int(number), name


@routes.post("/api/v1/slack/actions")
async def slack_actions(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    secret = settings.server.slack_signing_secret
    if secret is None:
        raise NotFound("no Slack app is configured (ALERTBRIDGE_SLACK_SIGNING_SECRET)")
    if (request.content_length or 0) > MAX_BODY:
        raise HttpError(413, "too_large", f"a Slack action is at most {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise HttpError(413, "too_large", f"a Slack action is at most {MAX_BODY} bytes")
    wrong = slack_signature_ok(secret.data, request.headers.get("X-Slack-Request-Timestamp", ""),
                               raw, request.headers.get("X-Slack-Signature", ""),
                               int(time.time()))  # fmt: skip
    if wrong is not None:
        raise HttpError(401, "unauthorized", wrong)
    what, alert_id, user = parse_action(raw)
    actor = actor_of(settings.oncall, user)
    store = request.app[STORE]
    try:
        if what == "ack":
            await store.acknowledge(alert_id, actor, "via Slack", now_ns())
            said = f"Alert {alert_id} acknowledged by {actor}: escalation stops."
        else:
            await store.resolve(alert_id, actor, "via Slack", now_ns())
            said = f"Alert {alert_id} resolved by {actor}."
    except RequestError as exc:  # said in Slack, where the person clicked
        return json_response(_reply(f"Not done: {exc}"))
    await kick_reconciler(request.app)
    return json_response(_reply(said))


def _reply(text: str) -> dict[str, Any]:
    return {"response_type": "in_channel", "replace_original": False, "text": text}
