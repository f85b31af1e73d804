"""The dead man's switch end to end on the Debian `prometheus` and `prometheus-alertmanager`:
heartbeats arrive through Alertmanager; Alertmanager stopped, the bridge raises
AlertingPipelineSilent and tells a receiver directly (a loopback stand-in for an on-call
webhook); Alertmanager back, the alert resolves and the receiver is told."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    LOOPBACK,
    PUSH_TELEMETRY,
    bridge_env,
    free_port,
    generate_stack,
    http_json,
    running,
    stack_config,
    start_alertmanager,
    start_bridge,
    start_prometheus,
    wait_for,
)
from tests.test_e2e_alerting import API, HOOK, stored
from tests.test_e2e_escalation import stand_in

pytestmark = pytest.mark.e2e

CONFIG = stack_config(
    resend="6s",
    receivers="  receivers:\n    - {{name: oncall, type: webhook, severities: [critical],"
    ' config: {{url: "{direct}"}}}}\n',
    rest="heartbeat:\n  interval: 1s\n  timeout: 6s\n  notify: oncall\n" + PUSH_TELEMETRY,
)


def heartbeat(base: str) -> dict[str, Any]:
    status, body = http_json(f"{base}/api/v1/status", token=API)
    assert status == 200, body
    state: dict[str, Any] = body["heartbeat"]
    return state


def test_alertmanager_stopped_the_dead_mans_switch_tells_the_direct_receiver(
    tmp_path: Path,
) -> None:
    with stand_in() as receivers:
        bridge_port, prom_port, am_port = free_port(), free_port(), free_port()
        config, gen = generate_stack(tmp_path, CONFIG, HOOK, loop=LOOPBACK, bridge=bridge_port,
                                     am=am_port, direct=f"{receivers.url}/direct")  # fmt: skip
        base = f"http://{LOOPBACK}:{bridge_port}"
        env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)
        am_config = gen / "alertmanager/alertmanager.yml"
        # Alertmanager and Prometheus up before the bridge: its first heartbeat comes at once
        am = start_alertmanager(tmp_path, am_config, am_port)
        prometheus = start_prometheus(tmp_path, gen / "prometheus/prometheus.yml", prom_port,
                                      ["--rules.alert.resend-delay=2s"])  # fmt: skip
        with running(prometheus), running(start_bridge(tmp_path, bridge_port, env, config)):
            with running(am):
                wait_for("heartbeats", lambda: heartbeat(base)["state"] == "ok", 30)
                names = {a["alertname"] for a in stored(base)}
                assert names == set()  # heartbeats are not alerts, and none went missing
            # Alertmanager is down: no heartbeat; past the timeout the receiver is told.
            receivers.wait("/direct", timeout=30)
            [body] = [b for b, _ in receivers.at("/direct")]
            assert body["alerts"][0]["labels"]["alertname"] == "AlertingPipelineSilent"
            assert heartbeat(base)["state"] == "silent"
            [alert] = [a for a in stored(base, status="firing")
                       if a["alertname"] == "AlertingPipelineSilent"]  # fmt: skip
            assert (alert["alertname"], alert["severity"]) == ("AlertingPipelineSilent",
                                                               "critical")  # fmt: skip
            with running(start_alertmanager(tmp_path, am_config, am_port)):
                receivers.wait("/direct", timeout=30, firing=False)
                assert heartbeat(base)["state"] == "ok"
                assert [a for a in stored(base, status="firing")
                        if a["alertname"] == "AlertingPipelineSilent"] == []  # fmt: skip
