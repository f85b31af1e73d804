"""Anomaly rules (`anomaly: stddev | week`): a value too many standard deviations from the
mean of its trailing window, or too far from the same time a week before; generated as PromQL
with a promtool unit test, and decided in process the same way (the embedded evaluator's
firing minute and value equal those promtool confirmed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Settings
from bridge.core.errors import RuleError
from bridge.core.expressions import alert_expr
from bridge.core.rules import RuleSet, load_rules
from bridge.core.times import NS, parse_duration
from bridge.generate import RULES_PATH, TESTS_PATH, render_all, write_all
from bridge.generate.prometheus import _anomaly_test
from bridge.host.tools import run_tool
from bridge.store import AlertQuery, open_store
from bridge.telemetry.embedded import EmbeddedEvaluator
from bridge.telemetry.exporter import Telemetry

ODD = {"name": "cpu_odd", "metric": "system.cpu.percent", "anomaly": "stddev", "over": "30m",
       "condition": ">", "threshold": 2.5, "severity": "warning", "for": "2m"}  # fmt: skip
WEEK = {"name": "cpu_week", "metric": "system.cpu.percent", "anomaly": "week",
        "condition": ">", "threshold": 2, "severity": "info"}  # fmt: skip


def rule_of(entry: dict[str, Any]) -> Any:
    return load_rules([entry], "t", defaults=()).get(entry["name"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"anomaly": "zscore"}, "anomaly"),
        ({"condition": "<"}, "condition"),
        ({"threshold": 0}, "threshold"),
        ({"over": "1m"}, "over"),
        ({"also": [{"metric": "errors.rate", "condition": ">", "threshold": 1}]}, "also"),
    ],
)  # fmt: skip
def test_a_wrong_anomaly_rule_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RuleError) as caught:
        rule_of({**ODD, **change})
    assert caught.value.field == field
    with pytest.raises(RuleError, match="a ratio above 1"):
        rule_of({**WEEK, "threshold": 0.5})


def test_the_expressions() -> None:
    m = "max by (job, instance) (telemetry_system_cpu_usage_ratio)"
    assert alert_expr(rule_of(ODD), "telemetry") == (
        f"(abs(({m}) - avg_over_time(({m})[30m:1m])) / stddev_over_time(({m})[30m:1m])) > 2.5"
    )
    ratio = f"(({m}) / last_over_time(({m})[5m:1m] offset 1w))"
    assert alert_expr(rule_of(WEEK), "telemetry") == f"{ratio} > 2 or {ratio} < 0.5"


def test_the_generated_tests_pass_promtool(tmp_path: Path) -> None:
    quick = rule_of({**ODD, "name": "quick", "for": 0, "over": "1h", "threshold": 3})
    rules = RuleSet((rule_of(ODD), quick, rule_of({**WEEK, "for": "10m"})))
    artifacts = render_all(Settings(rules=rules))
    assert artifacts.untested == []
    write_all(artifacts, tmp_path)
    assert run_tool("promtool", "check", "rules", str(tmp_path / RULES_PATH)).ok
    run = run_tool("promtool", "test", "rules", str(tmp_path / TESTS_PATH), timeout=120)
    assert run.ok, run.output


async def test_the_embedded_evaluator_fires_when_and_as_promtool_confirmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The series of the generated stddev test, one value a minute into the telemetry the
    embedded evaluator reads: it fires at the test's firing minute, with the description
    promtool confirmed (test_the_generated_tests_pass_promtool)."""
    rule = rule_of(ODD)
    test = _anomaly_test(rule, "telemetry")
    assert test is not None
    values = [float(v) for v in test["input_series"][0]["values"].split()]
    firing = test["alert_rule_test"][1]
    fire_minute = parse_duration(firing["eval_time"]) // 60
    start = 1_800_000_000 * NS
    at = [start]
    monkeypatch.setattr("bridge.telemetry.embedded.now_ns", lambda: at[0])
    store = open_store(tmp_path / "a.db")
    await store.start()
    try:
        telemetry = Telemetry()
        embedded = EmbeddedEvaluator([rule], telemetry, "app", "app-1:8080",
                                     clock=lambda: at[0] / NS)  # fmt: skip
        fired_at = None
        for minute, value in enumerate(values[: fire_minute + 1]):  # (then its value moves on)
            at[0] = start + minute * 60 * NS
            telemetry.set_system(cpu_ratio=value, memory_bytes=1.0)
            result = await embedded.evaluate_once(store)
            if result.fired and fired_at is None:
                fired_at = minute
        assert fired_at == fire_minute
        (alert,) = await store.list_alerts(AlertQuery())
        expected = firing["exp_alerts"][0]["exp_annotations"]["description"]
        assert alert.annotations["description"] == expected
    finally:
        await store.close()
    assert yaml.safe_dump(test)  # (the test is plain data)


def test_the_embedded_week_score_is_the_ratio_to_a_week_before() -> None:
    """Every minute of a week at 0.5, then 1.5 now: the score is 3 (over 2: holds); 0.2 now:
    0.4 (under 1/2: holds too); 0.6: 1.2 (holds neither way)."""
    from bridge.telemetry.embedded import WEEK_MINUTES

    rule = rule_of(WEEK)
    embedded = EmbeddedEvaluator([rule], Telemetry(), "app", "a:1")
    now = 20_000_000
    minutes = range(now - WEEK_MINUTES - 3, now)
    embedded._minutes["system.cpu.percent"] = dict.fromkeys(minutes, 0.5)
    for value, score, holds in ((1.5, 3.0, True), (0.2, 0.4, True), (0.6, 1.2, False)):
        got = embedded._anomalies({"system.cpu.percent": value}, now * 60 * NS)
        assert got[rule.input_key] == pytest.approx(score)
        assert rule.holds(got[rule.input_key]) is holds


def test_an_anomaly_rule_neither_silences_nor_is_silenced_nor_draws_a_threshold() -> None:
    import json

    from bridge.generate import ALERTMANAGER_PATH, DASHBOARD_PATH

    rules = RuleSet((*RuleSet.default(), rule_of(ODD)))
    files = render_all(Settings(rules=rules)).files
    inhibits = yaml.safe_load(files[ALERTMANAGER_PATH])["inhibit_rules"]
    named = {m for r in inhibits for m in r["source_matchers"] + r["target_matchers"]}
    assert 'alertname="cpu_odd"' not in named
    assert 'alertname="high_cpu"' in named
    panels = json.loads(files[DASHBOARD_PATH])["panels"]
    cpu = next(p for p in panels if p["title"].startswith("system.cpu.percent"))
    steps = [s["value"] for s in cpu["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    assert steps == [None, 0.8, 0.95]  # high_cpu and critical_cpu, not the anomaly's 2.5
