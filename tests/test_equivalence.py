"""The in-process evaluator's verdicts equal Prometheus's on the generated rules (promtool judges).

For every default rule and values just below, at and just above its threshold, the evaluator
decides whether the alert fires; a promtool unit test then asserts exactly that verdict (with
the same labels and rendered annotations) against the generated rule file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.core.catalog import Kind
from bridge.core.expressions import Annotations, alert_labels
from bridge.core.model import AlertRule
from bridge.core.rules import DEFAULT_RULES, load_rules
from bridge.core.times import format_duration
from bridge.generate.fixtures import TEST_LABELS, Timing, fixture_for
from bridge.generate.prometheus import RULES_FILE, render_rules
from bridge.host.tools import run_tool
from bridge.telemetry.evaluator import Evaluator

pytestmark = pytest.mark.e2e
POINTS = ("below", "at", "above")


def _case(rule: AlertRule, point: str) -> tuple[dict[str, Any], bool]:
    spec = rule.spec
    assert spec is not None
    timing = Timing.for_rule(rule.window_seconds, rule.for_seconds)
    fixture = fixture_for(spec, "telemetry", timing)
    factor = {"below": -1, "at": 0, "above": 1}[point]
    if spec.kind is Kind.GAUGE:
        # The application reports seed units; the exporter publishes to_base() of them.
        seed = rule.threshold * (1 + factor * 1e-6)
        level = fixture.level(spec.to_base(seed))
    else:
        # Counter increments are whole numbers: widen the nudge until the value really moves.
        for nudge in (1e-4, 1e-3, 1e-2):
            level = fixture.level(rule.threshold_base * (1 + factor * nudge))
            if factor == 0 or fixture.measured(level) != rule.threshold_base:
                break
        seed = spec.from_base(fixture.measured(level))
    measured = fixture.measured(level)
    if point == "at":
        assert measured == rule.threshold_base, "the 'at' input must hit the threshold exactly"
    else:
        assert (measured > rule.threshold_base) == (factor > 0)

    clock = [0.0]
    evaluator = Evaluator([rule], clock=lambda: clock[0])
    evaluator.evaluate({rule.metric_name: seed}, TEST_LABELS)
    clock[0] = float(rule.for_seconds)
    evaluator.evaluate({rule.metric_name: seed}, TEST_LABELS)
    fires = bool(evaluator.get_active_alerts())

    hold = timing.window_steps + timing.for_steps + 3
    labels = {**TEST_LABELS, **alert_labels(rule)}
    expected = (
        [{"exp_labels": labels, "exp_annotations": Annotations(rule).render(labels, measured)}]
        if fires
        else []
    )
    group = {
        "name": f"{rule.name} {point}",
        "interval": format_duration(timing.step),
        "input_series": fixture.input_series([(level, hold)]),
        "alert_rule_test": [
            {
                "eval_time": format_duration((hold - 1) * timing.step),
                "alertname": rule.name,
                "exp_alerts": expected,
            }
        ],
    }
    return group, fires


def test_evaluator_verdicts_equal_promtool(tmp_path: Path) -> None:
    """30 cases (10 rules x below/at/above): promtool confirms each in-process verdict."""
    rules = list(DEFAULT_RULES)
    (tmp_path / RULES_FILE).write_text(render_rules(rules, "telemetry"))
    groups, verdicts = [], {}
    for rule in rules:
        for point in POINTS:
            group, fires = _case(rule, point)
            groups.append(group)
            verdicts[rule.name, point] = fires
    tests = tmp_path / "equivalence.test.yml"
    tests.write_text(
        yaml.safe_dump(
            {"rule_files": [RULES_FILE], "evaluation_interval": "1m", "tests": groups},
            sort_keys=False,
        )
    )
    result = run_tool("promtool", "test", "rules", str(tests), timeout=300)
    assert result.ok, result.output
    # Not a tautology: each rule fires on one side of its threshold and not on the other.
    for rule in rules:
        sides = {verdicts[rule.name, "below"], verdicts[rule.name, "above"]}
        assert sides == {True, False}, rule.name
    # Strict conditions do not fire at the threshold itself.
    assert not any(verdicts[r.name, "at"] for r in rules)


SEVERAL = list(load_rules([
    {"name": "overloaded", "metric": "system.cpu.percent", "condition": ">", "threshold": 90,
     "severity": "critical", "for": "2m",
     "also": [{"metric": "errors.rate", "condition": ">", "threshold": 0.05}]},
    {"name": "anything_wrong", "metric": "search.latency.p95", "condition": ">",
     "threshold": 3000, "severity": "warning", "match": "any",
     "also": [{"metric": "ingestion.throughput", "condition": "<", "threshold": 0.5}]},
], "t", defaults=()))  # fmt: skip


def _fires(rule: AlertRule, seeds: dict[str, float]) -> bool:
    """The evaluator's verdict once the rule's `for` has passed."""
    clock = [0.0]
    evaluator = Evaluator([rule], clock=lambda: clock[0])
    evaluator.evaluate(seeds, TEST_LABELS)
    clock[0] = float(rule.for_seconds)
    evaluator.evaluate(seeds, TEST_LABELS)
    return bool(evaluator.get_active_alerts())


def test_rules_of_several_conditions_decide_as_prometheus(tmp_path: Path) -> None:
    """Each rule of two conditions on every combination of each condition held or not:
    the evaluator's verdict (all: both; any: either) and value, confirmed by promtool on
    the generated rule."""
    from bridge.generate.prometheus import _level

    (tmp_path / RULES_FILE).write_text(render_rules(SEVERAL, "telemetry"))
    groups, verdicts = [], {}
    for rule in SEVERAL:
        timing = Timing.for_rule(rule.window_seconds, rule.for_seconds)
        conditions = [(rule.spec, rule.threshold_base, rule.condition),
                      *((c.spec, c.threshold_base, c.condition) for c in rule.also)]  # fmt: skip
        fixtures = [fixture_for(spec, "telemetry", timing) for spec, _, _ in conditions if spec]
        for combo in ((True, True), (True, False), (False, True), (False, False)):
            levels = [_level(t, cond, fx, held) for (_, t, cond), fx, held
                      in zip(conditions, fixtures, combo, strict=True)]  # fmt: skip
            measured = [fx.measured(level) for fx, level in zip(fixtures, levels, strict=True)]
            seeds = {spec.name: spec.from_base(m) for (spec, _, _), m
                     in zip(conditions, measured, strict=True) if spec}  # fmt: skip
            fired = _fires(rule, seeds)
            verdicts[rule.name, combo] = fired
            hold = timing.window_steps + timing.for_steps + 3
            labels = {**TEST_LABELS, **alert_labels(rule)}
            shown = next((m for m, held in zip(measured, combo, strict=True) if held), 0.0)
            if rule.match == "all":
                shown = measured[0]
            expected = ([{"exp_labels": labels,
                          "exp_annotations": Annotations(rule).render(labels, shown)}]
                        if fired else [])  # fmt: skip
            series = [s for fx, level in zip(fixtures, levels, strict=True)
                      for s in fx.input_series([(level, hold)])]  # fmt: skip
            at = format_duration((hold - 1) * timing.step)
            check = {"eval_time": at, "alertname": rule.name, "exp_alerts": expected}
            groups.append({"name": f"{rule.name} {combo}", "input_series": series,
                           "interval": format_duration(timing.step),
                           "alert_rule_test": [check]})  # fmt: skip
    tests = tmp_path / "several.test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [RULES_FILE], "evaluation_interval": "1m",
                                     "tests": groups}, sort_keys=False))  # fmt: skip
    result = run_tool("promtool", "test", "rules", str(tests), timeout=300)
    assert result.ok, result.output
    combos = ((True, True), (True, False), (False, True), (False, False))
    assert [verdicts["overloaded", c] for c in combos] == [True, False, False, False]
    assert [verdicts["anything_wrong", c] for c in combos] == [True, True, True, False]
