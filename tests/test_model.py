"""AlertRule validation, durations and condition semantics."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bridge.core.errors import RuleError
from bridge.core.model import AlertRule, Condition, Severity
from bridge.core.times import format_duration, parse_duration

GOOD: dict[str, Any] = {
    "name": "high_cpu",
    "metric_name": "system.cpu.percent",
    "condition": ">",
    "threshold": 80,
    "severity": "warning",
}


def make(**changes: Any) -> AlertRule:
    return AlertRule(**{**GOOD, **changes})


def test_valid_rule_is_normalised() -> None:
    """Strings become enums, numbers floats, durations seconds, labels an immutable mapping."""
    rule = make(for_seconds="5m", window_seconds="10m", labels={"team": "search"})
    assert rule.condition is Condition.GT
    assert rule.severity is Severity.WARNING
    assert rule.threshold == 80.0
    assert isinstance(rule.threshold, float)
    assert (rule.for_seconds, rule.window_seconds) == (300, 600)
    assert rule.cooldown_seconds == 300
    with pytest.raises(TypeError):
        rule.labels["team"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"name": "high cpu"}, "name", "must match"),
        ({"name": ""}, "name", "must match"),
        ({"metric_name": ""}, "metric_name", "non-empty"),
        ({"metric_name": "disk.used"}, "metric_name", "unknown metric 'disk.used'"),
        ({"expr": "  "}, "expr", "non-empty PromQL"),
        ({"condition": "=>"}, "condition", "'=>' is not one of"),
        ({"severity": "fatal"}, "severity", "'fatal' is not one of info|warning|error|critical"),
        ({"threshold": "80"}, "threshold", "must be a number"),
        ({"threshold": True}, "threshold", "must be a number"),
        ({"threshold": math.nan}, "threshold", "must be finite"),
        ({"threshold": math.inf}, "threshold", "must be finite"),
        ({"cooldown_seconds": -1}, "cooldown_seconds", "must be >= 0"),
        ({"cooldown_seconds": "5m"}, "cooldown_seconds", "must be a number"),
        ({"cooldown_seconds": math.inf}, "cooldown_seconds", "must be >= 0"),
        ({"for_seconds": "5 minutes"}, "for_seconds", "expected a duration"),
        ({"for_seconds": -5}, "for_seconds", "non-negative"),
        ({"window_seconds": 0}, "window_seconds", "must be positive"),
        ({"enabled": "yes"}, "enabled", "must be true or false"),
        ({"description": 5}, "description", "must be a string"),
        ({"labels": ["team"]}, "labels", "must be a mapping"),
        ({"labels": {"team-name": "x"}}, "labels", "not a valid Prometheus label name"),
        ({"labels": {"__meta": "x"}}, "labels", "not a valid Prometheus label name"),
        ({"labels": {"severity": "x"}}, "labels", "set by the rule itself"),
        ({"labels": {"team": 5}}, "labels", "must be a string"),
    ],
)
def test_invalid_rule_names_rule_and_field(
    changes: dict[str, Any], field: str, fragment: str
) -> None:
    """Each invalid field raises RuleError naming the rule and the field."""
    with pytest.raises(RuleError) as info:
        make(**changes)
    assert info.value.field == field
    assert fragment in str(info.value)
    assert f"rule {changes.get('name', 'high_cpu')}" in str(info.value)


def test_custom_metric_needs_expr() -> None:
    """An unknown metric is fine with a raw PromQL expr, and its threshold is not converted."""
    rule = make(metric_name="queue.depth", expr="sum(queue_depth)", threshold=100)
    assert rule.spec is None
    assert rule.threshold_base == 100.0
    assert rule.unit == ""


@pytest.mark.parametrize(
    ("metric", "seed", "base"),
    [
        ("system.cpu.percent", 80, 0.8),
        ("system.cpu.percent", 95, 0.95),
        ("system.memory.used_mb", 2048, 2048 * 1024 * 1024),
        ("search.latency.p95", 1000, 1.0),
        ("ingestion.throughput", 5, 5.0),
        ("errors.rate", 0.05, 0.05),
    ],
)
def test_threshold_converted_to_base_units_exactly(metric: str, seed: float, base: float) -> None:
    """Seed units become base units with no float residue (80 % is exactly 0.8)."""
    assert make(metric_name=metric, threshold=seed).threshold_base == base


@pytest.mark.parametrize(
    ("cond", "value", "expected"),
    [
        (">", 80.0, False),
        (">", 80.0001, True),
        (">=", 80.0, True),
        ("<", 80.0, False),
        ("<=", 80.0, True),
        ("==", 80.0, True),
        ("!=", 80.0, False),
        ("!=", 79.0, True),
    ],
)
def test_holds_compares_in_base_units(cond: str, value: float, expected: bool) -> None:
    """The verdict at, below and above the threshold follows the condition."""
    assert make(condition=cond).holds(value) is expected


def test_nan_never_holds_except_not_equal() -> None:
    """NaN compares like IEEE (and PromQL): only != holds."""
    for cond in Condition:
        assert cond.holds(math.nan, 1.0) is (cond is Condition.NE)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1d", 86400), ("0", 0), (90, 90), (0, 0),
     ("1w", 604800), ("1y", 31536000), ("1m1000ms", 61)],
)  # fmt: skip
def test_parse_duration(text: str | int, seconds: int) -> None:
    """Prometheus duration strings and whole seconds are accepted."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    ["", "5x", "m5", "1.5m", -1, 1.5, True, None, math.nan, "5m2h", "1s1s", "\u0661s", "1ms",
     "999999999999d", "-5m"],
)  # fmt: skip
def test_parse_duration_rejects(bad: object) -> None:
    """Anything else is a ValueError with the offending value: units out of order or repeated,
    non-ASCII digits, fractions of a second, beyond Go's 292-year Duration."""
    with pytest.raises(ValueError, match="expected"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (300, "5m"), (5400, "1h30m"), (90061, "1d1h1m1s")]
)
def test_format_duration_round_trips(seconds: int, text: str) -> None:
    """Formatting gives Prometheus text that parses back to the same seconds."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def test_severity_order() -> None:
    """info < warning < error < critical."""
    assert [s.rank for s in Severity] == [0, 1, 2, 3]


def test_replace_revalidates() -> None:
    """replace() builds a new validated rule."""
    with pytest.raises(RuleError, match="threshold"):
        make().replace(threshold=math.nan)
