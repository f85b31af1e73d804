"""`alertbridge dev` starts the real stack, prints its URLs and stops it all on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from tests.support import bridge_env, http_text, prom_query, wait_for

pytestmark = pytest.mark.e2e


def test_dev_stack_runs_and_stops_on_sigint(tmp_path: Path) -> None:
    """Three URLs answer /-/ready, Prometheus scrapes the bridge, SIGINT stops all three."""
    argv = [sys.executable, "-m", "bridge", "dev", "--dir", str(tmp_path / "dev")]
    urls: dict[str, str] = {}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bridge_env()
    ) as proc:
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            while len(urls) < 3 and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                name, url = line.split()[:2]
                urls[name] = url
            assert set(urls) == {"alertbridge", "prometheus", "alertmanager"}
            for url in urls.values():
                assert http_text(f"{url}/-/ready")
            up = wait_for("bridge scraped", lambda: prom_query(urls["prometheus"], "up == 1"), 30)
            assert up[0]["metric"]["instance"] == urls["alertbridge"].removeprefix("http://")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    for url in urls.values():
        with pytest.raises(urllib.error.URLError, match="Connection refused"):
            http_text(f"{url}/-/ready")
