"""Two `alertbridge serve` processes on one PostgreSQL database (the tests' own cluster), as
two replicas behind Alertmanager HA: every notification goes to both; the replica doing the
background work is SIGKILLed midway; every notification answered 2xx is stored exactly once,
and the other replica takes the background lease over within its term. And PostgreSQL
restarted under load: 503 while it is down, then 200 again without a restart of the bridge."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.payloads import am_alert, notification
from tests.pg import Cluster, cluster
from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    http_text,
    running,
    start_bridge,
    wait_for,
)

pytestmark = pytest.mark.e2e
HOOK = {"Authorization": "Bearer hook"}
TERM = 2  # seconds: the lease's term here (server.lease_duration, 15 s by default)


def leader_of(urls: list[str]) -> list[bool]:
    """Which of the bridges say (alertbridge_background_leader) they hold the lease."""
    out = []
    for url in urls:
        try:
            text = http_text(f"{url}/metrics")
        except OSError:
            out.append(False)
            continue
        line = next(x for x in text.splitlines() if x.startswith("alertbridge_background_leader"))
        out.append(float(line.split()[-1]) == 1.0)
    return out


def until(what: str, probe: Callable[[], object], seconds: float) -> float:
    """wait_for another process (bounded); the seconds it took."""
    began = time.monotonic()
    wait_for(what, probe, seconds, every=0.05)
    return time.monotonic() - began


def test_the_leader_killed_midway_loses_nothing_and_is_replaced(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    url = pg_cluster.new_database()
    env = bridge_env(ALERTBRIDGE_WEBHOOK_TOKEN="hook", ALERTBRIDGE_API_TOKEN="api",
                     ALERTBRIDGE_STORE_PASSWORD_FILE=str(pg_cluster.password_file),
                     ALERTBRIDGE_LEASE_DURATION=f"{TERM}s")  # fmt: skip
    ports = [free_port(), free_port()]
    urls = [f"http://{LOOPBACK}:{p}" for p in ports]
    with (
        running(start_bridge(tmp_path, ports[0], env, name="a", db=url)) as a,
        running(start_bridge(tmp_path, ports[1], env, name="b", db=url)) as b,
    ):
        until("one leader", lambda: sum(leader_of(urls)) == 1, 10)
        first = leader_of(urls).index(True)
        victim, survivor = (a, b)[first], (a, b)[1 - first]
        answered: set[str] = set()

        async def load() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

                async def post(target: str, fingerprint: str) -> None:
                    body = notification(am_alert(fingerprint))
                    try:
                        async with http.post(f"{target}/api/v1/alertmanager", json=body,
                                             headers=HOOK) as r:  # fmt: skip
                            if r.status == 200:
                                answered.add(fingerprint)
                    except (aiohttp.ClientError, TimeoutError):
                        pass  # the killed one: Alertmanager would retry it

                for n in range(300):
                    if n == 150:
                        victim.popen.kill()  # SIGKILL, mid-load
                    fingerprint = f"{n:016x}"
                    # both replicas get it, several in flight at once
                    await asyncio.gather(*(post(u, fingerprint) for u in urls))

        asyncio.run(load())
        taken = until("the other replica leads", lambda: leader_of(urls)[1 - first], 10)
        assert taken <= TERM * 4 / 3 + 2  # its term and a third, and slack for the machine
        listed = http_text_auth(f"{urls[1 - first]}/api/v1/alerts?limit=1000", "api")
        fingerprints = [x["fingerprint"] for x in listed["alerts"]]
        assert len(fingerprints) == len(set(fingerprints))  # one row per episode
        assert answered <= set(fingerprints)  # every 2xx is on disk
        assert len(answered) == 300  # the survivor answered every one
        assert survivor.popen.poll() is None


def http_text_auth(url: str, token: str) -> dict[str, list[dict[str, str]]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        data: dict[str, list[dict[str, str]]] = json.loads(response.read())
        return data


def test_postgresql_restarted_under_load_answers_503_then_recovers(tmp_path: Path) -> None:
    """PostgreSQL stopped (immediate: as a crash) and started again while notifications
    arrive: 503 while it is down (Alertmanager retries those), 200 again once it is back,
    with no restart of the bridge; every notification answered 200 is stored."""
    with cluster() as own:
        url = own.new_database()
        env = bridge_env(ALERTBRIDGE_WEBHOOK_TOKEN="hook", ALERTBRIDGE_API_TOKEN="api",
                         ALERTBRIDGE_STORE_PASSWORD_FILE=str(own.password_file))  # fmt: skip
        port = free_port()
        base = f"http://{LOOPBACK}:{port}"
        with running(start_bridge(tmp_path, port, env, name="bridge", db=url)):
            answered: dict[str, int] = {}

            async def load() -> None:
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
                    for n in range(600):
                        if n == 150:
                            own.pg_ctl("stop", "-m", "immediate", "-w")
                        if n == 300:
                            own.start_again()
                        fingerprint = f"{n:016x}"
                        body = notification(am_alert(fingerprint))
                        async with http.post(f"{base}/api/v1/alertmanager", json=body,
                                             headers=HOOK) as r:  # fmt: skip
                            answered[fingerprint] = r.status
                            if r.status != 200:
                                assert r.status == 503, await r.text()
                                assert (await r.json())["error"] == "storage_unavailable"

            asyncio.run(load())
            codes = list(answered.values())
            assert codes[:150] == [200] * 150
            assert 503 in codes[150:300]
            assert codes[-100:] == [200] * 100  # recovered by itself
            listed = http_text_auth(f"{base}/api/v1/alerts?limit=1000", "api")
            stored = {x["fingerprint"] for x in listed["alerts"]}
            assert {f for f, code in answered.items() if code == 200} <= stored
