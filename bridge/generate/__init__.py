"""Renderers that turn the rule set into Prometheus, Alertmanager and Grafana artefacts."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Settings
from bridge.generate.alertmanager import render_alertmanager
from bridge.generate.grafana import render_dashboard, render_datasources, render_provider
from bridge.generate.prometheus import (
    RULES_FILE,
    TESTS_FILE,
    render_prometheus_config,
    render_rule_tests,
    render_rules,
)
from bridge.generate.templates import TEMPLATES_DIR, TEMPLATES_FILE, render_templates

RULES_PATH = f"prometheus/rules/{RULES_FILE}"
TESTS_PATH = f"prometheus/rules/{TESTS_FILE}"
PROMETHEUS_PATH = "prometheus/prometheus.yml"
ALERTMANAGER_PATH = "alertmanager/alertmanager.yml"
TEMPLATES_PATH = f"alertmanager/{TEMPLATES_DIR}/{TEMPLATES_FILE}"
DATASOURCES_PATH = "grafana/provisioning/datasources/alertbridge.yml"
PROVIDER_PATH = "grafana/provisioning/dashboards/alertbridge.yml"
DASHBOARD_PATH = "grafana/dashboards/alertbridge.json"
#: Where the provisioned Grafana reads dashboards (docker-compose mounts grafana/dashboards here).
GRAFANA_DASHBOARDS_DIR = "/var/lib/grafana/dashboards"


@dataclass(frozen=True, slots=True)
class Artifacts:
    """Generated files by path relative to the output root, and rules left without a unit test."""

    files: dict[str, str]
    untested: list[str]


def render_all(settings: Settings) -> Artifacts:
    """Every generated file for a configuration, in memory (pure and deterministic)."""
    rules = list(settings.rules)
    beat = settings.heartbeat
    tests, untested = render_rule_tests(rules, settings.namespace, heartbeat=beat.enabled)
    prom = settings.prometheus
    files = {
        RULES_PATH: render_rules(rules, settings.namespace, heartbeat=beat.enabled),
        TESTS_PATH: tests,
        PROMETHEUS_PATH: render_prometheus_config(
            prom.scrape_interval,
            prom.evaluation_interval,
            prom.job,
            prom.scrape_target,
            prom.alertmanager_target,
        ),
        ALERTMANAGER_PATH: render_alertmanager(
            rules,
            settings.alertmanager,
            settings.escalation,
            heartbeat=beat.interval if beat.enabled else None,
            public_url=settings.server.public_url,
        ),
        TEMPLATES_PATH: render_templates(settings.server.public_url),
        DATASOURCES_PATH: render_datasources(
            prom.url or "http://127.0.0.1:9090",
            settings.alertmanager.url or "http://127.0.0.1:9093",
        ),
        PROVIDER_PATH: render_provider(GRAFANA_DASHBOARDS_DIR),
        DASHBOARD_PATH: render_dashboard(rules, settings.namespace, prom.job, settings.metrics),
    }
    return Artifacts(files, untested)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all(artifacts: Artifacts, out: Path) -> list[Path]:
    """Write the artefacts under `out`; returns the paths written."""
    written = []
    for rel, text in artifacts.files.items():
        target = out / rel
        write_atomic(target, text)
        written.append(target)
    return written
