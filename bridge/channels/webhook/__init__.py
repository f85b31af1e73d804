"""A notification in Alertmanager's webhook format (version 4), posted by the bridge itself
to a `webhook` receiver's `url` (or the file `url_file` names): the dead man's switch tells
its receiver so when Alertmanager, which would otherwise deliver, may be what broke.

>>> from bridge.core.alerts import ReceivedAlert
>>> alert = ReceivedAlert("0123456789abcdef", "firing", 0, None, {"alertname": "x"}, {}, "")
>>> body = WEBHOOK.render(Notification("ops", "firing", "g", 0, (alert,)), {}, None)
>>> body["version"], body["receiver"], body["alerts"][0]["endsAt"]
('4', 'ops', '0001-01-01T00:00:00Z')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.channels.delivery import TargetError, read_url
from bridge.core.alerts import Notification
from bridge.core.times import format_micros

ZERO = "0001-01-01T00:00:00Z"


class WebhookChannel:
    """Alertmanager's own webhook integration delivers these receivers; the bridge posts to
    them only where it must itself (no adapter)."""

    type = "webhook"
    adapter = False
    title = "webhook"

    def validate(self, config: Mapping[str, Any]) -> None:
        """Alertmanager checks the rest of a webhook_config; the bridge needs a URL only when
        it posts itself (the heartbeat's `notify`: checked there)."""

    def target(self, config: Mapping[str, Any]) -> str:
        if config.get("url_file"):
            return read_url(str(config["url_file"]))
        if not config.get("url"):
            raise TargetError("the receiver has no url (or url_file)")
        return str(config["url"])

    def render(self, notification: Notification, ids: Mapping[str, int],
               public_url: str | None) -> dict[str, Any]:  # fmt: skip
        alerts = notification.alerts
        common = dict(alerts[0].labels) if alerts else {}
        for alert in alerts[1:]:
            common = {k: v for k, v in common.items() if alert.labels.get(k) == v}
        notes = dict(alerts[0].annotations) if alerts else {}
        for alert in alerts[1:]:
            notes = {k: v for k, v in notes.items() if alert.annotations.get(k) == v}
        return {
            "version": "4",
            "groupKey": notification.group_key,
            "truncatedAlerts": notification.truncated_alerts,
            "status": notification.status,
            "receiver": notification.receiver,
            "groupLabels": {"alertname": common["alertname"]} if "alertname" in common else {},
            "commonLabels": common,
            "commonAnnotations": notes,
            "externalURL": public_url or "",
            "alerts": [
                {
                    "status": a.status,
                    "labels": dict(a.labels),
                    "annotations": dict(a.annotations),
                    "startsAt": format_micros(a.starts_at),
                    "endsAt": format_micros(a.ends_at) if a.ends_at else ZERO,
                    "generatorURL": a.generator_url,
                    "fingerprint": a.fingerprint,
                }
                for a in alerts
            ],
        }


WEBHOOK = WebhookChannel()
