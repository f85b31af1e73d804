"""Generated artefacts: deterministic, checked in without drift, shaped as the rule set says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bridge.config import load_settings
from bridge.core.expressions import alert_expr
from bridge.core.rules import DEFAULT_RULES
from bridge.generate import (
    ALERTMANAGER_PATH,
    PROMETHEUS_PATH,
    RULES_PATH,
    TESTS_PATH,
    render_all,
    write_all,
)


def _load(text: str) -> Any:
    return yaml.safe_load(text)


def test_checked_in_files_equal_generator_output(repo_root: Path) -> None:
    """Regenerating the default config reproduces every checked-in file byte for byte."""
    artifacts = render_all(load_settings(None, {}))
    for rel, text in artifacts.files.items():
        on_disk = (repo_root / rel).read_text(encoding="utf-8")
        assert on_disk == text, f"{rel} drifted: run `alertbridge rules generate`"
    assert artifacts.untested == []


def test_generation_is_deterministic() -> None:
    """Two renders of the same settings are identical."""
    settings = load_settings(None, {})
    assert render_all(settings).files == render_all(settings).files


def test_rule_expressions_use_base_units_and_design_promql() -> None:
    """Each expression is DESIGN.md's PromQL with the threshold converted once."""
    exprs = {r.name: alert_expr(r, "telemetry") for r in DEFAULT_RULES}
    assert exprs["high_cpu"] == "max by (job, instance) (telemetry_system_cpu_usage_ratio) > 0.8"
    assert exprs["critical_memory"].endswith("(telemetry_system_memory_used_bytes) > 2684354560")
    assert exprs["slow_search"] == (
        "histogram_quantile(0.95, sum by (le, job, instance) "
        "(rate(telemetry_search_latency_seconds_bucket[5m]))) > 1"
    )
    assert exprs["low_throughput"] == (
        "sum by (job, instance) (rate(telemetry_ingestion_documents_total[5m])) < 5"
    )
    assert exprs["critical_error_rate"] == (
        "sum by (job, instance) (rate(telemetry_operation_errors_total[5m]))"
        " / sum by (job, instance) (rate(telemetry_operations_total[5m])) > 0.1"
    )


def test_rules_file_labels_annotations_and_for() -> None:
    """Each alert carries severity and metric labels, humanized annotations and its for."""
    files = render_all(load_settings(None, {})).files
    rules = {r["alert"]: r for r in _load(files[RULES_PATH])["groups"][0]["rules"]}
    assert list(rules) == [r.name for r in DEFAULT_RULES]
    cpu = rules["high_cpu"]
    assert cpu["labels"] == {"severity": "warning", "metric": "system.cpu.percent"}
    assert cpu["for"] == "5m"
    assert "{{ $value | humanizePercentage }}" in cpu["annotations"]["description"]
    assert "{{ $labels.instance }}" in cpu["annotations"]["summary"]
    assert "humanizeDuration" in rules["slow_search"]["annotations"]["description"]


def test_alertmanager_routes_inhibitions_and_receiver() -> None:
    """A route per rule with repeat_interval = cooldown, twin inhibitions, authenticated webhook."""
    doc = _load(render_all(load_settings(None, {})).files[ALERTMANAGER_PATH])
    route = doc["route"]
    assert route["group_by"] == ["alertname", "job", "instance"]
    assert [r["matchers"] for r in route["routes"]] == [
        [f'alertname="{r.name}"'] for r in DEFAULT_RULES
    ]
    assert {r["repeat_interval"] for r in route["routes"]} == {"5m"}
    pairs = {
        (i["source_matchers"][0], i["target_matchers"][0], tuple(i["equal"]))
        for i in doc["inhibit_rules"]
    }
    assert pairs == {
        (f'alertname="{hi}"', f'alertname="{lo}"', ("metric", "instance"))
        for hi, lo in [
            ("critical_cpu", "high_cpu"),
            ("critical_memory", "high_memory"),
            ("very_slow_search", "slow_search"),
            ("very_low_throughput", "low_throughput"),
            ("critical_error_rate", "high_error_rate"),
        ]
    }
    (webhook,) = doc["receivers"][0]["webhook_configs"]
    assert webhook["send_resolved"] is True
    assert webhook["url"].endswith("/api/v1/alertmanager")
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"
    assert "credentials_file" in webhook["http_config"]["authorization"]


