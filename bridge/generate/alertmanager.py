"""Render alertmanager.yml: a route per rule, twin inhibitions, the bridge's webhook receiver."""

from __future__ import annotations

from itertools import combinations
from typing import Any

from bridge.config import BRIDGE_RECEIVER, AlertmanagerSettings, Receiver
from bridge.core.model import AlertRule
from bridge.core.rules import rules_by_metric
from bridge.core.times import format_duration
from bridge.generate.dump import dump_yaml

GROUP_BY = ["alertname", "job", "instance"]
INHIBIT_EQUAL = ["metric", "instance"]


def _matcher(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def _severity_matcher(receiver: Receiver) -> str:
    return "severity=~" + '"' + "|".join(s.value for s in receiver.severities) + '"'


def routed_receivers(rule: AlertRule, settings: AlertmanagerSettings) -> list[str]:
    """Receivers an alert of `rule` reaches, in the order amtool reports them."""
    names = [BRIDGE_RECEIVER]
    names += [r.name for r in settings.receivers if rule.severity in r.severities]
    return names


def inhibit_rules(rules: list[AlertRule]) -> list[dict[str, Any]]:
    """A more severe rule on a metric silences each less severe rule on it (same instance)."""
    out = []
    for group in rules_by_metric(rules).values():
        ordered = sorted(group, key=lambda r: -r.severity.rank)
        for high, low in combinations(ordered, 2):
            if high.severity.rank > low.severity.rank:
                out.append(
                    {
                        "source_matchers": [_matcher("alertname", high.name)],
                        "target_matchers": [_matcher("alertname", low.name)],
                        "equal": INHIBIT_EQUAL,
                    }
                )
    return out


def render_alertmanager(rules: list[AlertRule], settings: AlertmanagerSettings) -> str:
    """`alertmanager.yml` for the enabled rules."""
    routes: list[dict[str, Any]] = []
    for rule in rules:
        if not rule.enabled:
            continue
        # Alertmanager rejects repeat_interval 0s: a cooldown of 0 becomes the minimum, 1s.
        routes.append(
            {
                "matchers": [_matcher("alertname", rule.name)],
                "receiver": BRIDGE_RECEIVER,
                "repeat_interval": format_duration(max(1, round(rule.cooldown_seconds))),
                "continue": True,
            }
        )
    for receiver in settings.receivers:
        routes.append(
            {"matchers": [_severity_matcher(receiver)], "receiver": receiver.name, "continue": True}
        )
    receivers: list[dict[str, Any]] = [
        {
            "name": BRIDGE_RECEIVER,
            "webhook_configs": [
                {
                    "url": settings.webhook_url,
                    "send_resolved": True,
                    "http_config": {
                        "authorization": {
                            "type": "Bearer",
                            "credentials_file": settings.webhook_token_file,
                        }
                    },
                }
            ],
        }
    ]
    for receiver in settings.receivers:
        receivers.append(
            {"name": receiver.name, f"{receiver.type}_configs": [dict(receiver.config)]}
        )
    doc = {
        "route": {
            "receiver": BRIDGE_RECEIVER,
            "group_by": GROUP_BY,
            "group_wait": format_duration(settings.group_wait),
            "group_interval": format_duration(settings.group_interval),
            "repeat_interval": format_duration(settings.repeat_interval),
            "routes": routes,
        },
        "inhibit_rules": inhibit_rules(rules),
        "receivers": receivers,
    }
    return dump_yaml(doc)
