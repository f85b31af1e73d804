"""promtool and amtool, the real Debian binaries, judge the generated files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_settings
from bridge.generate import ALERTMANAGER_PATH, RULES_PATH, render_all, write_all
from bridge.generate.check import run_checks
from bridge.host.tools import run_tool

pytestmark = pytest.mark.e2e

RICH_CONFIG = """
rules:
  - {name: high_cpu, threshold: 70, for: 1m, window: 2m, labels: {team: infra}}
  - {name: slow_search, threshold: 1500, for: 30s, window: 90s}
  - {name: low_throughput, threshold: 50, for: 0}
  - {name: memory_info, metric: system.memory.used_mb, condition: ">=", threshold: 1024,
     severity: info}
  - {name: errors_nonzero, metric: errors.rate, condition: "!=", threshold: 0, severity: error}
  - {name: cpu_exact, metric: system.cpu.percent, condition: "==", threshold: 50, severity: info}
  - {name: cpu_idle, metric: system.cpu.percent, condition: "<=", threshold: 5, severity: info}
  - {name: high_error_rate, enabled: false}
alertmanager:
  receivers:
    - {name: ops-slack, type: slack, severities: [critical, error],
       config: {api_url_file: /etc/alertmanager/slack-url, channel: "#ops"}}
    - {name: mail, type: email, severities: [warning],
       config: {to: ops@example.org, from: am@example.org, smarthost: "127.0.0.1:25"}}
"""


def _checked(tmp_path: Path, settings: Any) -> list[Any]:
    write_all(render_all(settings), tmp_path)
    return list(run_checks(settings, tmp_path))


def test_default_rule_set_passes_every_check(tmp_path: Path) -> None:
    """promtool check/test rules, check config, amtool check-config and routes all pass."""
    results = _checked(tmp_path, load_settings(None, {}))
    assert [r.name for r in results if not r.ok] == []
    assert len(results) == 4 + 10 + 2  # files, routes of each rule, the two templates


def test_rich_config_passes_every_check(tmp_path: Path, write_config: Any) -> None:
    """Overrides, short windows, every condition and channel receivers still pass the tools."""
    settings = load_settings(write_config(RICH_CONFIG), {})
    results = _checked(tmp_path / "out", settings)
    failures = [(r.name, r.output) for r in results if not r.ok]
    assert failures == []
    routes = [r.name for r in results if "routes test" in r.name]
    assert "amtool config routes test critical_cpu -> alertbridge,ops-slack" in routes
    assert "amtool config routes test high_cpu -> alertbridge,mail" in routes


ESCALATION_CONFIG = """
alertmanager:
  receivers:
    - {name: ops-slack, type: slack, severities: [warning, critical],
       config: {api_url_file: /etc/alertmanager/slack-url, channel: "#ops"}}
    - {name: pager, type: pagerduty, severities: [critical],
       config: {routing_key_file: /etc/alertmanager/pd-key}}
    - {name: mail, type: email, severities: [warning],
       config: {to: ops@example.org, from: am@example.org, smarthost: "127.0.0.1:25"}}
escalation:
  policies:
    - name: standard
      steps:
        - notify: [ops-slack]
        - wait: 5m
        - notify: [pager, ops-slack]
  routes:
    - {severities: [critical, warning], policy: standard}
  rate_limits:
    - {receiver: pager, max: 10, per: 1m}
