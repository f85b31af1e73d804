"""Rule-by-rule state of a telemetry snapshot: OK, or the severity of each rule that holds."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bridge.core.model import AlertRule


def rule_states(rules: Iterable[AlertRule], metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """For each enabled rule: its value (seed units), threshold and state OK|SEVERITY|NO_DATA."""
    out = []
    for rule in rules:
        if not rule.enabled:
            continue
        value = metrics.get(rule.metric_name)
        if value is None:
            state = "NO_DATA"
        elif rule.holds_in(metrics) is not None:
            state = rule.severity.value.upper()
        else:
            state = "OK"
        out.append(
            {
                "rule": rule.name,
                "metric": rule.metric_name,
                "value": value,
                "condition": rule.condition.value,
                "threshold": rule.threshold,
                "unit": rule.unit,
                "severity": rule.severity.value,
                "state": state,
            }
        )
    return out
