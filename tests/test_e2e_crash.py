"""SIGKILL the bridge while Alertmanager delivers; after a restart every alert is stored once.

No reconciler here (no alertmanager.url for the bridge): what was lost must come back through
Alertmanager's own retries, which only stop after a 2xx, and a 2xx is sent only after commit.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    generate_stack,
    http_json,
    running,
    scraped,
    stack_config,
    start_alertmanager,
    start_bridge,
    wait_for,
)
from tests.test_e2e_alerting import API, HOOK

pytestmark = pytest.mark.e2e
WAVE = 1000

CONFIG = stack_config(prometheus=False, am=None, reconcile=None)


def inject(am: str, first: int, count: int) -> None:
    """Post alerts to Alertmanager as Prometheus would, one group each."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    alerts: list[dict[str, Any]] = [
        {"labels": {"alertname": "high_cpu", "severity": "warning", "job": "app",
                    "instance": f"host-{i:04d}:9100", "metric": "system.cpu.percent"},
         "annotations": {"summary": f"host {i}"}, "startsAt": now}
        for i in range(first, first + count)
    ]  # fmt: skip
    status, _ = http_json(f"{am}/api/v2/alerts", alerts)
    assert status == 200


def count(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        rows: int = conn.execute("SELECT count(*) FROM alerts").fetchone()[0]
        return rows


def test_sigkill_during_delivery_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """1,100 alerts, the bridge killed mid-delivery and restarted: 1,100 rows, integrity ok.

    A first wave of 1,000 (the bridge stores 200 in a few tens of milliseconds: with 200, a
    poll delayed on a busy machine found them all stored before the kill)."""
    bridge_port, am_port = free_port(), free_port()
    config, gen = generate_stack(tmp_path, CONFIG, HOOK, loop=LOOPBACK, bridge=bridge_port)
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)
    am = f"http://{LOOPBACK}:{am_port}"
    db = tmp_path / "bridge.db"
    with running(start_alertmanager(tmp_path, gen / "alertmanager/alertmanager.yml", am_port)):
        first = start_bridge(tmp_path, bridge_port, env, config)
        with running(first):
            inject(am, 0, WAVE)
            wait_for("some stored", lambda: count(db) >= 3, 30, every=0.01)
            assert first.stop(signal.SIGKILL) == -signal.SIGKILL
        stored_at_kill = count(db)
        # Killed mid-delivery: some of the first wave stored, not all.
        assert 0 < stored_at_kill < WAVE, stored_at_kill
        inject(am, WAVE, 100)  # delivered to nobody for now: Alertmanager keeps retrying
        with running(start_bridge(tmp_path, bridge_port, env, config, name="bridge-again")):
            wait_for("all stored", lambda: count(db) == WAVE + 100, 60)
        # Alertmanager saw deliveries fail while the bridge was down, and retried them.
        failed = scraped(
            am, "alertmanager_notification_requests_failed_total", integration="webhook"
        )
        assert failed > 0
    print(f"\nstored before SIGKILL: {stored_at_kill}, after restart: {count(db)}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        dupes = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM alerts GROUP BY fingerprint, starts_at"
            " HAVING count(*) > 1)"
        ).fetchone()[0]
        assert dupes == 0
        hosts = {
            r[0] for r in conn.execute("SELECT json_extract(labels, '$.instance') FROM alerts")
        }
    assert hosts == {f"host-{i:04d}:9100" for i in range(WAVE + 100)}
