"""Metrics an application declares (bridge.core.custom): declared in the configuration,
pushed by name (singly, in batches, in process), exported on /metrics, refused with the field
named and nothing of the batch recorded, usable in rules (PromQL written for them, promtool
judging it) and evaluated in process like the built-in five."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from bridge.config import Secret, load_settings
from bridge.core import custom
from bridge.core.errors import ConfigError, InvalidInput
from bridge.generate import RULES_PATH, TESTS_PATH, render_all, write_all
from bridge.host.tools import run_tool
from bridge.http.app import create_app
from bridge.http.keys import STORE, TELEMETRY
from bridge.store import AlertQuery
from bridge.telemetry.embedded import EmbeddedEvaluator
from bridge.telemetry.exporter import Telemetry

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
API = {"Authorization": "Bearer api-secret"}
CONFIG = {
    "metrics": [
        {"name": "queue_depth", "type": "gauge", "help": "Jobs waiting", "labels": ["queue"]},
        {"name": "jobs_failed", "type": "counter", "help": "Jobs that failed"},
        {"name": "job_seconds", "type": "histogram", "help": "Job durations",
         "buckets": [0.1, 1, 10]},
    ],
    "rules": [
        {"name": "queue_backlog", "metric": "queue_depth", "condition": ">", "threshold": 100,
         "severity": "warning"},
        {"name": "jobs_failing", "metric": "jobs_failed", "condition": ">", "threshold": 0.5,
         "severity": "critical", "window": "1m"},
        {"name": "jobs_slow", "metric": "job_seconds", "condition": ">", "threshold": 5,
         "severity": "warning"},
    ],
}  # fmt: skip


def settings_of(tmp_path: Path, config: dict[str, Any] = CONFIG) -> Any:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config))
    base = load_settings(path, {}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, api_token=Secret("api-secret"))
    return dataclasses.replace(base, server=server)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ({"name": "9x", "type": "gauge", "help": "h"}, "metrics[0].name"),
        ({"name": "x", "type": "summary", "help": "h"}, "metrics.x.type"),
        ({"name": "x", "type": "gauge"}, "metrics.x.help"),
        ({"name": "x", "type": "gauge", "help": "h", "labels": ["job"]}, "metrics.x.labels"),
        ({"name": "x", "type": "gauge", "help": "h", "buckets": [1]}, "metrics.x.buckets"),
        ({"name": "x", "type": "histogram", "help": "h", "buckets": [2, 1]}, "metrics.x.buckets"),
        ({"name": "x_total", "type": "counter", "help": "h"}, "metrics.x_total.name"),
        ({"name": "operations", "type": "counter", "help": "h"}, "metrics.operations.name"),
        ({"name": "x", "type": "gauge", "help": "h", "colour": 1}, "metrics[0].colour"),
    ],
)  # fmt: skip
def test_a_wrong_declaration_names_its_field(tmp_path: Path, entry: dict[str, Any],
                                             key: str) -> None:  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        settings_of(tmp_path, {"metrics": [entry]})
    assert caught.value.key == key


def test_rules_on_declared_metrics_get_promql_that_promtool_accepts(tmp_path: Path) -> None:
    settings = settings_of(tmp_path)
    exprs = {r.name: r.expr for r in settings.rules}
    assert exprs["queue_backlog"] == "max by (job, instance) (telemetry_queue_depth)"
    assert exprs["jobs_failing"] == "sum by (job, instance) (rate(telemetry_jobs_failed_total[1m]))"
    assert exprs["jobs_slow"] == ("histogram_quantile(0.95, sum by (le, job, instance)"
                                  " (rate(telemetry_job_seconds_bucket[5m])))")  # fmt: skip
    write_all(render_all(settings), tmp_path)
    run = run_tool("promtool", "check", "rules", str(tmp_path / RULES_PATH))
    assert run.ok, run.output
    assert run_tool("promtool", "test", "rules", str(tmp_path / TESTS_PATH)).ok


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await aiohttp_client(create_app(settings_of(tmp_path), background=False))


async def test_samples_pushed_by_name_are_exported(client: Client) -> None:
    body = {"metrics": [
        {"name": "queue_depth", "value": 150, "labels": {"queue": "mail"}},
        {"name": "jobs_failed", "value": 2},
        {"name": "job_seconds", "values": [0.05, 0.5, 5]},
    ]}  # fmt: skip
    response = await client.post("/api/v1/telemetry", json=body, headers=API)
    assert response.status == 200, await response.text()
    assert (await response.json())["recorded"]["metrics"] == 3
    got = samples(await (await client.get("/metrics")).text())
    assert got["telemetry_queue_depth", (("queue", "mail"),)] == 150
    assert got["telemetry_jobs_failed_total", ()] == 2
    assert got["telemetry_job_seconds_bucket", (("le", "1.0"),)] == 2
    assert got["telemetry_job_seconds_count", ()] == 3


@pytest.mark.parametrize(
    ("sample", "field", "words"),
    [
        ({"name": "nope", "value": 1}, "metrics[1].name", "unknown metric 'nope' (declared:"),
        ({"name": "queue_depth", "value": 1}, "metrics[1].labels", "takes the labels queue"),
        ({"name": "queue_depth", "value": 1, "labels": {"queue": "a", "x": "b"}},
         "metrics[1].labels", "takes the labels queue"),
        ({"name": "jobs_failed", "value": -1}, "metrics[1].value", "a counter only grows"),
        ({"name": "jobs_failed", "value": "1"}, "metrics[1].value", "must be a number"),
        ({"name": "jobs_failed", "value": 1, "values": [1]}, "metrics[1].value", "give value"),
        ({"name": "job_seconds", "values": []}, "metrics[1].values", "1 to 10000 numbers"),
        ({"name": "job_seconds", "values": [1, True]}, "metrics[1].values[1]", "a number"),
    ],
)  # fmt: skip
async def test_a_wrong_sample_is_refused_and_nothing_of_its_batch_recorded(
    client: Client, sample: dict[str, Any], field: str, words: str
) -> None:
    good = {"name": "queue_depth", "value": 7, "labels": {"queue": "mail"}}
    import json

    data = json.dumps({"metrics": [good, sample]})
    response = await client.post("/api/v1/telemetry", data=data,
                                 headers={**API, "Content-Type": "application/json"})  # fmt: skip
    answer = await response.json()
    assert response.status == 400, answer
    assert answer["field"] == field
    assert words in answer["message"]
    assert ("telemetry_queue_depth", (("queue", "mail"),)) not in samples(
        await (await client.get("/metrics")).text())  # fmt: skip


def test_label_sets_are_bounded_and_a_batch_past_the_bound_records_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bridge.telemetry.exporter.MAX_SERIES", 2)
    telemetry = Telemetry()
    telemetry.declare([custom.CustomMetric("queue_depth", "gauge", "Jobs", ("queue",))])
    telemetry.record("queue_depth", 1, {"queue": "a"})
    telemetry.record("queue_depth", 2, {"queue": "b"})
    telemetry.record("queue_depth", 3, {"queue": "a"})  # a known label set: fine
    with pytest.raises(InvalidInput, match="2 label sets already"):
        telemetry.record("queue_depth", 4, {"queue": "c"})
    with pytest.raises(InvalidInput, match="unknown metric"):
        telemetry.record("other", 1)
    with pytest.raises(InvalidInput, match="must be finite"):
        telemetry.record("queue_depth", float("nan"), {"queue": "a"})
    values = [s.value for m in telemetry.custom["queue_depth"][1].collect() for s in m.samples]
    assert sorted(values) == [2.0, 3.0]


async def test_rules_on_declared_metrics_fire_in_the_embedded_evaluator(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """A gauge over its threshold, a counter's rate over its window, a histogram's p95:
    each rule fires in process as Prometheus would judge the same values."""
    now = [1000.0]
    settings = settings_of(tmp_path)
    telemetry = Telemetry(settings.namespace, window_seconds=60, clock=lambda: now[0])
    app = create_app(settings, background=False, telemetry=telemetry)
    await aiohttp_client(app)
    rules = [r.replace(for_seconds=0) for r in settings.rules if r.name in
             ("queue_backlog", "jobs_failing", "jobs_slow")]  # fmt: skip
    embedded = EmbeddedEvaluator(rules, telemetry, "alertbridge", "127.0.0.1:9470")
    telemetry.tick()
    telemetry.record("queue_depth", 150, {"queue": "mail"})
    telemetry.record("queue_depth", 3, {"queue": "sms"})
    telemetry.record("jobs_failed", 60)  # 60 in 60 s: 1 a second, over 0.5
    telemetry.record("job_seconds", [8.0] * 20)  # p95 between 1 and 10 s, over 5
    now[0] += 60
    values = telemetry.snapshot().custom
    assert values["queue_depth"] == 150
    assert values["jobs_failed"] == pytest.approx(1.0)
    assert 5 < values["job_seconds"] <= 10
    await embedded.evaluate_once(app[STORE])
    fired = {a.alertname for a in await app[STORE].list_alerts(AlertQuery())}
    assert fired == {"queue_backlog", "jobs_failing", "jobs_slow"}
    assert app[TELEMETRY] is telemetry


def test_the_dashboard_has_a_panel_per_declared_metric_with_its_rules_thresholds(
    tmp_path: Path,
) -> None:
    import json

    from bridge.generate import DASHBOARD_PATH

    dashboard = json.loads(render_all(settings_of(tmp_path)).files[DASHBOARD_PATH])
    panels = {p["title"]: p for p in dashboard["panels"]}
    queue = panels["queue_depth (gauge)"]
    assert queue["targets"][0]["expr"] == (
        'max by (job, instance) (telemetry_queue_depth{instance=~"$instance"})'
    )
    steps = queue["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, 100]
    assert "jobs_failed (counter)" in panels
    assert "job_seconds (histogram)" in panels


def test_a_declared_metric_is_exported_by_name_as_its_rules_read_it(tmp_path: Path) -> None:
    from bridge.export.telemetry import queries_for

    settings = settings_of(tmp_path)
    queries = {q.metric: q.expr for q in queries_for([], "telemetry", declared=settings.metrics)}
    assert queries["queue_depth"] == "max by (job, instance) (telemetry_queue_depth)"
    assert "system.cpu.percent" in queries  # with the five built in
    (one,) = queries_for(["jobs_failed"], "telemetry", declared=settings.metrics)
    assert one.expr == "sum by (job, instance) (rate(telemetry_jobs_failed_total[5m]))"
