"""Telemetry export: Prometheus (the Debian binary) scraping `serve`, range queries to files."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bridge.cli import main
from bridge.core.catalog import CATALOG
from bridge.core.errors import BridgeError
from bridge.core.rules import DEFAULT_RULES
from bridge.export import telemetry as telemetry_export
from bridge.export.anonymize import Anonymizer
from bridge.export.baseline import compute_baseline, episodes, quantile
from bridge.export.output import Destination
from bridge.export.promapi import PrometheusClient, Series, default_step
from bridge.export.telemetry import export_telemetry, queries_for
from bridge.store.sqlite.database import Database
from tests.support import (
    LOOPBACK,
    free_port,
    http_json,
    prom_query,
    scraped_bridge,
    wait_for,
)
from tests.test_export import read_back


def test_queries_for_seed_names_and_promql() -> None:
    """Seed names become measurement PromQL; anything else is sent as it is; default: all five."""
    queries = queries_for(["system.cpu.percent", "up{job='x'}"], "telemetry")
    assert queries[0].expr == CATALOG["system.cpu.percent"].measurement("telemetry", "5m")
    assert queries[1].expr == "up{job='x'}"
    assert [q.metric for q in queries_for([], "telemetry")] == list(CATALOG)


def test_default_step() -> None:
    """About 1000 points over the range, never under 1 s."""
    assert default_step(0, 3600) == 4
    assert default_step(0, 10) == 1


def test_unreachable_prometheus_is_named(tmp_path: Path) -> None:
    """A closed port: a clear error, no file left."""
    client = PrometheusClient(f"http://{LOOPBACK}:{free_port()}")
    out = tmp_path / "t.csv"
    with pytest.raises(BridgeError, match="cannot reach Prometheus at"):
        export_telemetry(
            client, Destination.of(out, None), "csv", queries_for([], "telemetry"), 0, 60
        )
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, float, str]]:
    """A bridge with pushed telemetry, scraped every second by a real Prometheus."""
    tmp = tmp_path_factory.mktemp("telemetry-export")
    with scraped_bridge(tmp, "t") as (prom, base):
        http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": 0.42, "documents": 30}, "t")
        started = time.time()
        wait_for("6 cpu samples", lambda: prom_query(
            prom, "count_over_time(telemetry_system_cpu_usage_ratio[1m]) >= 6"), 30)  # fmt: skip
        yield prom, started, base


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["parquet", "csv", "json"])
def test_exports_what_prometheus_scraped(
    prometheus: tuple[str, float, str], tmp_path: Path, fmt: str
) -> None:
    """Seed metric and raw series, one row per point, labels kept (anonymisation off)."""
    prom, started, _ = prometheus
    out = tmp_path / f"t.{fmt}"
    queries = queries_for(
        ["system.cpu.percent", "telemetry_ingestion_documents_total"], "telemetry"
    )
    result = export_telemetry(PrometheusClient(prom), Destination.of(out, None), fmt, queries,
                              started, time.time(),
                              step=1)  # fmt: skip
    rows = read_back(out, fmt)
    assert result.records == len(rows) >= 8
    cpu = [r for r in rows if r["metric"] == "system.cpu.percent"]
    assert cpu
    assert {float(r["value"]) for r in cpu} == {0.42}
    assert cpu[0]["labels"] == {"job": "alertbridge", "instance": cpu[0]["labels"]["instance"]}
    docs = [r for r in rows if r["metric"] == "telemetry_ingestion_documents_total"]
    assert {float(r["value"]) for r in docs} == {30.0}
    assert docs[0]["labels"]["__name__"] == "telemetry_ingestion_documents_total"


@pytest.mark.e2e
def test_anonymised_and_chunked(
    prometheus: tuple[str, float, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance pseudonymised; tiny chunks give the same points as one query."""
    prom, started, _ = prometheus
    client, end = PrometheusClient(prom), time.time()
    queries = queries_for(["system.cpu.percent"], "telemetry")
    whole = export_telemetry(
        client, Destination.of(tmp_path / "a.json", None), "json", queries, started, end, step=1
    )
    monkeypatch.setattr(telemetry_export, "MAX_POINTS", 3)
    chunked = export_telemetry(
        client, Destination.of(tmp_path / "b.json", None), "json", queries, started, end, step=1
    )
    assert read_back(tmp_path / "a.json", "json") == read_back(tmp_path / "b.json", "json")
    assert whole.records == chunked.records
    anon = tmp_path / "c.json"
    export_telemetry(client, Destination.of(anon, None), "json", queries, started, end, step=1,
                     anonymizer=Anonymizer(b"k"))  # fmt: skip
    assert LOOPBACK.encode() not in anon.read_bytes()
    labels = json.loads(anon.read_text().splitlines()[0])["labels"]
    assert labels["job"] == "alertbridge"
    assert labels["instance"].startswith("anon-")


@pytest.mark.e2e
def test_bad_promql_is_named(prometheus: tuple[str, float, str], tmp_path: Path) -> None:
    """Prometheus's own parse error reaches the user; nothing is written."""
    prom, started, _ = prometheus
    queries = queries_for(["sum(("], "telemetry")
    with pytest.raises(BridgeError, match="Prometheus rejected 'sum\\(\\('"):
        export_telemetry(PrometheusClient(prom), Destination.of(tmp_path / "x.csv", None), "csv",
                         queries, started, time.time())  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.e2e
