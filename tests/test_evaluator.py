"""The in-process evaluator: for, cooldown, acknowledgement, callbacks and limits."""

from __future__ import annotations

import logging

import pytest

from bridge.core.model import AlertRule, Severity
from bridge.core.rules import DEFAULT_RULES
from bridge.telemetry.evaluator import Alert, Evaluator


class Clock:
    """A controllable clock."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def cpu_rule(**changes: object) -> AlertRule:
    base = AlertRule("high_cpu", "system.cpu.percent", ">", 80, "warning")  # type: ignore[arg-type]
    return base.replace(**changes)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_fires_only_after_for(clock: Clock) -> None:
    """Pending until the condition has held for `for`; then one alert."""
    ev = Evaluator([cpu_rule(for_seconds=60)], clock=clock)
    assert ev.evaluate({"system.cpu.percent": 90}) == []
    clock.now += 59
    assert ev.evaluate({"system.cpu.percent": 90}) == []
    clock.now += 1
    (alert,) = ev.evaluate({"system.cpu.percent": 90})
    assert (alert.rule_name, alert.severity, alert.value) == ("high_cpu", Severity.WARNING, 90)
    assert dict(alert.labels) == {"severity": "warning"}


def test_pending_resets_when_condition_breaks(clock: Clock) -> None:
    """A dip below the threshold restarts the `for` timer, as in Prometheus."""
    ev = Evaluator([cpu_rule(for_seconds=60)], clock=clock)
    ev.evaluate({"system.cpu.percent": 90})
    clock.now += 50
    ev.evaluate({"system.cpu.percent": 10})
    clock.now += 20
    assert ev.evaluate({"system.cpu.percent": 90}) == []


def test_cooldown_per_rule_and_labels(clock: Clock) -> None:
    """Repeats at most once per cooldown per (rule, labels); other label sets are independent."""
    ev = Evaluator([cpu_rule(cooldown_seconds=300)], clock=clock)
    a = ev.evaluate({"system.cpu.percent": 90}, {"instance": "a"})
    b = ev.evaluate({"system.cpu.percent": 90}, {"instance": "b"})
    assert len(a) == len(b) == 1
    assert a[0].id != b[0].id
    clock.now += 299
    assert ev.evaluate({"system.cpu.percent": 90}, {"instance": "a"}) == []
    clock.now += 1
    (repeat,) = ev.evaluate({"system.cpu.percent": 90}, {"instance": "a"})
    assert repeat.id == a[0].id
    assert repeat.notify_count == 2


def test_flapping_within_cooldown_is_not_renotified(clock: Clock) -> None:
    """Resolve and re-fire inside the cooldown: a new episode is recorded but not notified."""
    ev = Evaluator([cpu_rule(cooldown_seconds=300)], clock=clock)
    (first,) = ev.evaluate({"system.cpu.percent": 90})
    clock.now += 10
    result = ev.step({"system.cpu.percent": 50})
    assert result.resolved == [first]
    assert first.resolved_at == clock.now
    clock.now += 10
    result = ev.step({"system.cpu.percent": 90})
    assert len(result.fired) == 1
    assert result.notified == []
    clock.now += 300
    assert [a.id for a in ev.evaluate({"system.cpu.percent": 90})] == [result.fired[0].id]


def test_missing_metric_resolves_like_absent_series(clock: Clock) -> None:
    """No value for a rule's metric yields no verdict: a firing alert resolves."""
    ev = Evaluator([cpu_rule()], clock=clock)
    ev.evaluate({"system.cpu.percent": 90})
    assert len(ev.step({}).resolved) == 1
    assert ev.get_active_alerts() == []


def test_acknowledge_hides_and_stops_repeats(clock: Clock) -> None:
    """An acknowledged alert leaves get_active_alerts and is not repeated; unknown ids say False."""
    ev = Evaluator([cpu_rule(cooldown_seconds=0)], clock=clock)
    (alert,) = ev.evaluate({"system.cpu.percent": 90})
    assert ev.get_active_alerts() == [alert]
    assert ev.acknowledge(alert.id) is True
    assert ev.get_active_alerts() == []
    clock.now += 10
    assert ev.evaluate({"system.cpu.percent": 90}) == []
    assert ev.acknowledge(9999) is False


def test_callbacks_filtered_by_severity_and_isolated(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Callbacks get alerts at or above the threshold; one that raises is logged, others run."""
    rules = [
        r.replace(for_seconds=0) for r in DEFAULT_RULES if r.metric_name == "system.cpu.percent"
    ]
    ev = Evaluator(rules, notification_severity_threshold=Severity.CRITICAL, clock=clock)
    seen: list[Alert] = []

    def broken(alert: Alert) -> None:
        raise RuntimeError("smtp down")

    ev.set_notification_callback(broken)
    ev.add_notification_callback(seen.append)
    with caplog.at_level(logging.ERROR, logger="bridge.telemetry.evaluator"):
        notified = ev.evaluate({"system.cpu.percent": 97})
    assert [a.rule_name for a in notified] == ["high_cpu", "critical_cpu"]
    assert [a.rule_name for a in seen] == ["critical_cpu"]
    assert ev.callback_errors == 1
    assert "notification callback" in caplog.text


def test_disabled_evaluator_and_rules(clock: Clock) -> None:
    """enabled=False evaluates nothing; a disabled rule never fires."""
    ev = Evaluator([cpu_rule()], enabled=False, clock=clock)
    assert ev.evaluate({"system.cpu.percent": 99}) == []
    ev = Evaluator([cpu_rule(enabled=False)], clock=clock)
    assert ev.evaluate({"system.cpu.percent": 99}) == []


def test_add_and_remove_rule(clock: Clock) -> None:
    """Rules can be added, replaced and removed; removal forgets their alerts."""
    ev = Evaluator(clock=clock)
    ev.add_rule(cpu_rule())
    ev.add_rule(cpu_rule(threshold=95))
    assert [r.threshold for r in ev.rules] == [95]
    assert ev.evaluate({"system.cpu.percent": 90}) == []
    assert len(ev.evaluate({"system.cpu.percent": 96})) == 1
    assert ev.remove_rule("high_cpu") is True
    assert ev.get_active_alerts() == []
    assert ev.remove_rule("high_cpu") is False


def test_max_active_alerts_evicts_oldest(clock: Clock) -> None:
    """Beyond max_active_alerts the oldest active alert is dropped and counted."""
    ev = Evaluator([cpu_rule()], max_active_alerts=2, clock=clock)
    for instance in ("a", "b", "c"):
        ev.evaluate({"system.cpu.percent": 90}, {"instance": instance})
        clock.now += 1
    assert [a.labels["instance"] for a in ev.get_active_alerts()] == ["b", "c"]
    assert ev.evicted == 1
