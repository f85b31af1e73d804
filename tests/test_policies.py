"""Escalation policies in the config: parsing, the errors that name file, policy and step,
routing by priority, urgency and time windows, and `alertbridge policies list|check|test`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import load_settings
from bridge.core.errors import ConfigError
from bridge.core.policies import Policy
from bridge.core.times import NS
from bridge.core.windows import Window

RECEIVERS = [
    {"name": "ops-slack", "type": "slack", "severities": ["warning", "critical"],
     "config": {"channel": "#ops"}},
    {"name": "pager", "type": "pagerduty", "severities": ["critical"],
     "config": {"routing_key_file": "/k"}},
]  # fmt: skip


def config(**escalation: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "alertmanager": {"receivers": RECEIVERS},
        "escalation": {
            "policies": [
                {
                    "name": "standard",
                    "ack_timeout": "30m",
                    "steps": [
                        {"notify": ["ops-slack"]},
                        {"wait": "5m"},
                        {"notify": ["pager"],
                         "when": {"timezone": "Europe/Paris", "days": ["mon", "fri"],
                                  "hours": "09:00-18:00"}},
                        {"wait": "10m"},
                        {"notify": ["ops-slack", "pager"]},
                        {"repeat": 2},
                    ],
                },
                {"name": "quiet", "steps": [{"notify": "ops-slack"}]},
            ],
            "routes": [
                {"matchers": ['team="db"'], "policy": "quiet", "continue": True},
                {"severities": ["critical"], "policy": "standard"},
                {"severities": ["warning"], "policy": "quiet", "urgency": "low"},
            ],
        },
    }  # fmt: skip
    doc["escalation"].update(escalation)
    return doc


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "alertbridge.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_policy_loads_with_its_levels_waits_window_repeat_and_ack_timeout(
    tmp_path: Path,
) -> None:
    esc = load_settings(write(tmp_path, config())).escalation
    policy = esc.policy("standard")
    assert policy is not None
    assert [s.kind for s in policy.steps] == ["notify", "wait", "notify", "wait", "notify"]
    assert (policy.levels, policy.repeat, policy.ack_timeout) == (3, 2, 1800)
    assert policy.steps[2].when == Window("Europe/Paris", frozenset({0, 4}), 540, 1080)
    assert policy.steps[4].receivers == ("ops-slack", "pager")
    assert Policy.from_json(json.loads(json.dumps(policy.to_json()))) == policy
    assert esc.repost_interval == 60


def test_routing_is_by_priority_first_match_wins_unless_continue(tmp_path: Path) -> None:
    esc = load_settings(write(tmp_path, config())).escalation

    def pick(**labels: str) -> list[tuple[str, str]]:
        return [(s.policy.name, s.urgency) for s in esc.select(labels)]

    assert pick(severity="critical") == [("standard", "high")]
    assert pick(severity="critical", team="db") == [("quiet", "high"), ("standard", "high")]
    assert pick(severity="warning") == [("quiet", "low")]
    assert pick(severity="warning", urgency="high") == [("quiet", "high")]  # the label wins
    assert pick(severity="info") == []


def test_a_rule_naming_its_policy_comes_before_the_routes(tmp_path: Path) -> None:
    doc = config()
    doc["rules"] = [{"name": "high_cpu", "escalation": "standard"}]
    esc = load_settings(write(tmp_path, doc)).escalation
    chosen = esc.select({"alertname": "high_cpu", "severity": "warning"})
    assert [(s.policy.name, s.why) for s in chosen] == [("standard", "rule high_cpu")]
    doc["rules"] = [{"name": "high_cpu", "escalation": "missing"}]
    with pytest.raises(ConfigError, match=r"high_cpu\.escalation: no policy named 'missing'"):
        load_settings(write(tmp_path, doc))


BAD: list[tuple[str, Any, str]] = [
    ("steps.0", {"notify": ["nobody"]},
     "escalation.policies.standard.steps[0].notify: unknown receiver 'nobody'"),
    ("steps.1", {"wait": "5 minutes"}, "escalation.policies.standard.steps[1].wait: expected"),
    ("steps.1", {"wait": 0}, "steps[1].wait: must be longer than 0s"),
    ("steps.1", {"wait": "5m", "notify": ["pager"]}, "steps[1]: must have exactly one of"),
    ("steps.1", {"wait": "5m", "when": {}}, "steps[1].when: not allowed on a wait step"),
    ("steps.1", {"sleep": "5m"}, "steps[1]: must have exactly one of notify, wait, repeat"),
    ("steps.2.when.hours", "9-18", "steps[2].when.hours: must be HH:MM-HH:MM"),
    ("steps.2.when.hours", "09:00-09:00", "steps[2].when.hours: an empty or impossible"),
    ("steps.2.when.timezone", "Mars/Olympus", "steps[2].when.timezone: unknown IANA"),
    ("steps.2.when.timezone", "../../etc/passwd", "steps[2].when.timezone: unknown IANA"),
    ("steps.2.when.days", ["monkey"], "steps[2].when.days: unknown weekday 'monkey'"),
    ("steps.2.when.days", [], "steps[2].when.days: must be a non-empty list"),
    ("steps.5", {"repeat": 11}, "steps[5].repeat: must be a count from 1 to 10"),
    ("steps.5", {"repeat": True}, "steps[5].repeat: must be a count from 1 to 10"),
    ("steps.0", {"repeat": 1}, "steps[0].repeat: repeat must be the last step"),
    ("ack_timeout", "soon", "escalation.policies.standard.ack_timeout: expected a duration"),
    ("steps", [], "escalation.policies.standard.steps: must be a non-empty list"),
    ("steps", [{"wait": "1m"}], "standard.steps: needs at least one notify step"),
    ("name", "has space", "escalation.policies[0].name: must be a name"),
    ("color", "red", "escalation.policies.standard.color: unknown setting"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "value", "message"), BAD, ids=[b[2][:50] for b in BAD])
def test_every_error_names_the_file_the_policy_and_the_step(
    tmp_path: Path, where: str, value: Any, message: str
) -> None:
    doc = config()
    target: Any = doc["escalation"]["policies"][0]
    *path, last = where.split(".")
    for part in path:
        target = target[int(part)] if part.isdigit() else target[part]
    if last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    file = write(tmp_path, doc)
    with pytest.raises(ConfigError) as caught:
        load_settings(file)
    assert str(caught.value).startswith(f"{file}: ")
    assert message in str(caught.value)


def test_repeat_without_a_wait_is_refused(tmp_path: Path) -> None:
    doc = config()
    doc["escalation"]["policies"][1]["steps"].append({"repeat": 3})
    with pytest.raises(ConfigError, match=r"quiet.steps\[1\].repeat: a repeated policy needs"):
        load_settings(write(tmp_path, doc))


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"policy": "nope"}, r"routes\[0\].policy: no policy named 'nope'"),
        ({"policy": "quiet", "matchers": ["team"]}, r"routes\[0\].matchers: not a label matcher"),
        ({"policy": "quiet", "matchers": ['a=~"("']}, r"routes\[0\].matchers: bad regular"),
        ({"policy": "quiet", "severities": ["urgent"]}, r"routes\[0\].severities: unknown"),
        ({"policy": "quiet", "urgency": "medium"}, r"routes\[0\].urgency: must be high or low"),
        ({"policy": "quiet", "continue": "yes"}, r"routes\[0\].continue: must be true or false"),
        ({"policy": "quiet", "receiver": "x"}, r"routes\[0\].receiver: unknown setting"),
    ],
)
def test_routing_rule_errors(tmp_path: Path, route: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, config(routes=[route])))


def test_a_policy_defined_twice_is_refused(tmp_path: Path) -> None:
    doc = config()
    doc["escalation"]["policies"].append({"name": "quiet", "steps": [{"notify": "pager"}]})
    with pytest.raises(ConfigError, match=r"escalation\.policies\.quiet: policy defined twice"):
        load_settings(write(tmp_path, doc))


def _at(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).timestamp()) * NS


def test_windows_are_local_time_with_weekdays_and_may_span_midnight() -> None:
    office = Window("Europe/Paris", frozenset({0, 1, 2, 3, 4}), 9 * 60, 18 * 60)
    assert office.contains(_at("2026-12-07T08:00:00+00:00"))  # Monday 09:00 in Paris
    assert not office.contains(_at("2026-12-07T07:59:00+00:00"))
    assert not office.contains(_at("2026-12-07T17:00:00+00:00"))  # 18:00: the end is open
    assert not office.contains(_at("2026-12-05T10:00:00+00:00"))  # Saturday
    assert office.contains(_at("2026-07-06T07:00:00+00:00"))  # summer time: UTC+2
    night = Window("UTC", frozenset(range(7)), 22 * 60, 6 * 60)
    assert night.contains(_at("2026-12-07T23:30:00+00:00"))
    assert night.contains(_at("2026-12-08T05:59:00+00:00"))
    assert not night.contains(_at("2026-12-08T06:00:00+00:00"))


def cli(tmp_path: Path, doc: dict[str, Any], *args: str) -> Any:
    return CliRunner().invoke(main, ["--config", str(write(tmp_path, doc)), *args])


def test_policies_list_shows_levels_and_routes(tmp_path: Path) -> None:
    result = cli(tmp_path, config(), "policies", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["POLICY", "LEVEL", "AFTER", "RECEIVERS", "WHEN"]
    assert lines[2].split()[:3] == ["1", "+5m", "pager"]
    assert "mon,fri 09:00-18:00 Europe/Paris" in lines[2]
    assert "repeat 2x; ack timeout 30m" in result.output
    assert any(line.split()[:2] == ["route", "3"] and "low" in line for line in lines)
    data = json.loads(cli(tmp_path, config(), "policies", "list", "-o", "json").output)
    assert data["policies"][0]["levels"][2] == {
        "level": 2, "receivers": ["ops-slack", "pager"], "schedules": [], "people": [],
        "after_seconds": 600, "when": None,
    }  # fmt: skip


def test_policies_list_with_none_says_so(tmp_path: Path) -> None:
    result = cli(tmp_path, {}, "policies", "list")
    assert result.exit_code == 0
    assert "no escalation policies" in result.output


def test_policies_check_warns_of_levels_that_notify_nobody(tmp_path: Path) -> None:
    doc = config()
    # warnings get the standard policy: its level 1 (pager) takes only criticals
    doc["escalation"]["routes"] = [{"severities": ["warning", "critical"], "policy": "standard"}]
    result = cli(tmp_path, doc, "policies", "check")
    assert result.exit_code == 0, result.output
    assert "rule high_cpu: policy standard level 1 notifies nobody: pager" in result.output
    assert "rule critical_cpu" not in result.output
    assert "policy quiet: no route or rule selects it" in result.output
    clean = cli(tmp_path, config(), "policies", "check")
    assert clean.output.splitlines()[-1].startswith("ok: 2 policies, 3 routes in ")
    assert "warning" not in clean.output


def test_policies_check_fails_on_a_bad_policy(tmp_path: Path) -> None:
    doc = config()
    doc["escalation"]["policies"][0]["steps"][0] = {"notify": ["pagr"]}
    result = cli(tmp_path, doc, "policies", "check")
    assert result.exit_code == 1
    assert "standard.steps[0].notify: unknown receiver 'pagr'" in result.output


def test_policies_test_names_the_policy_or_fails(tmp_path: Path) -> None:
    result = cli(tmp_path, config(), "policies", "test", "severity=critical", "team=db")
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        "quiet (urgency high, by route 1)",
        "standard (urgency high, by route 2)",
    ]
    none = cli(tmp_path, config(), "policies", "test", "severity=info")
    assert none.exit_code == 1
    assert "would not escalate" in none.output
    bad = cli(tmp_path, config(), "policies", "test", "severity")
    assert bad.exit_code == 2
    assert "not a label like" in bad.output


def test_the_engine_runs_in_its_own_process_unless_inline(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, config())).escalation.worker == "process"
    inline = load_settings(write(tmp_path, config(worker="inline"))).escalation
    assert inline.worker == "inline"
    with pytest.raises(ConfigError, match=r"escalation\.worker: must be process or inline"):
        load_settings(write(tmp_path, config(worker="thread")))


def test_policies_check_warns_of_gaps_on_call_and_people_out_of_reach(tmp_path: Path) -> None:
    doc = config()
    doc["people"] = {"alice": {"contacts": [{"type": "email", "config": {"to": "a@x.org"}}]},
                     "bob": {}}  # fmt: skip
    always = {"participants": ["alice"], "shift": "1w", "start": "2026-01-05T00:00"}
    doc["schedules"] = {
        "day": {"timezone": "Europe/Paris", "layers": [{"rotation": always, "restrict": [
            {"days": ["mon", "tue", "wed", "thu", "fri"], "hours": "09:00-17:00"}]}]},
        "always": {"layers": [{"rotation": always}]},
    }  # fmt: skip
    doc["escalation"]["policies"][0]["steps"][0] = {"notify": [{"schedule": "day"},
                                                               {"person": "bob"}]}  # fmt: skip
    result = cli(tmp_path, doc, "policies", "check")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert any(w.startswith("warning: schedule day: nobody on call ") and "in the next 14 days"
               in w for w in warnings), warnings  # fmt: skip
    assert not any("schedule always" in w for w in warnings)
    assert "warning: person bob: no contact method (a page to them reaches nobody)" in warnings
    assert not any("notifies nobody" in w and "standard level 0" in w for w in warnings)
