"""Builders of Alertmanager webhook payloads shaped as Alertmanager 0.25 sends them."""

from __future__ import annotations

from typing import Any

ZERO = "0001-01-01T00:00:00Z"


def am_alert(
    fingerprint: str = "0123456789abcdef",
    status: str = "firing",
    starts_at: str = "2026-11-23T10:00:00.123Z",
    ends_at: str = ZERO,
    alertname: str = "high_cpu",
    severity: str = "warning",
    **labels: str,
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {
            "alertname": alertname,
            "severity": severity,
            "instance": "app-1:8080",
            "job": "app",
            "metric": "system.cpu.percent",
            **labels,
        },
        "annotations": {"summary": f"{alertname} on app-1:8080", "description": "CPU is 91%"},
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any], receiver: str = "alertbridge") -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "receiver": receiver,
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"].get("alertname", "")} if alerts else {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": '{}/{}:{alertname="high_cpu"}',
        "truncatedAlerts": 0,
    }
