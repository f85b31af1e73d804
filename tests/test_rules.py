"""The default rule set and merging rules from config."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.core.errors import RuleError
from bridge.core.rules import DEFAULT_RULES, RuleSet, load_rules

# DESIGN.md's table, in base units: (name, metric, condition, threshold in base units, severity)
DESIGN_TABLE = [
    ("high_cpu", "system.cpu.percent", ">", 0.80, "warning"),
    ("critical_cpu", "system.cpu.percent", ">", 0.95, "critical"),
    ("high_memory", "system.memory.used_mb", ">", 2048 * 2**20, "warning"),
    ("critical_memory", "system.memory.used_mb", ">", 2560 * 2**20, "critical"),
    ("slow_search", "search.latency.p95", ">", 1.0, "warning"),
    ("very_slow_search", "search.latency.p95", ">", 2.0, "critical"),
    ("low_throughput", "ingestion.throughput", "<", 5.0, "warning"),
    ("very_low_throughput", "ingestion.throughput", "<", 1.0, "critical"),
    ("high_error_rate", "errors.rate", ">", 0.05, "warning"),
    ("critical_error_rate", "errors.rate", ">", 0.10, "critical"),
]


def test_defaults_match_design_table() -> None:
    """The ten defaults are exactly DESIGN.md's, thresholds converted to base units."""
    got = [
        (r.name, r.metric_name, r.condition.value, r.threshold_base, r.severity.value)
        for r in DEFAULT_RULES
    ]
    assert got == DESIGN_TABLE
    assert all(r.cooldown_seconds == 300 and r.enabled for r in DEFAULT_RULES)


def test_no_entries_gives_defaults() -> None:
    """An absent rules: section is the default set."""
    assert load_rules(None, "c.yml").rules == DEFAULT_RULES


def test_override_disable_and_add() -> None:
    """Overrides change only named fields; enabled: false disables; new names append rules."""
    rules = load_rules(
        [
            {"name": "high_cpu", "threshold": 85, "for": "10m", "labels": {"team": "infra"}},
            {"name": "critical_memory", "enabled": False},
            {"name": "low_throughput", "severity": "info", "cooldown_seconds": 60},
            {
                "name": "queue_backlog",
                "metric": "queue.depth",
                "expr": "sum by (job, instance) (queue_depth)",
                "condition": ">=",
                "threshold": 1000,
                "severity": "error",
            },
        ],
        "c.yml",
    )
    high = rules.get("high_cpu")
    assert high is not None
    assert (high.threshold, high.for_seconds, dict(high.labels)) == (85.0, 600, {"team": "infra"})
    assert high.severity.value == "warning"
    critical_memory = rules.get("critical_memory")
    assert critical_memory is not None
    assert critical_memory.enabled is False
    assert "critical_memory" not in [r.name for r in rules.enabled]
    low = rules.get("low_throughput")
    assert low is not None
    assert (low.severity.value, low.cooldown_seconds) == ("info", 60)
    assert [r.name for r in rules][-1] == "queue_backlog"
    assert len(rules) == 11


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"name": "x"}, "c.yml: rule -: rules: must be a list"),
        (["high_cpu"], "c.yml: rule #1: -: each rule entry must be a mapping"),
        ([{"threshold": 1}], "c.yml: rule #1: name: every rule entry needs a name"),
        (
            [{"name": "high_cpu", "threshold": 1}, {"name": "high_cpu", "threshold": 2}],
            "c.yml: rule high_cpu: name: duplicate rule name",
        ),
        (
            [{"name": "high_cpu", "threshhold": 85}],
            "c.yml: rule high_cpu: threshhold: unknown field",
        ),
        (
            [{"name": "high_cpu", "metric": "errors.rate"}],
            "c.yml: rule high_cpu: metric: cannot be changed on a default rule",
        ),
        (
            [{"name": "high_cpu", "condition": "<"}],
            "c.yml: rule high_cpu: condition: cannot be changed on a default rule",
        ),
        (
            [{"name": "disk_full", "metric": "disk.used", "condition": ">", "severity": "info"}],
            "c.yml: rule disk_full: threshold: required for a new rule",
        ),
        (
            [
                {
                    "name": "disk_full",
                    "metric": "disk.used",
                    "condition": ">",
                    "threshold": 1,
                    "severity": "info",
                }
            ],
            "c.yml: rule disk_full: metric: unknown metric 'disk.used'",
        ),
        (
            [{"name": "high_cpu", "threshold": "high"}],
            "c.yml: rule high_cpu: threshold: must be a number",
        ),
        ([{"name": "high_cpu", "for": "soon"}], "c.yml: rule high_cpu: for: expected a duration"),
        ([{"name": "high_cpu", "severity": "page"}], "c.yml: rule high_cpu: severity: 'page'"),
    ],
)
def test_config_errors_name_file_and_rule(entries: Any, message: str) -> None:
    """Every rule-config error names the file, the rule and the field."""
    with pytest.raises(RuleError) as info:
        load_rules(entries, "c.yml")
    assert str(info.value).startswith(message)


def test_ruleset_rejects_duplicate_names() -> None:
    """A RuleSet built in code refuses two rules of one name."""
    with pytest.raises(RuleError, match="duplicate rule name"):
        RuleSet((DEFAULT_RULES[0], DEFAULT_RULES[0]))
