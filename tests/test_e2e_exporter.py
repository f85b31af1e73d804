"""`alertbridge serve` scraped by the real Prometheus; exposition linted by the real promtool."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.generate.prometheus import render_prometheus_config
from bridge.host.tools import find_tool
from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    http_json,
    http_text,
    prom_query,
    running,
    start_bridge,
    start_prometheus,
    wait_for,
)

pytestmark = pytest.mark.e2e
TOKEN = "e2e-api-token"


def test_exposition_passes_promtool_check_metrics(tmp_path: Path) -> None:
    """The scrape of a live bridge, with data recorded, lints clean (no promtool warnings)."""
    port = free_port()
    env = bridge_env(ALERTBRIDGE_API_TOKEN=TOKEN, ALERTBRIDGE_TELEMETRY_SYSTEM="push")
    with running(start_bridge(tmp_path, port, env)):
        base = f"http://{LOOPBACK}:{port}"
        body = {"documents": 3, "operations": 2, "errors": 1, "search_latency_seconds": [0.3],
                "cpu_usage_ratio": 0.5, "memory_used_bytes": 2.0**30}  # fmt: skip
        assert http_json(f"{base}/api/v1/telemetry", body, TOKEN)[0] == 200
        scrape = http_text(f"{base}/metrics")
    lint = subprocess.run(
        [find_tool("promtool"), "check", "metrics"],
        input=scrape, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")


def test_prometheus_scrapes_recorded_values_and_rules_load(tmp_path: Path) -> None:
    """Prometheus scrapes `serve`: up == 1, pushed values queryable, generated rules loaded."""
    bridge_port, prom_port = free_port(), free_port()
    env = bridge_env(ALERTBRIDGE_API_TOKEN=TOKEN, ALERTBRIDGE_TELEMETRY_SYSTEM="push")
    CliRunner().invoke(main, ["rules", "generate", "--out", str(tmp_path / "gen")])
    config = tmp_path / "gen" / "prometheus" / "prometheus.yml"
    config.write_text(
        render_prometheus_config(
            1, 1, "alertbridge", f"{LOOPBACK}:{bridge_port}", f"{LOOPBACK}:{free_port()}"
        )
    )
    base = f"http://{LOOPBACK}:{bridge_port}"
    prom = f"http://{LOOPBACK}:{prom_port}"
    with (
        running(start_bridge(tmp_path, bridge_port, env)) as bridge,
        running(start_prometheus(tmp_path, config, prom_port)),
    ):
        body = {"documents": 120, "operations": 50, "errors": 5, "cpu_usage_ratio": 0.42,
                "memory_used_bytes": 1.5 * 2**30, "search_latency_seconds": [0.2, 1.4]}  # fmt: skip
        assert http_json(f"{base}/api/v1/telemetry", body, TOKEN)[0] == 200
        up = wait_for("up == 1", lambda: prom_query(prom, 'up{job="alertbridge"} == 1'))
        assert up[0]["metric"]["instance"] == f"{LOOPBACK}:{bridge_port}"

        def value(expr: str) -> float | None:
            result = prom_query(prom, expr)
            return float(result[0]["value"][1]) if result else None

        assert wait_for("cpu", lambda: value("telemetry_system_cpu_usage_ratio")) == 0.42
        assert value("telemetry_system_memory_used_bytes") == 1.5 * 2**30
        assert value("telemetry_ingestion_documents_total") == 120
        assert value("telemetry_operation_errors_total") == 5
        assert value('telemetry_search_latency_seconds_bucket{le="1.0"}') == 1
        assert value('telemetry_search_latency_seconds_bucket{le="2.0"}') == 2
        _, rules = http_json(f"{prom}/api/v1/rules")
        loaded = {r["name"] for g in rules["data"]["groups"] for r in g["rules"]}
        assert len(loaded) == 10
        assert "critical_error_rate" in loaded
        assert bridge.stop(signal.SIGTERM) == 0, "serve must shut down cleanly on SIGTERM"


def test_status_cli_against_a_live_bridge(tmp_path: Path) -> None:
    """`alertbridge status --url` shows each rule's state from the live snapshot."""
    port = free_port()
    env = bridge_env(ALERTBRIDGE_API_TOKEN=TOKEN, ALERTBRIDGE_TELEMETRY_SYSTEM="push")
    with running(start_bridge(tmp_path, port, env)):
        base = f"http://{LOOPBACK}:{port}"
        http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": 0.97}, TOKEN)
        result = CliRunner(env={"ALERTBRIDGE_API_TOKEN": TOKEN}).invoke(
            main, ["status", "--url", base]
        )
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split() for line in result.output.splitlines()[2:]}
    assert lines["critical_cpu"][-1] == "CRITICAL"
    assert lines["high_cpu"][-1] == "WARNING"
    assert lines["high_memory"][-1] == "NO_DATA"