def test_config_changes_reach_every_artefact(write_config: Any, tmp_path: Path) -> None:
    """Overrides, disabled rules, cooldowns and channel receivers show in the generated files."""
    path = write_config(
        """
rules:
  - {name: high_cpu, threshold: 85, cooldown_seconds: 900}
  - {name: critical_cpu, enabled: false}
alertmanager:
  receivers:
    - {name: pager, type: pagerduty, severities: [critical], config: {routing_key_file: /k}}
"""
    )
    files = write_all(render_all(load_settings(path, {})), tmp_path / "out")
    assert {p.relative_to(tmp_path / "out").as_posix() for p in files} >= {RULES_PATH, TESTS_PATH}
    rules_doc = _load((tmp_path / "out" / RULES_PATH).read_text())
    names = [r["alert"] for r in rules_doc["groups"][0]["rules"]]
    assert "critical_cpu" not in names
    high = next(r for r in rules_doc["groups"][0]["rules"] if r["alert"] == "high_cpu")
    assert high["expr"].endswith("> 0.85")
    am = _load((tmp_path / "out" / ALERTMANAGER_PATH).read_text())
    high_route = next(r for r in am["route"]["routes"] if r["matchers"] == ['alertname="high_cpu"'])
    assert high_route["repeat_interval"] == "15m"
    assert am["receivers"][1] == {
        "name": "pager",
        # the bridge's template for the title, unless the config sets its own
        "pagerduty_configs": [
            {"routing_key_file": "/k", "description": '{{ template "alertbridge.title" . }}'}
        ],
    }
    assert not any("critical_cpu" in str(i) for i in am["inhibit_rules"])


def test_custom_expr_rule_is_rendered_but_reported_untested(write_config: Any) -> None:
    """A raw-PromQL rule is wrapped in parentheses and listed as having no generated test."""
    path = write_config(
        """
rules:
  - {name: queue_backlog, metric: queue.depth, expr: "sum(queue_depth) or vector(0)",
     condition: ">", threshold: 100, severity: warning, description: "Use {{ braces }} safely"}
"""
    )
    artifacts = render_all(load_settings(path, {}))
    doc = _load(artifacts.files[RULES_PATH])
    rule = doc["groups"][0]["rules"][-1]
    assert rule["expr"] == "(sum(queue_depth) or vector(0)) > 100"
    assert rule["annotations"]["summary"].startswith('Use {{ "{{" }} braces }} safely')
    assert artifacts.untested == ["queue_backlog (custom expr)"]


def test_templates_apply_unless_the_receiver_sets_its_own() -> None:
    from bridge.generate.templates import TEXT, TITLE, apply_templates

    assert apply_templates("slack", {"channel": "#ops"}) == {"channel": "#ops", "title": TITLE,
                                                             "text": TEXT}  # fmt: skip
    assert apply_templates("slack", {"title": "mine"})["title"] == "mine"
    assert apply_templates("email", {"headers": {"From": "a"}})["headers"] == {
        "From": "a", "Subject": TITLE
    }  # fmt: skip
    assert apply_templates("webhook", {"url": "x"}) == {"url": "x"}


def test_templates_link_to_the_public_url_when_there_is_one() -> None:
    from bridge.generate.templates import render_templates

    text = render_templates("https://bridge.example/")
    assert "alertbridge ack {{ .Annotations.alertbridge_id }} --url https://bridge.example/" in text
    assert "Open: https://bridge.example/alerts/{{ .Annotations.alertbridge_id }}" in text
    assert "Open: https://bridge.example/alerts?status=firing&rule={{ .Labels.alertname }}" in text
    assert "--url" not in render_templates(None)


def test_replicas_each_get_a_webhook_config_and_a_scrape_target(write_config: Any) -> None:
    """alertmanager.webhook_urls: the bridge receiver notifies every replica (each its own
    webhook config: Alertmanager delivers and retries each on its own); a comma-separated
    prometheus.scrape_target scrapes each; the server accepts requests for every name."""
    path = write_config(
        """
prometheus: {scrape_target: "b1:9470, b2:9470", alertmanager_target: "a1:9093,a2:9093"}
alertmanager:
  webhook_urls: [http://b1:9470/api/v1/alertmanager, http://b2:9470/api/v1/alertmanager]
"""
    )
    settings = load_settings(path, {})
    files = render_all(settings).files
    am = yaml.safe_load(files[ALERTMANAGER_PATH])
    hooks = am["receivers"][0]["webhook_configs"]
    assert [h["url"] for h in hooks] == [
        "http://b1:9470/api/v1/alertmanager", "http://b2:9470/api/v1/alertmanager",
    ]  # fmt: skip
    assert hooks[0]["http_config"] == hooks[1]["http_config"]
    prom = yaml.safe_load(files[PROMETHEUS_PATH])
    assert prom["scrape_configs"][0]["static_configs"] == [{"targets": ["b1:9470", "b2:9470"]}]
    assert prom["alerting"]["alertmanagers"][0]["static_configs"] == [
        {"targets": ["a1:9093", "a2:9093"]}
    ]
    assert settings.alertmanager.webhook_url == "http://b1:9470/api/v1/alertmanager"
    from bridge.http.app import create_app
    from bridge.http.util import ALLOWED_HOSTS

    hosts = create_app(settings)[ALLOWED_HOSTS]
    assert {"b1", "b2"} <= hosts