"""


def test_escalation_levels_route_to_their_receivers_only(tmp_path: Path, write_config: Any) -> None:
    """amtool: a level's copies reach the level's receivers that take their severity (the
    null receiver when none does: never the bridge's webhook), and the receivers a policy
    names get no direct severity route any more (level 0 would notify them twice)."""
    settings = load_settings(write_config(ESCALATION_CONFIG), {})
    results = _checked(tmp_path / "out", settings)
    assert [(r.name, r.output) for r in results if not r.ok] == []
    names = [r.name for r in results]
    assert "amtool config routes test standard level 1 critical -> pager,ops-slack" in names
    assert "amtool config routes test standard level 1 warning -> ops-slack" in names
    assert ("amtool config routes test standard level 0 info -> alertbridge-escalation-none"
            in names)  # fmt: skip
    assert "amtool config routes test critical_cpu -> alertbridge" in names
    assert "amtool config routes test high_cpu -> alertbridge,mail" in names
    # a copy the pager's rate limit held back reaches the level's other receivers only,
    # and the summary that replaces it goes to the pager alone
    assert "amtool config routes test standard level 1 held from pager -> ops-slack" in names
    summary = run_tool("amtool", "config", "routes", "test",
                       f"--config.file={tmp_path / 'out' / ALERTMANAGER_PATH}",
                       "--verify.receivers=pager", "alertname=AlertbridgeEscalationsHeld",
                       "escalation_receiver=pager", "severity=critical")  # fmt: skip
    assert summary.ok, summary.output
    # And the check can fail: a copy routed to the bridge's webhook is caught.
    am = tmp_path / "out" / ALERTMANAGER_PATH
    am.write_text(am.read_text().replace("receiver: alertbridge-escalation-none\n",
                                         "receiver: alertbridge\n", 1))  # fmt: skip
    failed = [r.name for r in run_checks(settings, tmp_path / "out") if not r.ok]
    assert "amtool config routes test standard level 0 info -> alertbridge-escalation-none" in (
        failed
    )


def test_generated_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """Editing a threshold in the generated rules makes `promtool test rules` fail."""
    settings = load_settings(None, {})
    write_all(render_all(settings), tmp_path)
    rules = tmp_path / RULES_PATH
    text = rules.read_text()
    rules.write_text(
        text.replace(
            "telemetry_system_cpu_usage_ratio) > 0.8", "telemetry_system_cpu_usage_ratio) >= 0.8"
        )
    )
    failed = {r.name: r for r in run_checks(settings, tmp_path) if not r.ok}
    assert list(failed) == ["promtool test rules prometheus/rules/telemetry.rules.test.yml"]
    assert "high_cpu" in failed[next(iter(failed))].output


def test_generated_unit_tests_catch_a_wrong_for(tmp_path: Path) -> None:
    """Dropping a rule's `for` makes the pending-phase check of its unit test fail."""
    settings = load_settings(None, {})
    write_all(render_all(settings), tmp_path)
    rules = tmp_path / RULES_PATH
    rules.write_text(rules.read_text().replace("    for: 5m\n", "    for: 1m\n", 1))
    result = run_tool(
        "promtool", "test", "rules", str(tmp_path / "prometheus/rules/telemetry.rules.test.yml")
    )
    assert not result.ok
    assert "high_cpu" in result.output


def test_broken_alertmanager_config_fails_with_tool_message(tmp_path: Path) -> None:
    """A route to an undefined receiver fails amtool check-config and its routes tests."""
    settings = load_settings(None, {})
    write_all(render_all(settings), tmp_path)
    am = tmp_path / ALERTMANAGER_PATH
    am.write_text(am.read_text().replace("receiver: alertbridge\n", "receiver: nowhere\n", 1))
    failed = [r for r in run_checks(settings, tmp_path) if not r.ok]
    assert failed[0].name.startswith("amtool check-config")
    assert 'undefined receiver "nowhere"' in failed[0].output


def test_the_template_check_fails_on_a_template_missing_what_it_must_show(
    tmp_path: Path,
) -> None:
    from bridge.generate import TEMPLATES_PATH

    settings = load_settings(None, {})
    write_all(render_all(settings), tmp_path)
    path = tmp_path / TEMPLATES_PATH
    path.write_text(path.read_text().replace("Acknowledge: alertbridge ack", "Ack"))
    failed = [r for r in run_checks(settings, tmp_path) if not r.ok]
    assert [r.name for r in failed] == ["amtool template render alertbridge.text"]
    assert "missing ['Acknowledge: alertbridge ack 42'" in failed[0].output


PEOPLE_CONFIG = """
alertmanager:
  receivers:
    - {name: ops-slack, type: slack, severities: [warning, critical],
       config: {api_url_file: /etc/alertmanager/slack-url, channel: "#ops"}}
    - {name: lead, type: pagerduty, severities: [critical],
       config: {routing_key_file: /etc/alertmanager/pd-key}}
people:
  alice:
    timezone: Europe/Paris
    contacts:
      - {type: email, config: {to: alice@example.org, from: am@example.org,
                               smarthost: "127.0.0.1:25"}}
      - {type: slack, config: {api_url_file: /etc/alertmanager/slack-url, channel: "@alice"}}
  bob:
    contacts: [{type: webhook, config: {url: "http://127.0.0.1:9/bob"}}]
  carol: {}
schedules:
  primary:
    timezone: Europe/Paris
    layers:
      - rotation: {participants: [alice, bob], shift: 1w, start: "2027-03-22T09:00"}
escalation:
  policies:
    - name: oncall
      fallback: [lead]
      steps:
        - notify: [{schedule: primary}]
        - wait: 5m
        - notify: [ops-slack, {person: carol}]
  routes:
    - {severities: [critical], policy: oncall}
"""


def test_copies_paging_a_person_reach_that_person_only(tmp_path: Path, write_config: Any) -> None:
    """amtool on the generated configuration: one receiver per person (person-alice has her
    email and Slack methods); a level-0 copy paging alice reaches person-alice and not
    person-bob; one marked for the fallback reaches the policy's fallback receiver."""
    settings = load_settings(write_config(PEOPLE_CONFIG), {})
    results = _checked(tmp_path / "out", settings)
    assert [(r.name, r.output) for r in results if not r.ok] == []
    names = [r.name for r in results]
    assert "amtool config routes test oncall level 0 paging alice -> person-alice" in names
    assert "amtool config routes test oncall level 0 paging bob -> person-bob" in names
    assert "amtool config routes test oncall level 0 nobody on call -> lead" in names
    assert "amtool config routes test oncall level 1 paging carol -> ops-slack,person-carol" in (
        names
    )
    am = yaml.safe_load((tmp_path / "out" / ALERTMANAGER_PATH).read_text())
    alice = next(r for r in am["receivers"] if r["name"] == "person-alice")
    assert [c["to"] for c in alice["email_configs"]] == ["alice@example.org"]
    assert [c["channel"] for c in alice["slack_configs"]] == ["@alice"]
    # And the check can fail: alice's copy routed to bob's receiver is caught.
    path = tmp_path / "out" / ALERTMANAGER_PATH
    path.write_text(path.read_text().replace("receiver: person-alice\n",
                                             "receiver: person-bob\n"))  # fmt: skip
    failed = [r.name for r in run_checks(settings, tmp_path / "out") if not r.ok]
    assert "amtool config routes test oncall level 0 paging alice -> person-alice" in failed


def test_slack_and_pagerduty_get_an_acknowledge_link_where_the_bridge_has_a_url(
    tmp_path: Path, write_config: Any
) -> None:
    """With server.public_url: a Slack button and a PagerDuty link, their URL rendered by the
    real amtool: an escalation copy's acknowledgement link, else the rule's firing alerts.
    The configuration passes every check (amtool check-config among them)."""
    settings = load_settings(write_config(ESCALATION_CONFIG + """
server:
  public_url: "https://bridge.example/"
"""), {})  # fmt: skip
    results = _checked(tmp_path / "out", settings)
    assert [(r.name, r.output) for r in results if not r.ok] == []
    am = yaml.safe_load((tmp_path / "out" / ALERTMANAGER_PATH).read_text())
    slack = next(r for r in am["receivers"] if r["name"] == "ops-slack")["slack_configs"][0]
    pager = next(r for r in am["receivers"] if r["name"] == "pager")["pagerduty_configs"][0]
    (button,) = slack["actions"]
    (link,) = pager["links"]
    assert button["url"] == link["href"]
    copy = {"alerts": [{"annotations": {"alertbridge_ack_url": "https://bridge.example/ack/7?s"}}],
            "commonLabels": {"alertname": "disk_full"}}  # fmt: skip
    original = {"alerts": [{"annotations": {}}], "commonLabels": {"alertname": "disk_full"}}
    page = "https://bridge.example/alerts?status=firing&rule=disk_full"
    for data, expected in [(copy, "https://bridge.example/ack/7?s"), (original, page)]:
        path = tmp_path / "data.json"
        path.write_text(json.dumps({**data, "status": "firing", "receiver": "ops-slack",
                                    "groupLabels": {}, "commonAnnotations": {},
                                    "externalURL": "http://127.0.0.1:9093"}))  # fmt: skip
        templates = tmp_path / "out" / "alertmanager" / "templates" / "*.tmpl"
        rendered = run_tool("amtool", "template", "render", f"--template.glob={templates}",
                            f"--template.data={path}",
                            f"--template.text={button['url']}")  # fmt: skip
        assert rendered.ok, rendered.output
        assert rendered.output.strip() == expected


def test_the_prometheus_operator_resource_holds_the_rule_files_groups(tmp_path: Path) -> None:
    """`rules generate --format prometheus-operator`: one PrometheusRule whose spec.groups
    are the rules file's groups, with the name, namespace and labels given; a rule set
    promtool refuses is not written (exit 1, promtool's words)."""
    import yaml
    from click.testing import CliRunner

    from bridge.cli import main
    from bridge.generate import RULES_PATH, render_all
    from bridge.generate.prometheus import OPERATOR_FILE

    runner = CliRunner()
    done = runner.invoke(main, ["rules", "generate", "--format", "prometheus-operator", "--out",
                                str(tmp_path), "--namespace", "monitoring",
                                "--label", "release=kps"])  # fmt: skip
    assert done.exit_code == 0, done.output
    resource = yaml.safe_load((tmp_path / OPERATOR_FILE).read_text())
    assert (resource["apiVersion"], resource["kind"]) == ("monitoring.coreos.com/v1",
                                                          "PrometheusRule")  # fmt: skip
    assert resource["metadata"]["namespace"] == "monitoring"
    assert resource["metadata"]["labels"]["release"] == "kps"
    rules_file = yaml.safe_load(render_all(load_settings(None, {})).files[RULES_PATH])
    assert resource["spec"]["groups"] == rules_file["groups"]
    config = tmp_path / "bad.yml"
    config.write_text("rules:\n  - {name: bad, metric: x, expr: 'rate(x[5m)', condition: '>',"
                      " threshold: 1, severity: info}\n")  # fmt: skip
    args = ["rules", "generate", "--format", "prometheus-operator", "--out", str(tmp_path / "b")]
    refused = runner.invoke(main, ["--config", str(config), *args])
    assert refused.exit_code == 1
    assert "promtool refused the resource's groups" in refused.output
    assert not (tmp_path / "b" / OPERATOR_FILE).exists()
