"""Two clustered Alertmanagers (gossip on loopback) both notify the bridge: one row per episode.

Alertmanager delivers at least once; each replica may send the same notification, stale
"firing" after "resolved" included (FACTS.md). The store must end with exactly one row per
(fingerprint, startsAt) episode, in its final state: with one bridge on SQLite, and with two
bridges on one PostgreSQL database, each Alertmanager notifying both (every notification
reaches the store up to four times, through two replicas at once).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    generate_stack,
    http_json,
    http_text,
    running,
    start_alertmanager,
    start_bridge,
    start_prometheus,
    wait_for,
)
from tests.test_e2e_alerting import API, CONFIG, HOOK, stored

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_replicas_one_row_per_episode(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Two firing/resolved cycles through a 2-node cluster: two rows, both resolved, no dupes."""
    bridge_port, prom_port, second_port = free_port(), free_port(), free_port()
    am_ports, gossip = (free_port(), free_port()), (free_port(), free_port())
    template = CONFIG.replace("reconcile_interval: 1s", "reconcile_interval: 1h")
    # Prometheus alerts both Alertmanagers (the generated config lists both).
    template = template.replace('alertmanager_target: "{loop}:{am}"',
                                'alertmanager_target: "{loop}:{am},{loop}:{am2}"')  # fmt: skip
    if backend == "postgresql":  # each Alertmanager notifies both bridges, as generated from
        # alertmanager.webhook_urls (the compose profile `ha`'s configuration)
        template = template.replace(
            'webhook_url: "http://{loop}:{bridge}/api/v1/alertmanager"',
            'webhook_urls: ["http://{loop}:{bridge}/api/v1/alertmanager",'
            ' "http://{loop}:{second}/api/v1/alertmanager"]',
        )
    config, gen = generate_stack(tmp_path, template, HOOK, loop=LOOPBACK, bridge=bridge_port,
                                 am=am_ports[0], am2=am_ports[1], second=second_port)  # fmt: skip
    prom_config = gen / "prometheus/prometheus.yml"

    def cluster(i: int) -> list[str]:
        # The second replica waits peer-timeout for the first's notification log, which
        # gossip brings only every gossip-interval: so both deliver every notification, the
        # duplicates HA produces whenever gossip is slower than the peer timeout.
        return [f"--cluster.listen-address={LOOPBACK}:{gossip[i]}",
                f"--cluster.advertise-address={LOOPBACK}:{gossip[i]}",
                f"--cluster.peer={LOOPBACK}:{gossip[1 - i]}",
                "--cluster.settle-timeout=2s", "--cluster.peer-timeout=10ms",
                "--cluster.gossip-interval=3s"]  # fmt: skip

    am_config = gen / "alertmanager/alertmanager.yml"
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)
    base = f"http://{LOOPBACK}:{bridge_port}"
    db, bridges = "bridge.db", contextlib.ExitStack()
    if backend == "postgresql":
        pg = request.getfixturevalue("pg_cluster")
        db = pg.new_database()
        env["ALERTBRIDGE_STORE_PASSWORD_FILE"] = str(pg.password_file)
        hooks = yaml.safe_load(am_config.read_text())["receivers"][0]["webhook_configs"]
        assert len(hooks) == 2
        bridges.enter_context(
            running(start_bridge(tmp_path, second_port, env, config, name="bridge-b", db=db))
        )
    with (
        bridges,
        running(start_bridge(tmp_path, bridge_port, env, config, db=db)),
        running(start_alertmanager(tmp_path, am_config, am_ports[0], "am-a", cluster(0))),
        running(start_alertmanager(tmp_path, am_config, am_ports[1], "am-b", cluster(1))),
        running(start_prometheus(tmp_path, prom_config, prom_port)),
    ):
        peers = http_json(f"http://{LOOPBACK}:{am_ports[0]}/api/v2/status")[1]["cluster"]["peers"]
        assert len(peers) == 2

        def firing() -> int:
            return len(stored(base, rule="high_cpu", status="firing"))

        for cycle in range(2):
            http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": 0.85}, API)
            wait_for(f"cycle {cycle} firing", lambda: firing() == 1, 60)
            http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": 0.10}, API)
            wait_for(f"cycle {cycle} resolved", lambda: firing() == 0, 60)
        episodes = stored(base, rule="high_cpu")
        assert len(episodes) == 2
        assert {a["status"] for a in episodes} == {"resolved"}
        assert len({(a["fingerprint"], a["starts_at"]) for a in episodes}) == 2
        assert len({a["fingerprint"] for a in episodes}) == 1  # same alert, two episodes
        counts = [a["receive_count"] for a in episodes]
        print("\nreceive counts per episode:", counts)
        # Each episode needs one firing and one resolved delivery; more arrived, from both
        # replicas, and still made one row each.
        assert sum(counts) > 2 * len(episodes), counts
        if backend == "postgresql":  # the other replica sees the same rows (read a moment
            # later: a late duplicate may have moved receive_count and last_received_at since)

            def episode_keys(alerts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
                return [(a["id"], a["fingerprint"], a["starts_at"], a["status"]) for a in alerts]

            other = stored(f"http://{LOOPBACK}:{second_port}", rule="high_cpu")
            assert episode_keys(other) == episode_keys(episodes)
            # An ack through the replica that does not lead is silenced in Alertmanager by
            # the one that does at once (its reconcile_interval here is 1 h: only the wake-up
            # between replicas, NOTIFY, can bring it within the wait).
            urls = [base, f"http://{LOOPBACK}:{second_port}"]
            leading = [u for u in urls if "alertbridge_background_leader 1.0" in
                       http_text(f"{u}/metrics")]  # fmt: skip
            assert len(leading) == 1, leading
            follower = next(u for u in urls if u not in leading)
            http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": 0.85}, API)
            wait_for("firing again", lambda: firing() == 1, 60)
            (alert,) = stored(follower, rule="high_cpu", status="firing")
            status, body = http_json(f"{follower}/api/v1/alerts/{alert['id']}/ack",
                                     {"by": "oncall", "comment": "on it"}, API)  # fmt: skip
            assert status == 200, body

            def silenced() -> bool:
                (now,) = stored(follower, rule="high_cpu", status="firing")
                return bool(now["silence_state"] == "active")

            wait_for("silence made by the leading replica", silenced, 20)
