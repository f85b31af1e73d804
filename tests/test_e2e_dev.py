"""`alertbridge dev` starts the real stack, prints its URLs and stops it all on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from tests.support import bridge_env, http_json, http_text, prom_query, wait_for

pytestmark = pytest.mark.e2e


def _stopped(proc: subprocess.Popen[str]) -> None:
    """A `dev` a test failed in is stopped as Ctrl-C does (a kill leaves its stack running)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.parametrize("ha", [False, True], ids=["single", "ha"])
def test_dev_stack_runs_and_stops_on_sigint(tmp_path: Path, ha: bool) -> None:
    """The URLs answer /-/ready, Prometheus scrapes the bridge (and with --ha alerts both
    replicas, which gossip as one cluster), SIGINT stops everything."""
    argv = [sys.executable, "-m", "bridge", "dev", "--dir", str(tmp_path / "dev")]
    argv += ["--ha"] if ha else []
    lines: list[tuple[str, str]] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bridge_env()
    ) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            while len(lines) < (4 if ha else 3) and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                name, url = line.split()[:2]
                lines.append((name, url))
            names = [name for name, _ in lines]
            assert names == ["alertbridge", "prometheus", "alertmanager"] + (
                ["alertmanager"] if ha else []
            )
            for _, url in lines:
                assert http_text(f"{url}/-/ready")
            urls = dict(lines[:2])
            up = wait_for("bridge scraped", lambda: prom_query(urls["prometheus"], "up == 1"), 30)
            assert up[0]["metric"]["instance"] == urls["alertbridge"].removeprefix("http://")
            replicas = [url for name, url in lines if name == "alertmanager"]
            if ha:
                peers = json.loads(http_text(f"{replicas[0]}/api/v2/status"))["cluster"]["peers"]
                assert len(peers) == 2
                active = wait_for("both replicas alerted", lambda: len(json.loads(http_text(
                    f"{urls['prometheus']}/api/v1/alertmanagers"))["data"]["activeAlertmanagers"])
                    == 2, 30)  # fmt: skip
                assert active
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            _stopped(proc)
    for _, url in lines:
        with pytest.raises(urllib.error.URLError, match="Connection refused"):
            http_text(f"{url}/-/ready")


#: A rule that fires at once on pushed telemetry, fast Alertmanager timers, and a reconciler
#: that runs once at start and then not for an hour: an alert stored, or resolved, in this
#: test came by Alertmanager's webhook or not at all.
DEV_CONFIG = """
rules:
  - {name: high_cpu, for: 0}
prometheus: {scrape_interval: 1s, evaluation_interval: 1s}
alertmanager: {group_wait: 1s, group_interval: 1s, reconcile_interval: 1h}
telemetry: {system: push, sample_interval: 1s}
"""


def _webhook_posts(bridge: str) -> float:
    """The bridge's count of webhook notifications it answered 200."""
    for line in http_text(f"{bridge}/metrics").splitlines():
        if line.startswith('alertbridge_webhook_requests_total{code="200"}'):
            return float(line.split()[-1])
    return 0.0


def test_dev_alertmanager_notifies_its_own_bridge(tmp_path: Path) -> None:
    """`dev` wires its Alertmanager's receiver to the dev bridge: an alert fires and resolves
    through the webhook (its counter, and the events' actor), not the reconciler."""
    config = tmp_path / "dev.yml"
    config.write_text(DEV_CONFIG, encoding="utf-8")
    argv = [sys.executable, "-m", "bridge", "--config", str(config), "dev",
            "--dir", str(tmp_path / "dev")]  # fmt: skip
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bridge_env()
    ) as proc:
        try:
            assert proc.stdout is not None
            bridge = proc.stdout.readline().split()[1]
            for _ in range(2):
                proc.stdout.readline()
            assert _webhook_posts(bridge) == 0
            http_json(f"{bridge}/api/v1/telemetry", {"cpu_usage_ratio": 0.9})

            def stored(status: str) -> list[dict[str, object]]:
                body = http_json(f"{bridge}/api/v1/alerts?status={status}")[1]
                return list(body["alerts"])

            (alert,) = wait_for("high_cpu stored", lambda: stored("firing"), 60)
            assert _webhook_posts(bridge) >= 1
            http_json(f"{bridge}/api/v1/telemetry", {"cpu_usage_ratio": 0.1})
            (done,) = wait_for("high_cpu resolved", lambda: stored("resolved"), 60)
            assert done["id"] == alert["id"]
            assert done["resolution"] == "alertmanager"
            events = http_json(f"{bridge}/api/v1/alerts/{alert['id']}")[1]["events"]
            actors = {e["kind"]: e["actor"] for e in events}
            assert actors["fired"] == "alertmanager", events
            assert actors["resolved"] == "alertmanager", events
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            _stopped(proc)
