"""Grafana provisioning and dashboard: structure, thresholds from the rules, queries that run."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_settings
from bridge.core.catalog import CATALOG
from bridge.generate import DASHBOARD_PATH, DATASOURCES_PATH, PROVIDER_PATH, render_all
from tests.support import (
    http_json,
    prom_query,
    scraped_bridge,
    wait_for,
)


def files(config: Path | None = None) -> dict[str, str]:
    return render_all(load_settings(config, {})).files


def dashboard(config: Path | None = None) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(files(config)[DASHBOARD_PATH])
    return loaded


def test_datasources_and_provider() -> None:
    """Prometheus and Alertmanager (implementation prometheus) with fixed uids; a file provider."""
    sources = yaml.safe_load(files()[DATASOURCES_PATH])["datasources"]
    assert [(s["type"], s["uid"]) for s in sources] == [
        ("prometheus", "alertbridge-prometheus"),
        ("alertmanager", "alertbridge-alertmanager"),
    ]
    assert sources[1]["jsonData"] == {"implementation": "prometheus"}
    (provider,) = yaml.safe_load(files()[PROVIDER_PATH])["providers"]
    assert (provider["type"], provider["options"]["path"]) == (
        "file",
        "/var/lib/grafana/dashboards",
    )


def test_dashboard_structure() -> None:
    """Stable uid, unique panel ids, grid within 24 columns, every datasource provisioned."""
    board = dashboard()
    provisioned = {s["uid"] for s in yaml.safe_load(files()[DATASOURCES_PATH])["datasources"]}
    assert board["uid"] == "alertbridge-overview"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= 24
        assert panel["datasource"]["uid"] in provisioned
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in provisioned
    assert any(p["type"] == "alertlist" and p["datasource"]["type"] == "alertmanager"
               for p in board["panels"])  # fmt: skip
    (variable,) = board["templating"]["list"]
    assert variable["name"] == "instance"


def _steps(board: dict[str, Any], metric: str) -> list[tuple[str, float | None]]:
    panel = next(p for p in board["panels"] if p["title"].startswith(metric + " "))
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    return [(s["color"], s["value"]) for s in steps]


def test_thresholds_are_the_rules(write_config: Any) -> None:
    """Each telemetry panel's steps are its rules' thresholds in base units, coloured by
    severity; a low-is-bad metric is red below its critical threshold; overrides follow."""
    board = dashboard()
    assert _steps(board, "system.cpu.percent") == [
        ("green", None), ("orange", 0.8), ("red", 0.95)]  # fmt: skip
    assert _steps(board, "system.memory.used_mb") == [
        ("green", None), ("orange", 2048 * 2**20), ("red", 2560 * 2**20)]  # fmt: skip
    assert _steps(board, "search.latency.p95") == [("green", None), ("orange", 1), ("red", 2)]
    assert _steps(board, "ingestion.throughput") == [("red", None), ("orange", 1), ("green", 5)]
    assert _steps(board, "errors.rate") == [("green", None), ("orange", 0.05), ("red", 0.1)]
    units = {
        p["title"].split()[0]: p["fieldConfig"]["defaults"]["unit"]
        for p in board["panels"]
        if "fieldConfig" in p
    }
    assert units["system.cpu.percent"] == "percentunit"
    assert units["search.latency.p95"] == "s"
    changed = dashboard(write_config("rules: [{name: high_cpu, threshold: 70},"
                                     " {name: critical_cpu, enabled: false}]\n"))  # fmt: skip
    assert _steps(changed, "system.cpu.percent") == [("green", None), ("orange", 0.7)]


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bridge with every telemetry series pushed, scraped each second by real Prometheus."""
    tmp = tmp_path_factory.mktemp("grafana")
    with scraped_bridge(tmp, "t") as (prom, base):
        body = {
            "cpu_usage_ratio": 0.3,
            "memory_used_bytes": 2.0**30,
            "documents": 50,
            "operations": 20,
            "errors": 1,
            "search_latency_seconds": [0.2, 0.4, 1.5],
        }
        http_json(f"{base}/api/v1/telemetry", body, "t")
        wait_for("first scrape", lambda: prom_query(prom, "telemetry_system_cpu_usage_ratio"))
        http_json(f"{base}/api/v1/telemetry", body, "t")  # counters move between scrapes
        yield prom


def query(prometheus: str, expr: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: prom_query(prometheus, expr)


@pytest.mark.e2e
def test_every_dashboard_query_runs(prometheus: str) -> None:
    """All panel and variable queries succeed; the five telemetry panels return data."""
    board = dashboard()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$instance", ".*")
            if panel["title"].split()[0] in CATALOG:
                assert wait_for(f"data for {panel['title']}", query(prometheus, expr), 30)
            else:
                prom_query(prometheus, expr)  # raises unless the query succeeds
    variable = board["templating"]["list"][0]["query"]
    inner = variable.removeprefix("label_values(").rsplit(",", 1)[0]
    assert prom_query(prometheus, inner)
