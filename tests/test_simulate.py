"""`alertbridge simulate`: a scenario through the rule set and the policies on a virtual
clock (the real engine on a throw-away store, nothing sent), and the scenario's errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import load_settings
from bridge.core.errors import ConfigError
from bridge.core.times import NS
from bridge.escalation.simulate import load_scenario

CONFIG = {
    "alertmanager": {"receivers": [
        {"name": "chat", "type": "slack", "severities": ["warning", "critical"],
         "config": {"channel": "#ops"}},
        {"name": "pager", "type": "pagerduty", "severities": ["critical"],
         "config": {"routing_key_file": "/k"}},
    ]},
    "escalation": {
        "policies": [{"name": "page", "steps": [
            {"notify": ["chat"]}, {"wait": "5m"},
            {"notify": ["pager"], "when": {"timezone": "UTC", "days": ["mon"],
                                           "hours": "09:00-10:00"}},
            {"wait": "10m"}, {"notify": ["pager", "chat"]}]}],
        "routes": [{"severities": ["critical"], "policy": "page"}],
    },
}  # fmt: skip
SCENARIO = {
    "duration": "45m", "step": "15s", "instance": "web-1:9100",
    "metrics": {"system.cpu.percent": [{"at": "0s", "value": 40}, {"at": "5m", "value": 97},
                                       {"at": "40m", "value": 30}]},
    "acks": [{"at": "20m", "rule": "critical_cpu", "by": "alice"}],
}  # fmt: skip


def run(tmp_path: Path, scenario: dict[str, Any], *extra: str,
        settings: dict[str, Any] | None = None) -> Any:  # fmt: skip
    config, path = tmp_path / "c.yml", tmp_path / "s.yml"
    config.write_text(yaml.safe_dump(settings or CONFIG))
    path.write_text(yaml.safe_dump(scenario))
    return CliRunner().invoke(main, ["--config", str(config), "simulate", str(path), *extra])


def timeline(tmp_path: Path, scenario: dict[str, Any],
             settings: dict[str, Any] | None = None) -> list[tuple[int, str, str]]:  # fmt: skip
    result = run(tmp_path, scenario, "-o", "json", settings=settings)
    assert result.exit_code == 0, result.output
    return [(e["at_seconds"], e["what"], e["text"]) for e in json.loads(result.output)]


def test_fires_escalates_in_time_and_an_ack_stops_it(tmp_path: Path) -> None:
    lines = timeline(tmp_path, {**SCENARIO, "acks": []})
    assert (420, "firing", "critical_cpu FIRING (critical, system.cpu.percent = 97, alert 1)"
            ) in lines  # fmt: skip
    steps = [(at, text) for at, what, text in lines if "escalated" in text]
    assert steps == [(420, "critical_cpu: escalated: level 0: chat"),
                     (720, "critical_cpu: escalated: level 1: pager"),
                     (1320, "critical_cpu: escalated: level 2: pager, chat")]  # fmt: skip
    # high_cpu fires after its 5m, inhibited by its critical twin: no policy for warnings
    assert any(at == 600 and text.startswith("high_cpu FIRING") and "inhibited by critical_cpu"
               in text for at, _, text in lines)  # fmt: skip
    acked = timeline(
        tmp_path, {**SCENARIO, "acks": [{"at": "10m", "rule": "critical_cpu", "by": "alice"}]}
    )
    assert (600, "ack", "critical_cpu acknowledged by alice") in acked
    assert [t for _, _, t in acked if "escalated" in t] == [
        "critical_cpu: escalated: level 0: chat"
    ]  # the ack at 10m: level 1 (due at 12m) never comes
    assert (2400, "resolved", "critical_cpu resolved") in acked


def test_a_level_outside_its_window_is_skipped(tmp_path: Path) -> None:
    later = {**SCENARIO, "start": "2026-12-07T11:00:00Z"}  # Monday, past the 09:00-10:00 window
    texts = [t for _, _, t in timeline(tmp_path, later)]
    assert "critical_cpu: escalation_skipped: level 1: pager: outside mon 09:00-10:00 UTC" in texts
    assert "critical_cpu: escalated: level 1: pager" not in texts


def test_the_table_output(tmp_path: Path) -> None:
    result = run(tmp_path, SCENARIO)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split() == ["0s", "metric", "system.cpu.percent", "=",
                                                     "40"]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metrics": {}}, "metrics: must map metric names"),
        ({"metrics": {"x": [{"at": "0s"}]}}, r"metrics.x\[0\]: must be \{at: DURATION"),
        ({"metrics": {"x": [{"at": "0s", "value": "hot"}]}}, r"metrics.x\[0\].value: must be a"),
        ({"metrics": {"x": [{"at": "5m", "value": 1}, {"at": "1m", "value": 2}]}},
         "metrics.x: times must increase"),
        ({"step": "0s"}, "step: must be longer than 0s"),
        ({"duration": "1y", "step": "1s"}, "duration: at most 200000 steps"),
        ({"start": "yesterday"}, "start: must be an RFC 3339 time"),
        ({"acks": [{"rule": "x"}]}, r"acks\[0\]: must be \{at, rule, by\}"),
        ({"colour": "red"}, "colour: unknown setting"),
    ],
)  # fmt: skip
def test_scenario_errors_name_the_file_and_key(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "s.yml"
    path.write_text(yaml.safe_dump({**SCENARIO, **change}))
    with pytest.raises(ConfigError, match=message) as caught:
        load_scenario(path, 15)
    assert str(caught.value).startswith(str(path))
    result = run(tmp_path, {**SCENARIO, **change})
    assert result.exit_code == 1
    assert "alertbridge: error:" in result.output


def test_acks_of_nothing_firing_are_said_so(tmp_path: Path) -> None:
    acks = [{"at": "1m", "rule": "critical_cpu", "by": "a"},
            {"at": "30m", "rule": "critical_cpu", "unack": True}]  # fmt: skip
    quiet = {**SCENARIO, "acks": acks}
    lines = timeline(tmp_path, quiet)
    assert (60, "ack", "critical_cpu: nothing firing to acknowledge") in lines
    assert (1800, "ack", "critical_cpu: alert 1 is not acknowledged") in lines


ESCALATION_PAGE = Path(__file__).resolve().parent.parent / "docs" / "concepts" / "escalation.md"


def test_the_documented_escalation_example_loads() -> None:
    page = ESCALATION_PAGE.read_text()
    section = page.split("# Escalation of what nobody acknowledges", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = Path(__file__).resolve().parent / "_readme_escalation.yml"
    try:
        path.write_text(block)
        settings = load_settings(path, {})
    finally:
        path.unlink()
    assert [p.name for p in settings.escalation.policies] == ["standard"]
    assert settings.escalation.rule_policies == {"critical_cpu": "standard"}


def test_the_documented_scenario_loads_with_its_unquoted_start() -> None:
    """YAML reads `start: 2026-12-07T09:00:00Z` as a datetime, not a text."""
    page = ESCALATION_PAGE.read_text()
    section = page.split("**Simulation.**", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = Path(__file__).resolve().parent / "_readme_scenario.yml"
    try:
        path.write_text(block)
        scenario = load_scenario(path, 15)
    finally:
        path.unlink()
    assert scenario.start == 1_796_634_000 * NS  # 2026-12-07T09:00:00Z
    assert (scenario.duration, scenario.step) == (2700, 15)
    assert scenario.acks[0].rule == "critical_cpu"


def test_who_would_be_paged_at_each_step(tmp_path: Path) -> None:
    """A step paging a schedule names whoever is on call when it is taken (alice until the
    handoff at 09:10, bob after: the virtual clock crosses it), with their methods; a
    schedule with nobody on call falls back, and the timeline says so."""
    config = {
        **CONFIG,
        "people": {"alice": {"contacts": [{"type": "email", "config": {"to": "a@example.org"}}]},
                   "bob": {}},
        "schedules": {"primary": {"layers": [{"rotation": {
            "participants": ["alice", "bob"], "shift": "1d", "start": "2026-12-06T09:10"}}]},
            "empty": {"layers": [{"rotation": {"participants": ["bob"], "shift": "1d",
                                               "start": "2027-01-01T00:00"}}]}},
        "escalation": {
            "policies": [{"name": "page", "fallback": ["chat"], "steps": [
                {"notify": [{"schedule": "primary"}]}, {"wait": "5m"},
                {"notify": [{"schedule": "primary"}, {"schedule": "empty"}]}]}],
            "routes": [{"severities": ["critical"], "policy": "page"}],
        },
    }  # fmt: skip
    texts = [t for _, _, t in timeline(tmp_path, {**SCENARIO, "acks": []}, config)]
    assert "critical_cpu: escalated: level 0: schedule primary -> alice (email)" in texts
    assert ("critical_cpu: escalated: level 1: schedule primary -> bob (no contact method),"
            " schedule empty -> nobody on call") in texts  # fmt: skip
    assert any("schedule empty has nobody on call: chat" in t for t in texts)
