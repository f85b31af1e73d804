"""Microsoft Teams, which Alertmanager 0.25 lacks: the bridge's adapter takes Alertmanager's
webhook notification for a Teams receiver and posts an Adaptive Card to the Teams webhook
URL read from the receiver's secret file (a Workflows "post to a channel when a webhook
request is received" URL, or a legacy Incoming Webhook: both take this message format).

The URL is read for each notification (a rotated secret needs no restart) and never logged.
When Teams fails, the adapter answers 5xx to Alertmanager, which retries (the notification
log then records one delivery).

>>> card = render_card(_example(), {"0123456789abcdef": 7}, None)
>>> card["attachments"][0]["content"]["body"][0]["text"]
'[FIRING:1] high_cpu'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.channels.base import ChannelConfigError
from bridge.channels.delivery import read_url
from bridge.core.alerts import Notification, ReceivedAlert
from bridge.core.policies import ACK_URL

CARD = "application/vnd.microsoft.card.adaptive"
#: Adaptive Card text colours by severity (firing), "good" once resolved.
COLOURS = {"critical": "attention", "error": "attention", "warning": "warning", "info": "accent"}
MAX_ALERTS = 20  # alerts listed in one card; the rest are counted


def _title(notification: Notification) -> str:
    firing = [a for a in notification.alerts if a.status == "firing"]
    names = sorted({a.labels.get("alertname", "") for a in notification.alerts})
    head = f"[FIRING:{len(firing)}]" if firing else "[RESOLVED]"
    return f"{head} {', '.join(n for n in names if n)}".strip()


def _facts(alert: ReceivedAlert, alert_id: int | None, public_url: str | None) -> list[Any]:
    facts = [{"title": "Severity", "value": alert.labels.get("severity", "-")},
             {"title": "Status", "value": alert.status}]  # fmt: skip
    if alert.labels.get("instance"):
        facts.append({"title": "Instance", "value": alert.labels["instance"]})
    if "escalation_level" in alert.labels:
        facts.append({"title": "Escalation",
                      "value": f"level {alert.labels['escalation_level']} of"
                               f" {alert.labels.get('escalation_policy', '-')}"})  # fmt: skip
    if alert_id is not None and alert.status == "firing":
        command = f"alertbridge ack {alert_id}"
        if public_url:
            command += f" --url {public_url}"
        facts.append({"title": "Acknowledge", "value": command})
    return facts


def render_card(
    notification: Notification, ids: Mapping[str, int], public_url: str | None
) -> dict[str, Any]:
    """The Teams message for a notification: title, then per alert its summary, severity,
    instance, escalation level and the command that acknowledges it (`ids`: the bridge's
    alert id by fingerprint)."""
    body: list[Any] = [{"type": "TextBlock", "size": "Large", "weight": "Bolder", "wrap": True,
                        "text": _title(notification)}]  # fmt: skip
    for alert in notification.alerts[:MAX_ALERTS]:
        severity = alert.labels.get("severity", "")
        colour = "good" if alert.status == "resolved" else COLOURS.get(severity, "default")
        summary = alert.annotations.get("summary") or alert.labels.get("alertname", "alert")
        body.append({"type": "TextBlock", "weight": "Bolder", "wrap": True, "color": colour,
                     "text": summary})  # fmt: skip
        if alert.annotations.get("description"):
            body.append({"type": "TextBlock", "wrap": True, "isSubtle": True,
                         "text": alert.annotations["description"]})  # fmt: skip
        alert_id = ids.get(alert.fingerprint)
        if alert.annotations.get("alertbridge_id", "").isdigit():  # an escalation copy
            alert_id = int(alert.annotations["alertbridge_id"])
        body.append({"type": "FactSet", "facts": _facts(alert, alert_id, public_url)})
    if len(notification.alerts) > MAX_ALERTS:
        body.append({"type": "TextBlock", "isSubtle": True,
                     "text": f"... and {len(notification.alerts) - MAX_ALERTS} more"})  # fmt: skip
    actions = []
    # an escalation copy's acknowledgement link (a Teams Workflows card cannot call back: a
    # button that opens the bridge's confirmation page)
    acks = [a.annotations[ACK_URL] for a in notification.alerts
            if a.status == "firing" and a.annotations.get(ACK_URL)]  # fmt: skip
    if acks:
        actions.append({"type": "Action.OpenUrl", "title": "Acknowledge", "url": acks[0]})
    for title, key in (("Runbook", "runbook_url"), ("Dashboard", "dashboard_url")):
        links = [a.annotations[key] for a in notification.alerts if a.annotations.get(key)]
        if links:
            actions.append({"type": "Action.OpenUrl", "title": title, "url": links[0]})
    sources = [a.generator_url for a in notification.alerts if a.generator_url]
    if sources:
        actions.append({"type": "Action.OpenUrl", "title": "Source", "url": sources[0]})
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    }
    if actions:
        content["actions"] = actions
    return {"type": "message", "attachments": [{"contentType": CARD, "content": content}]}


class TeamsChannel:
    """Microsoft Teams: `webhook_url_file` (required; the URL itself is a secret and never
    in the configuration), and Alertmanager's own msteams settings where 0.27+ delivers it
    (send_resolved, title, text: the adapter's card has its own title and text)."""

    type = "msteams"
    adapter = True
    title = "Teams"
    FIELDS = frozenset({"webhook_url_file", "send_resolved", "title", "text"})

    def validate(self, config: Mapping[str, Any]) -> None:
        if "webhook_url" in config:
            raise ChannelConfigError("webhook_url", "a secret: give webhook_url_file, a file"
                                     " holding it")  # fmt: skip
        unknown = set(config) - self.FIELDS
        if unknown:
            raise ChannelConfigError(sorted(unknown)[0], "unknown setting")
        url_file = config.get("webhook_url_file")
        if not isinstance(url_file, str) or not url_file:
            reason = "required: the file holding the Teams webhook URL"
            raise ChannelConfigError("webhook_url_file", reason)

    def target(self, config: Mapping[str, Any]) -> str:
        return read_url(str(config["webhook_url_file"]))

    def render(self, notification: Notification, ids: Mapping[str, int],
               public_url: str | None) -> dict[str, Any]:  # fmt: skip
        return render_card(notification, ids, public_url)


TEAMS = TeamsChannel()


def _example() -> Notification:
    alert = ReceivedAlert("0123456789abcdef", "firing", 0, None,
                          {"alertname": "high_cpu", "severity": "warning"}, {}, "")  # fmt: skip
    return Notification(receiver="teams", status="firing", group_key="{}", truncated_alerts=0,
                        alerts=(alert,))  # fmt: skip
