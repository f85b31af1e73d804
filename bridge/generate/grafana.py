"""Render Grafana provisioning (datasources, dashboard provider) and the alertbridge dashboard.

Each telemetry panel's threshold steps are exactly the enabled rules' thresholds on its
metric, in the panel's unit (the base unit Prometheus holds).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.core.catalog import CATALOG, MetricSpec
from bridge.core.custom import CustomMetric, metric_expr
from bridge.core.model import AlertRule, Condition, Severity
from bridge.generate.dump import dump_yaml

PROMETHEUS_UID = "alertbridge-prometheus"
ALERTMANAGER_UID = "alertbridge-alertmanager"
DASHBOARD_UID = "alertbridge-overview"
PROMETHEUS = {"type": "prometheus", "uid": PROMETHEUS_UID}
ALERTMANAGER = {"type": "alertmanager", "uid": ALERTMANAGER_UID}
INSTANCE = '{instance=~"$instance"}'
COLOURS = {Severity.INFO: "blue", Severity.WARNING: "orange", Severity.ERROR: "dark-orange",
           Severity.CRITICAL: "red"}  # fmt: skip


def render_datasources(prometheus_url: str, alertmanager_url: str) -> str:
    """Provisioned datasources with fixed uids (the dashboard refers to them)."""
    doc = {
        "apiVersion": 1,
        "datasources": [
            {"name": "Prometheus", "uid": PROMETHEUS_UID, "type": "prometheus",
             "access": "proxy", "url": prometheus_url, "isDefault": True},
            {"name": "Alertmanager", "uid": ALERTMANAGER_UID, "type": "alertmanager",
             "access": "proxy", "url": alertmanager_url,
             "jsonData": {"implementation": "prometheus"}},
        ],
    }  # fmt: skip
    return dump_yaml(doc)


def render_provider(path: str) -> str:
    """The file provider that loads the generated dashboards."""
    doc = {
        "apiVersion": 1,
        "providers": [
            {"name": "alertbridge", "type": "file", "disableDeletion": False,
             "updateIntervalSeconds": 30, "options": {"path": path}},
        ],
    }  # fmt: skip
    return dump_yaml(doc)


def thresholds(rules: list[AlertRule]) -> dict[str, Any]:
    """Grafana threshold steps from the rules on one metric, coloured by severity.

    A step's colour holds from its value upwards. Where high is bad: green, then each rule's
    colour from its threshold. Where low is bad: the lowest rule's colour below everything,
    then at each threshold the next rule's colour, and green above the highest.
    """
    ups = sorted(rules, key=lambda r: r.threshold_base)
    if any(r.condition in (Condition.LT, Condition.LE) for r in rules):
        colours = [COLOURS[r.severity] for r in ups] + ["green"]
        steps: list[dict[str, Any]] = [{"color": colours[0], "value": None}]
        steps += [{"color": colours[i + 1], "value": r.threshold_base} for i, r in enumerate(ups)]
    else:
        steps = [{"color": "green", "value": None}]
        steps += [{"color": COLOURS[r.severity], "value": r.threshold_base} for r in ups]
    return {"mode": "absolute", "steps": steps}


def _target(expr: str, legend: str, ref: str = "A") -> dict[str, Any]:
    return {"refId": ref, "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend}


def _panel(pid: int, title: str, kind: str, x: int, y: int, targets: list[dict[str, Any]],
           unit: str = "short", extra: dict[str, Any] | None = None, w: int = 12,
           h: int = 8) -> dict[str, Any]:  # fmt: skip
    return {
        "id": pid,
        "type": kind,
        "title": title,
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
        "datasource": PROMETHEUS,
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit, **(extra or {})}, "overrides": []},
    }


def _metric_panel(pid: int, spec: MetricSpec, rules: list[AlertRule], namespace: str, x: int,
                  y: int) -> dict[str, Any]:  # fmt: skip
    expr = spec.measurement(namespace, "5m", INSTANCE)
    return _panel(
        pid, f"{spec.name} ({spec.seed_unit})", "timeseries", x, y,
        [_target(expr, "{{instance}}")], spec.grafana_unit,
        {"thresholds": thresholds(rules), "custom": {"thresholdsStyle": {"mode": "line"}}},
    )  # fmt: skip


def render_dashboard(rules: list[AlertRule], namespace: str, job: str,
                     metrics: Sequence[CustomMetric] = ()) -> str:  # fmt: skip
    """The overview dashboard: telemetry with rule thresholds, alerts, the bridge's health,
    then a panel per metric the application declares (its measured value, as its rules
    read it, with their thresholds)."""
    panels: list[dict[str, Any]] = []
    enabled = [r for r in rules if r.enabled and r.expr is None and r.anomaly is None]
    for index, spec in enumerate(CATALOG.values()):
        on_metric = [r for r in enabled if r.metric_name == spec.name]
        panels.append(_metric_panel(index + 1, spec, on_metric, namespace, 12 * (index % 2),
                                    8 * (index // 2)))  # fmt: skip
    y = 8 * ((len(CATALOG) + 1) // 2)
    alertlist = {
        "id": 10, "type": "alertlist", "title": "Alerts in Alertmanager",
        "gridPos": {"h": 8, "w": 12, "x": 0, "y": y}, "datasource": ALERTMANAGER,
        "options": {"alertInstanceLabelFilter": "", "groupMode": "default", "maxItems": 50,
                    "sortOrder": 1, "stateFilter": {"firing": True, "pending": False},
                    "viewMode": "list", "datasource": ALERTMANAGER_UID},
    }  # fmt: skip
    panels.append(alertlist)
    unacked = 'sum(alertbridge_stored_alerts{state="firing"}) or vector(0)'
    panels.append(_panel(11, "Unacknowledged alerts", "stat", 12, y, [_target(unacked, "firing")]))
    y += 8
    webhook = "sum by (code) (rate(alertbridge_webhook_requests_total[5m]))"
    errors = 'sum(rate(alertbridge_webhook_requests_total{code!="200"}[5m])) or vector(0)'
    requests = [_target(webhook, "{{code}}"), _target(errors, "errors", "B")]
    panels.append(_panel(12, "Webhook requests by code", "timeseries", 0, y, requests, "reqps"))
    states = "sum by (state, severity) (alertbridge_stored_alerts)"
    panels.append(_panel(13, "Stored alerts by state and severity", "timeseries", 12, y,
                         [_target(states, "{{state}} {{severity}}")]))  # fmt: skip
    y += 8
    tta = "sum by (le) (rate(alertbridge_time_to_acknowledge_seconds_bucket[1h]))"
    quantiles = [_target(f"histogram_quantile({q}, {tta})", f"p{round(q * 100)}", ref)
                 for q, ref in ((0.5, "A"), (0.9, "B"))]  # fmt: skip
    panels.append(_panel(14, "Time to acknowledge (1h window)", "timeseries", 0, y, quantiles,
                         "s"))  # fmt: skip
    y += 8
    for index, metric in enumerate(metrics):
        on_metric = [r for r in rules if r.enabled and r.metric_name == metric.name]
        expr = metric_expr(metric, namespace, 300).replace(
            f"{metric.series(namespace)}", f"{metric.series(namespace)}{INSTANCE}", 1
        )
        title = f"{metric.name} ({metric.type}{', ' + metric.unit if metric.unit else ''})"
        panels.append(_panel(
            100 + index, title, "timeseries", 12 * (index % 2), y + 8 * (index // 2),
            [_target(expr, "{{instance}}")], "short",
            {"thresholds": thresholds(on_metric), "custom": {"thresholdsStyle": {"mode": "line"}}},
        ))  # fmt: skip
    dashboard = {
        "uid": DASHBOARD_UID,
        "title": "alertbridge",
        "tags": ["alertbridge"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "instance",
                    "label": "instance",
                    "type": "query",
                    "datasource": PROMETHEUS,
                    "query": f'label_values(up{{job="{job}"}}, instance)',
                    "refresh": 2,
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }
    return json.dumps(dashboard, indent=2, sort_keys=True) + "\n"
