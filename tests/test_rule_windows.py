"""Rules with a window (`when:`, as escalation windows are written): outside it Prometheus
fires the alert and Alertmanager holds its notifications (active_time_intervals in the rule's
time zone), and the embedded evaluator holds it the same way."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import Settings, load_settings
from bridge.core import rulebook
from bridge.core.errors import RuleError
from bridge.core.rules import RuleSet, load_rules
from bridge.core.times import NS
from bridge.generate import ALERTMANAGER_PATH, render_all, write_all
from bridge.generate.check import run_checks
from bridge.store import AlertQuery, open_store
from bridge.telemetry.embedded import EmbeddedEvaluator
from bridge.telemetry.exporter import Telemetry

OFFICE = {"timezone": "Europe/Paris", "days": ["mon", "tue", "wed", "thu", "fri"],
          "hours": "08:00-20:00"}  # fmt: skip


def test_a_window_is_read_written_back_and_refused_naming_its_field() -> None:
    rules = load_rules([{"name": "high_cpu", "when": OFFICE}], "t")
    rule = rules.get("high_cpu")
    assert rule is not None
    assert rule.when is not None
    assert rule.when.describe() == "mon,tue,wed,thu,fri 08:00-20:00 Europe/Paris"
    assert rulebook.entries_of(rules) == [{"name": "high_cpu", "when": OFFICE}]
    assert rulebook.rule_record(rule)["when"] == OFFICE
    for bad, field in (({**OFFICE, "hours": "8-20"}, "when.hours"),
                       ({**OFFICE, "timezone": "Mars/Olympus"}, "when.timezone"),
                       ("weekdays", "when")):  # fmt: skip
        with pytest.raises(RuleError) as caught:
            load_rules([{"name": "high_cpu", "when": bad}], "t")
        assert caught.value.field == field


def test_alertmanager_notifies_a_windowed_rule_only_within_its_window(tmp_path: Path) -> None:
    """Its route holds every notification of its alerts (the bridge's, and the channel its
    severity reaches) in `rule-NAME`, in the zone; a window across midnight is two parts;
    amtool accepts the file and every route test passes."""
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({
        "alertmanager": {"receivers": [{"name": "ops", "type": "webhook",
                                        "severities": ["warning"],
                                        "config": {"url": "http://127.0.0.1:1/x"}}]},
        "rules": [{"name": "high_cpu", "when": OFFICE},
                  {"name": "night", "metric": "system.cpu.percent", "condition": ">",
                   "threshold": 50, "severity": "critical",
                   "when": {"timezone": "UTC", "days": ["sat"], "hours": "22:00-06:00"}}],
    }))  # fmt: skip
    settings = load_settings(config, {})
    write_all(render_all(settings), tmp_path)
    doc = yaml.safe_load((tmp_path / ALERTMANAGER_PATH).read_text())
    intervals = {t["name"]: t["time_intervals"][0] for t in doc["time_intervals"]}
    assert intervals["rule-high_cpu"] == {
        "weekdays": ["monday", "tuesday", "wednesday", "thursday", "friday"],
        "times": [{"start_time": "08:00", "end_time": "20:00"}],
        "location": "Europe/Paris",
    }
    assert intervals["rule-night"]["times"] == [
        {"start_time": "22:00", "end_time": "24:00"},
        {"start_time": "00:00", "end_time": "06:00"},
    ]
    route = next(r for r in doc["route"]["routes"] if r["matchers"] == ['alertname="high_cpu"'])
    assert route["continue"] is False
    assert [(c["receiver"], c["active_time_intervals"]) for c in route["routes"]] == [
        ("alertbridge", ["rule-high_cpu"]),
        ("ops", ["rule-high_cpu"]),
    ]
    night = next(r for r in doc["route"]["routes"] if r["matchers"] == ['alertname="night"'])
    assert [c["receiver"] for c in night["routes"]] == ["alertbridge"]  # ops: warnings only
    failed = [r for r in run_checks(settings, tmp_path) if not r.ok]
    assert failed == []
    assert Settings().rules == RuleSet.default()  # (the defaults have no window)


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = open_store(tmp_path / "a.db")
    await opened.start()
    yield opened
    await opened.close()


async def test_the_embedded_evaluator_holds_what_fires_outside_the_window(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saturday 10:00 in Paris: high_cpu (office hours) fires but is not stored; Monday
    09:00 it is stored, from when it fired; one that resolves while held is never stored."""
    at = [int(dt.datetime(2026, 12, 5, 9, 0, tzinfo=dt.UTC).timestamp()) * NS]  # Sat 10:00
    monkeypatch.setattr("bridge.telemetry.embedded.now_ns", lambda: at[0])
    rule = load_rules([{"name": "high_cpu", "for": 0, "when": OFFICE}], "t").get("high_cpu")
    assert rule is not None
    telemetry = Telemetry()
    embedded = EmbeddedEvaluator([rule], telemetry, "alertbridge", "a:1",
                                 clock=lambda: at[0] / NS)  # fmt: skip
    telemetry.set_system(cpu_ratio=0.9, memory_bytes=1.0)
    await embedded.evaluate_once(store)
    assert await store.list_alerts(AlertQuery()) == []
    fired_at = at[0]
    at[0] += (2 * 86400 - 3600) * NS  # Monday 09:00 in Paris
    await embedded.evaluate_once(store)
    (alert,) = await store.list_alerts(AlertQuery())
    assert (alert.alertname, alert.status) == ("high_cpu", "firing")
    assert alert.starts_at // 1_000_000 == fired_at // 1_000_000  # from when it fired
    telemetry.set_system(cpu_ratio=0.1)
    await embedded.evaluate_once(store)
    at[0] += 5 * 86400 * NS  # Saturday again: it fires and resolves while held
    telemetry.set_system(cpu_ratio=0.9)
    await embedded.evaluate_once(store)
    telemetry.set_system(cpu_ratio=0.1)
    await embedded.evaluate_once(store)
    alerts = await store.list_alerts(AlertQuery())
    assert [a.status for a in alerts] == ["resolved"]  # the Monday one only
