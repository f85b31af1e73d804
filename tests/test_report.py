"""Reports against a history whose figures were worked out by hand (below), through the CLI on
the database, the REST API, and the report page; the time-to-acknowledge histogram and its
Grafana panel."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from bridge.cli import main
from bridge.config import load_settings
from bridge.core.rules import DEFAULT_RULES
from bridge.core.times import NS, format_time
from bridge.generate.grafana import render_dashboard
from bridge.http.app import create_app
from bridge.store.sqlite.store import SqliteStore
from tests.payloads import am_alert, notification
from tests.stores import T0, Sync

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


def at(seconds: float) -> int:
    return T0 + int(seconds * NS)


@pytest.fixture
def history(tmp_path: Path) -> str:
    """Times in seconds after T0 (2026-11-23T10:00:00Z), ids in order of firing:

    1 A warning fp a1: fires 0, acked 60 by alice, assigned bob 70, resolved 300
    2 A warning fp a1: fires 400 (100 s after 1 ended: a flap), never acked, resolved 500
    3 A warning fp a2: fires 1000, escalated level 0 at 1000 and level 1 at 1100, acked 1180
    4 B critical fp b1: fires 0, acked 30, resolved 90
    5 B critical fp b1: fires 2000 (1910 s after 4 ended: no flap), escalated level 0 at
      2000, still firing, never acked

    By hand: time to acknowledge by rule A [60, 180] -> median 120, p90 180; B [30]. Time to
    resolve A [300, 100] -> median 200, p90 300; B [90]. By assignee: bob [60]; nobody
    [30, 180] -> median 105, p90 180. Noisiest A 3, B 2. Flapping A 1. Never acknowledged
    A 1, B 1. Levels (window ends at 3000): level 0 [100 (3: to level 1), 1000 (5: to the
    end)] -> median 550, p90 1000; level 1 [80 (3: to its ack)].
    """
    path = tmp_path / "h.db"
    Sync(SqliteStore(path)).close()  # the schema
    # Rows written straight in SQL, for exact times: the history, not how it came about.
    conn = sqlite3.connect(path)
    rows = [  # id, fingerprint, rule, severity, status, starts, ends, acked, by, assignee
        (1, "a" * 16, "A", "warning", "resolved", 0, 300, 60, "alice", "bob"),
        (2, "a" * 16, "A", "warning", "resolved", 400, 500, None, None, None),
        (3, "c" * 16, "A", "warning", "firing", 1000, None, 1180, "alice", None),
        (4, "b" * 16, "B", "critical", "resolved", 0, 90, 30, "carol", None),
        (5, "b" * 16, "B", "critical", "firing", 2000, None, None, None, None),
    ]
    for i, fp, rule, sev, status, starts, ends, acked, by, assignee in rows:
        labels = json.dumps({"alertname": rule, "severity": sev})
        conn.execute(
            "INSERT INTO alerts (id, fingerprint, status, alertname, severity, labels,"
            " annotations, generator_url, source, starts_at, ends_at, first_received_at,"
            " last_received_at, receive_count, acked_at, acked_by, assignee, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, '{}', '', 'alertmanager', ?, ?, ?, ?, 1, ?, ?, ?, ?)",
            (i, fp, status, rule, sev, labels, at(starts), None if ends is None else at(ends),
             at(starts), at(starts), None if acked is None else at(acked), by, assignee,
             at(starts)),
        )  # fmt: skip
    for alert_id, when, detail in ((3, 1000, "level 0: pager"), (3, 1100, "level 1: lead"),
                                   (5, 2000, "level 0: pager (round 1)")):  # fmt: skip
        sql = (
            "INSERT INTO events (alert_id, at, kind, actor, detail)"
            " VALUES (?, ?, 'escalated', 'escalation', ?)"
        )
        conn.execute(sql, (alert_id, at(when), detail))
    conn.commit()
    conn.close()
    return str(path)


WINDOW = ["--since", format_time(at(-1)) or "", "--until", format_time(at(3000)) or ""]


def expect(data: dict[str, Any]) -> None:
    def stat(count: int, median: float, p90: float) -> dict[str, Any]:
        return {"count": count, "median_seconds": median, "p90_seconds": p90}

    assert data["episodes"] == 5
    tta, ttr = data["time_to_acknowledge"], data["time_to_resolve"]
    assert tta["rule"] == {"A": stat(2, 120, 180), "B": stat(1, 30, 30)}
    assert tta["severity"] == {"critical": stat(1, 30, 30), "warning": stat(2, 120, 180)}
    assert tta["assignee"] == {"(nobody)": stat(2, 105, 180), "bob": stat(1, 60, 60)}
    assert ttr["rule"] == {"A": stat(2, 200, 300), "B": stat(1, 90, 90)}
    assert data["noisiest_rules"] == [{"rule": "A", "episodes": 3}, {"rule": "B", "episodes": 2}]
    assert data["flapping_rules"] == [{"rule": "A", "flaps": 1}]
    assert data["never_acknowledged"] == [{"rule": "A", "episodes": 1},
                                          {"rule": "B", "episodes": 1}]  # fmt: skip
    assert data["time_at_escalation_level"] == {"0": stat(2, 550, 1000), "1": stat(1, 80, 80)}
    assert data["episodes_per_rule_per_day"] == {"A": {"2026-11-23": 3}, "B": {"2026-11-23": 2}}


def test_the_cli_report_matches_the_hand_computed_figures(history: str) -> None:
    out = CliRunner().invoke(main, ["report", "--db", history, *WINDOW, "-o", "json"])
    assert out.exit_code == 0, out.output
    expect(json.loads(out.output))
    text = CliRunner().invoke(main, ["report", "--db", history, *WINDOW]).output
    assert "time to acknowledge, by rule" in text
    assert "flapping rules (fired again within 10m)" in text
    tight = CliRunner().invoke(main, ["report", "--db", history, *WINDOW, "--flap", "50s",
                                      "-o", "json"])  # fmt: skip
    assert json.loads(tight.output)["flapping_rules"] == []  # 100 s apart: not within 50 s


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "since"),
        (["--since", "1h", "--until", "2h"], "must be after since"),
        (["--flap", "ten"], "flap"),
    ],
)
def test_report_mistakes(history: str, args: list[str], message: str) -> None:
    out = CliRunner().invoke(main, ["report", "--db", history, *args])
    assert out.exit_code == 1
    assert message in out.output


async def test_the_api_and_the_page_say_the_same(aiohttp_client: MakeClient, history: str) -> None:
    settings = load_settings(None, {}, db=history)
    client = await aiohttp_client(create_app(settings, background=False))
    query = {"since": WINDOW[1], "until": WINDOW[3]}
    response = await client.get("/api/v1/report", params=query)
    assert response.status == 200
    expect(await response.json())
    bad = await client.get("/api/v1/report", params={"since": "nope"})
    assert bad.status == 400
    assert (await bad.json())["field"] == "since"
    await client.post("/signin", data={"name": "viewer", "next": "/reports"})
    page = await client.get("/reports", params=query)
    assert page.status == 200
    html = await page.text()
    assert "<svg" in html
    assert "Median time to acknowledge, by rule" in html
    assert "2m" in html  # A's median time to acknowledge, 120 s


async def test_acknowledging_observes_the_time_to_acknowledge(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    settings = load_settings(None, {}, db=str(tmp_path / "a.db"))
    settings = dataclasses.replace(settings)
    client = await aiohttp_client(create_app(settings, background=False))
    payload = notification(am_alert("0000000000000001", severity="critical"))
    assert (await client.post("/api/v1/alertmanager", json=payload)).status == 200
    assert (await client.post("/api/v1/alerts/1/ack", json={"by": "x"})).status == 200
    text = await (await client.get("/metrics")).text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = families["alertbridge_time_to_acknowledge_seconds"].samples
    count = [s.value for s in samples if s.name.endswith("_count")
             and s.labels == {"severity": "critical"}]  # fmt: skip
    assert count == [1.0]


def test_the_dashboard_has_a_time_to_acknowledge_panel() -> None:
    dashboard = json.loads(render_dashboard(list(DEFAULT_RULES), "app", "alertbridge"))
    panel = next(p for p in dashboard["panels"] if p["title"].startswith("Time to acknowledge"))
    exprs = [t["expr"] for t in panel["targets"]]
    assert exprs == [
        "histogram_quantile(0.5, sum by (le) "
        "(rate(alertbridge_time_to_acknowledge_seconds_bucket[1h])))",
        "histogram_quantile(0.9, sum by (le) "
        "(rate(alertbridge_time_to_acknowledge_seconds_bucket[1h])))",
    ]


def test_time_to_acknowledge_counts_from_the_first_acknowledgement(tmp_path: Path) -> None:
    """Acknowledged, withdrawn and acknowledged again: from the first (60 s, not 300 s); one
    acknowledged and withdrawn was acknowledged (not "never")."""
    from bridge.export.report import of_store
    from tests.stores import received

    with Sync(SqliteStore(tmp_path / "r.db")) as store:
        store.ingest([received(), received(fingerprint="f" * 16, starts=at(10))], at(0))
        store.acknowledge(1, "alice", "", at(60))
        store.unacknowledge(1, "alice", "", at(120))
        store.acknowledge(1, "bob", "", at(300))
        store.acknowledge(2, "alice", "", at(40))
        store.unacknowledge(2, "alice", "", at(50))
        report = of_store(store.store, at(-1), at(1000), 600).to_json()
    stats = report["time_to_acknowledge"]["rule"]["high_cpu"]
    assert (stats["count"], stats["median_seconds"], stats["p90_seconds"]) == (2, 45, 60)
    assert report["never_acknowledged"] == []
