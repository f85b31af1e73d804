"""Rules of several conditions (`also:`, `match: all|any`): parsed and refused as a rule's
fields are, written back as entries, generated as one PromQL expression with a promtool unit
test, described in the alert, and decided in process (the equivalence with Prometheus:
tests/test_equivalence.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.core import rulebook
from bridge.core.errors import ConfigError, RuleError
from bridge.core.expressions import Annotations, alert_expr
from bridge.core.model import AlertRule
from bridge.core.rules import RuleSet, load_rules
from bridge.generate import RULES_PATH, TESTS_PATH, render_all, write_all
from bridge.host.tools import run_tool
from bridge.telemetry.evaluator import Evaluator
from bridge.telemetry.status import rule_states

ERRORS = {"metric": "errors.rate", "condition": ">", "threshold": 0.05}


def overloaded(**changes: object) -> AlertRule:
    entry = {"metric": "system.cpu.percent", "condition": ">", "threshold": 90,
             "severity": "critical", "for": 120, "also": [ERRORS]}  # fmt: skip
    rule = rulebook.rule_from("overloaded", entry)
    return rule.replace(**changes) if changes else rule


def test_the_expression_joins_the_conditions_per_instance() -> None:
    cpu = "max by (job, instance) (telemetry_system_cpu_usage_ratio) > 0.9"
    errors = ("sum by (job, instance) (rate(telemetry_operation_errors_total[5m])) / sum by"
              " (job, instance) (rate(telemetry_operations_total[5m])) > 0.05")  # fmt: skip
    assert alert_expr(overloaded(), "telemetry") == f"({cpu}) and on (job, instance) ({errors})"
    assert " or on (job, instance) " in alert_expr(overloaded(match="any"), "telemetry")
    custom = overloaded(also=[{"metric": "q", "expr": "sum(q)", "condition": ">=",
                               "threshold": 3}])  # fmt: skip
    assert alert_expr(custom, "telemetry").endswith("and on (job, instance) ((sum(q)) >= 3)")
    description = Annotations(overloaded()).render({"instance": "a"}, 0.95)["description"]
    assert description == ("system.cpu.percent is 95% on a (critical when > 90% and errors.rate"
                           " > 5% for 2m)")  # fmt: skip


@pytest.mark.parametrize(
    ("also", "match", "field"),
    [
        ([{"metric": "nope", "condition": ">", "threshold": 1}], "all", "also[0].metric"),
        ([{"metric": "errors.rate", "condition": "~", "threshold": 1}], "all",
         "also[0].condition"),
        ([{"metric": "errors.rate", "condition": ">"}], "all", "also[0].threshold"),
        ([{"metric": "errors.rate", "condition": ">", "threshold": 1, "x": 1}], "all",
         "also[0].x"),
        (["errors.rate > 1"], "all", "also[0]"),
        ([ERRORS], "most", "match"),
    ],
)  # fmt: skip
def test_a_wrong_condition_names_its_field(also: list[object], match: str, field: str) -> None:
    with pytest.raises(RuleError) as caught:
        overloaded(also=also, match=match)
    assert caught.value.field == field


def test_in_a_configuration_and_as_entries(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "rules:\n  - {name: overloaded, metric: system.cpu.percent, condition: '>',"
        " threshold: 90, severity: critical, for: 2m, match: all,"
        " also: [{metric: errors.rate, condition: '>', threshold: 0.05}]}\n"
    )
    rules = load_settings(path, {}).rules
    assert rules.get("overloaded") == overloaded()
    entries = rulebook.entries_of(rules)
    assert entries[0]["also"] == [ERRORS]
    assert load_rules(entries, "again") == rules
    record = rulebook.rule_record(overloaded())
    assert (record["also"], record["match"]) == ([ERRORS], "all")
    assert rulebook.update(rules, "overloaded", record) == rules  # what a GET shows goes back
    path.write_text("rules:\n  - {name: high_cpu, also: []}\n")
    with pytest.raises(ConfigError, match="cannot be changed on a default rule"):
        load_settings(path, {})


def test_the_generated_test_of_each_kind_passes_promtool(tmp_path: Path) -> None:
    """all and any each get a unit test of their own (not listed as untested); conditions on
    one metric do not, and say why."""
    from bridge.config import Settings

    band = overloaded(name="band", also=[{"metric": "system.cpu.percent", "condition": "<",
                                          "threshold": 99}])  # fmt: skip
    rules = RuleSet((overloaded(), overloaded(name="either", match="any"), band))
    artifacts = render_all(Settings(rules=rules))
    assert artifacts.untested == ["band (conditions on one metric, or a custom one)"]
    write_all(artifacts, tmp_path)
    tests = (tmp_path / TESTS_PATH).read_text()
    assert "overloaded: quiet until all hold" in tests
    assert "either: quiet until one holds" in tests
    assert run_tool("promtool", "check", "rules", str(tmp_path / RULES_PATH)).ok
    run = run_tool("promtool", "test", "rules", str(tmp_path / TESTS_PATH))
    assert run.ok, run.output


def test_the_evaluator_and_the_status_read_every_condition() -> None:
    clock = [0.0]
    evaluator = Evaluator([overloaded(for_seconds=0), overloaded(name="either", match="any",
                                                                 for_seconds=0)],
                          clock=lambda: clock[0])  # fmt: skip
    fired = evaluator.evaluate({"system.cpu.percent": 95, "errors.rate": 0.01})
    assert [a.rule_name for a in fired] == ["either"]
    fired = evaluator.evaluate({"system.cpu.percent": 95, "errors.rate": 0.1})
    assert [a.rule_name for a in fired] == ["overloaded"]
    alone = evaluator.evaluate({"errors.rate": 0.1})  # cpu unknown: all cannot hold
    assert {a.rule_name for a in evaluator.get_active_alerts()} == {"either"}
    assert alone == []
    states = {s["rule"]: s["state"] for s in rule_states([overloaded()],
                                                         {"system.cpu.percent": 95,
                                                          "errors.rate": 0.01})}  # fmt: skip
    assert states == {"overloaded": "OK"}
