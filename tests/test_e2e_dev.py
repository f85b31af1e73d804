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

from tests.support import bridge_env, http_text, prom_query, wait_for

pytestmark = pytest.mark.e2e


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
            if proc.poll() is None:
                proc.kill()
    for _, url in lines:
        with pytest.raises(urllib.error.URLError, match="Connection refused"):
            http_text(f"{url}/-/ready")