def test_cli_telemetry_export(prometheus: tuple[str, float, str], tmp_path: Path) -> None:
    """`alertbridge export --what telemetry` with and without anonymisation."""
    prom, _, _ = prometheus
    out = tmp_path / "cli.csv"
    plain = CliRunner().invoke(main, [
        "export", "--what", "telemetry", "--format", "csv", "--output", str(out), "--since", "1m",
        "--metric", "system.cpu.percent", "--prometheus-url", prom, "--no-anonymize"])  # fmt: skip
    assert plain.exit_code == 0, plain.output
    assert "telemetry points (not anonymised)" in plain.output
    assert LOOPBACK in out.read_text()
    Database(tmp_path / "key.db").close()  # the key lives in a database
    anon = CliRunner().invoke(main, [
        "export", "--what", "telemetry", "--format", "csv", "--output", str(out), "--since", "1m",
        "--metric", "system.cpu.percent", "--prometheus-url", prom,
        "--db", str(tmp_path / "key.db")])  # fmt: skip
    assert anon.exit_code == 0, anon.output
    assert LOOPBACK not in out.read_text()
    missing = CliRunner(env={"ALERTBRIDGE_PROMETHEUS_URL": None}).invoke(main, [
        "export", "--what", "telemetry", "--format", "csv", "--output", str(out),
        "--no-anonymize"])  # fmt: skip
    assert missing.exit_code == 1
    assert "needs --prometheus-url" in missing.output


def test_episodes_and_quantiles() -> None:
    """Runs end at gaps; a run counts when it lasts the hold; quantiles interpolate."""
    series = [Series({}, [(0, 1), (1, 1), (2, 1), (10, 1), (11, 1)])]
    assert episodes(series, 1, 0) == (2, 5.0)
    assert episodes(series, 1, 2) == (1, 3.0)
    assert episodes(series, 1, 5) == (0, 0.0)
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([5.0], 0.99) == 5.0


@pytest.mark.e2e
def test_baseline_and_backtest(prometheus: tuple[str, float, str], tmp_path: Path) -> None:
    """CPU pushed past high_cpu for a few scrapes: one would-be episode with for 0, none with
    a long for, none for critical_cpu; distribution and suggestions in percent. (Runs last: it
    changes the data the other tests read.)"""
    prom, started, base = prometheus
    http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": 0.9}, "t")
    high = "count_over_time((telemetry_system_cpu_usage_ratio > 0.8)[1m:1s]) >= 3"
    wait_for("3 high samples", lambda: prom_query(prom, high), 30)
    http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": 0.42}, "t")
    wait_for(
        "back to normal", lambda: prom_query(prom, "telemetry_system_cpu_usage_ratio < 0.5"), 30
    )
    rules = [r.replace(for_seconds=0) for r in DEFAULT_RULES]
    result = compute_baseline(PrometheusClient(prom), rules, "system.cpu.percent", "telemetry",
                              started, time.time(), 1)  # fmt: skip
    assert result.max == 90.0
    assert result.p50 == 42.0
    assert result.suggested_critical >= result.suggested_warning > 42.0
    fired = {t.rule: t.episodes for t in result.backtests}
    assert fired == {"high_cpu": 1, "critical_cpu": 0}
    slow = [r.replace(for_seconds=3600) for r in DEFAULT_RULES]
    later = compute_baseline(PrometheusClient(prom), slow, "system.cpu.percent", "telemetry",
                             started, time.time(), 1)  # fmt: skip
    assert {t.rule: t.episodes for t in later.backtests} == {"high_cpu": 0, "critical_cpu": 0}
    shown = CliRunner().invoke(main, ["baseline", "system.cpu.percent", "--days", "0.01",
                                      "--prometheus-url", prom])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "rule high_cpu: would have fired 0 time(s)" in shown.output  # default for: 5m
    assert "suggested thresholds: warning" in shown.output
    unknown = CliRunner().invoke(main, ["baseline", "disk.io", "--prometheus-url", prom])
    assert unknown.exit_code == 1
    assert "unknown metric 'disk.io'" in unknown.output
    # A ready rule from the history, and the same taken by `rules add` on the bridge
    suggested = CliRunner().invoke(main, ["baseline", "system.cpu.percent", "--days", "0.01",
                                          "--prometheus-url", prom, "--suggest"])  # fmt: skip
    assert suggested.exit_code == 0, suggested.output
    (rule,) = yaml.safe_load(suggested.output)["rules"]
    assert (rule["name"], rule["condition"], rule["severity"]) == (
        "system_cpu_percent_unusual", ">", "warning")  # fmt: skip
    assert rule["threshold"] == pytest.approx(result.suggested_warning, rel=1e-3)
    added = CliRunner(env={"ALERTBRIDGE_API_TOKEN": "t"}).invoke(main, [
        "rules", "add", "cpu_unusual", "--from-baseline", "system.cpu.percent", "--days",
        "0.01", "--prometheus-url", prom, "--url", base])  # fmt: skip
    assert added.exit_code == 0, added.output
    assert added.output.startswith("version 2: created cpu_unusual")
    assert f"threshold: {rule['threshold']:g}" in added.output
