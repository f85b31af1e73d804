"""The store tells the truth when Alertmanager restarts or mutes alerts, when the bridge
restarts, and when an operator resolves by hand: on the real Debian binaries, loopback."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from bridge.cli import main
from bridge.host.tools import find_tool
from tests.support import (
    LOOPBACK,
    PUSH_TELEMETRY,
    Proc,
    bridge_env,
    free_port,
    generate_stack,
    http_json,
    http_text,
    running,
    stack_config,
    start_alertmanager,
    start_bridge,
    start_prometheus,
    wait_for,
)
from tests.test_e2e_alerting import API, HOOK, am_alerts, stored

pytestmark = pytest.mark.e2e

# Prometheus resends firing alerts every 2 s here (--rules.alert.resend-delay), so a
# restarted Alertmanager's list is complete after about 3 s: trusted after 6 s.
CONFIG = stack_config(
    rules="  - {{name: high_cpu, for: 0, cooldown_seconds: {repeat}}}\n"
    "  - {{name: critical_cpu, for: 0}}\n",
    alertmanager_target="{targets}",
    am="urls: [{urls}]",
    resend="6s",
    rest=PUSH_TELEMETRY,
)
PROMETHEUS_FLAGS = ["--rules.alert.resend-delay=2s"]


def metric(base: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(http_text(f"{base}/metrics")):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def rounds(base: str, outcome: str) -> float:
    return metric(base, "alertbridge_reconcile_rounds_total", outcome=outcome)


def cli(*args: str) -> Any:
    result = CliRunner(env={"ALERTBRIDGE_API_TOKEN": API}).invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def push(base: str, cpu: float) -> None:
    status, body = http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": cpu}, API)
    assert status == 200, body


def one(base: str, rule: str) -> dict[str, Any]:
    (alert,) = stored(base, rule=rule, sort="newest")
    return alert


class Stack:
    """Bridge, Prometheus and one or two Alertmanager replicas (gossiping when two)."""

    def __init__(self, tmp: Path, replicas: int = 1, repeat: int = 300) -> None:
        self.tmp = tmp
        self.bridge_port, self.prom_port = free_port(), free_port()
        self.am_ports = [free_port() for _ in range(replicas)]
        self.gossip = [free_port() for _ in range(replicas)]
        targets = ",".join(f"{LOOPBACK}:{p}" for p in self.am_ports)
        urls = ", ".join(f'"http://{LOOPBACK}:{p}"' for p in self.am_ports)
        self.config, gen = generate_stack(tmp, CONFIG, HOOK, loop=LOOPBACK, bridge=self.bridge_port,
                                          targets=targets, urls=urls, repeat=repeat)  # fmt: skip
        self.am_config = gen / "alertmanager/alertmanager.yml"
        self.prom_config = gen / "prometheus/prometheus.yml"
        self.base = f"http://{LOOPBACK}:{self.bridge_port}"
        self.ams = [f"http://{LOOPBACK}:{p}" for p in self.am_ports]
        self.env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)

    def alertmanager(self, i: int) -> Proc:
        cluster = None
        if len(self.am_ports) > 1:
            peers = [f"--cluster.peer={LOOPBACK}:{g}" for g in self.gossip if g != self.gossip[i]]
            cluster = [f"--cluster.listen-address={LOOPBACK}:{self.gossip[i]}",
                       f"--cluster.advertise-address={LOOPBACK}:{self.gossip[i]}",
                       *peers, "--cluster.settle-timeout=2s"]  # fmt: skip
        return start_alertmanager(self.tmp, self.am_config, self.am_ports[i], f"am-{i}", cluster)

    def bridge(self) -> Proc:
        return start_bridge(self.tmp, self.bridge_port, self.env, self.config)

    def prometheus(self) -> Proc:
        return start_prometheus(self.tmp, self.prom_config, self.prom_port, PROMETHEUS_FLAGS)


@pytest.mark.parametrize("acked", [False, True], ids=["active", "acknowledged"])
def test_an_alertmanager_restart_resolves_nothing(tmp_path: Path, acked: bool) -> None:
    """Firing and stored (and acknowledged: silenced); Alertmanager stopped and restarted on
    its storage: reconcile rounds run while it is down and while its list is empty or young;
    the alert is still firing, the same episode, after Prometheus resends; when the condition
    ends it resolves (for the acknowledged one, learnt from the list: a silenced alert sends
    no resolved)."""
    stack = Stack(tmp_path)
    base = stack.base
    with running(stack.bridge()), running(stack.prometheus()):
        am = stack.alertmanager(0)
        with running(am):
            push(base, 0.85)
            alert = wait_for("high_cpu stored", lambda: stored(base, rule="high_cpu"), 60)[0]
            if acked:
                cli("ack", str(alert["id"]), "--url", base, "--by", "oncall")
                wait_for("silenced", lambda: one(base, "high_cpu")["silence_state"] == "active", 30)
            wait_for("seen by a trusted round", lambda: one(base, "high_cpu")["am_state"], 30)
        failed = rounds(base, "failed")
        wait_for("a round while Alertmanager is down", lambda: rounds(base, "failed") > failed, 30)
        untrusted = rounds(base, "untrusted")
        with running(stack.alertmanager(0)) as again:
            assert again is not am
            wait_for("a round on the restarted Alertmanager's young list",
                     lambda: rounds(base, "untrusted") > untrusted, 30)  # fmt: skip
            wait_for("Prometheus resent it", lambda: am_alerts(stack.ams[0], "high_cpu"), 30)
            trusted = rounds(base, "trusted")
            wait_for("trusted rounds again", lambda: rounds(base, "trusted") > trusted + 2, 30)
            current = one(base, "high_cpu")
            assert (current["id"], current["status"]) == (alert["id"], "firing")
            assert current["resolution"] is None
            push(base, 0.10)
            done = wait_for("resolved", lambda: one(base, "high_cpu")["status"] == "resolved"
                            and one(base, "high_cpu"), 60)  # fmt: skip
    assert done["id"] == alert["id"]
    assert done["resolution"] == ("inferred" if acked else "alertmanager")


def test_inhibited_and_silenced_alerts_are_stored_as_suppressed(tmp_path: Path) -> None:
    """The warning twin inhibited by its critical: suppressed, inhibited by the critical's id;
    active again once the critical resolves. A silence made by hand (amtool): suppressed and
    silenced by it, shown so in the table."""
    stack = Stack(tmp_path)
    base, am = stack.base, stack.ams[0]
    with running(stack.bridge()), running(stack.alertmanager(0)), running(stack.prometheus()):
        push(base, 0.97)
        critical = wait_for("critical", lambda: stored(base, rule="critical_cpu"), 60)[0]
        warning = wait_for("warning suppressed", lambda: one(base, "high_cpu")["am_state"]
                           == "suppressed" and one(base, "high_cpu"), 60)  # fmt: skip
        assert [i["alert_id"] for i in warning["am_inhibited_by"]] == [critical["id"]]
        table = cli("alerts", "--url", base).output
        assert f"firing, inhibited by #{critical['id']}" in table
        push(base, 0.85)
        wait_for("warning active again", lambda: one(base, "high_cpu")["am_state"] == "active", 60)
        silence = subprocess.run(
            [find_tool("amtool"), f"--alertmanager.url={am}", "silence", "add",
             "alertname=high_cpu", "--comment=maintenance", "--author=ops", "--duration=1h"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout.strip()  # fmt: skip
        silenced = wait_for("silenced by hand", lambda: one(base, "high_cpu")["am_silenced_by"]
                            == [silence] and one(base, "high_cpu"), 60)  # fmt: skip
        assert silenced["am_state"] == "suppressed"
        assert silenced["silence_state"] is None  # not our silence: no ack
        assert "firing, silenced" in cli("alerts", "--url", base).output
        suppressed = stored(base, am_state="suppressed")
        assert [a["alertname"] for a in suppressed] == ["high_cpu"]


def test_a_manual_resolution_is_reopened_by_alertmanager(tmp_path: Path) -> None:
    """Resolved by hand while it still fires: Alertmanager still has it firing, which the
    next reconcile round (1 s) or notification (the rule's 2 s repeat interval) brings: it
    is reopened, the same episode, with the event saying why."""
    stack = Stack(tmp_path, repeat=2)
    base = stack.base
    with running(stack.bridge()), running(stack.alertmanager(0)), running(stack.prometheus()):
        push(base, 0.85)
        alert = wait_for("stored", lambda: stored(base, rule="high_cpu"), 60)[0]
        cli("resolve", str(alert["id"]), "--url", base, "--by", "ann", "-c", "I think it is over")
        # (not read back here: the next reconcile round, within 1 s, may have reopened it
        # already; the trail below shows the resolution, then the reopening)
        reopened = wait_for("reopened", lambda: one(base, "high_cpu")["status"] == "firing"
                            and one(base, "high_cpu"), 60)  # fmt: skip
        detail = http_json(f"{base}/api/v1/alerts/{alert['id']}", token=API)[1]
        kinds = [(e["kind"], e["actor"]) for e in detail["events"]]
        assert ("resolved", "ann") in kinds
        assert kinds.index(("resolved", "ann")) < len(kinds) - 1
        assert kinds[-1] in (("reopened", "alertmanager"), ("reopened", "reconciler"))
        assert detail["events"][-1]["detail"] == (
            "Alertmanager has it firing again after it was resolved by hand"
        )
        assert reopened["id"] == alert["id"]
        assert len(stored(base, rule="high_cpu")) == 1


def test_with_one_replica_stopped_the_ack_completes_on_the_other(tmp_path: Path) -> None:
    """Two gossiping replicas; one is stopped; an ack makes its silence on the other, the ack
    completes, and the alert (listed by the replica that is up) is not resolved."""
    stack = Stack(tmp_path, replicas=2)
    base = stack.base
    with (
        running(stack.bridge()),
        running(stack.alertmanager(0)) as first,
        running(stack.alertmanager(1)),
        running(stack.prometheus()),
    ):
        peers = http_json(f"{stack.ams[1]}/api/v2/status")[1]["cluster"]["peers"]
        assert len(peers) == 2
        push(base, 0.85)
        alert = wait_for("stored", lambda: stored(base, rule="high_cpu"), 60)[0]
        assert first.stop(signal.SIGTERM) == 0
        cli("ack", str(alert["id"]), "--url", base, "--by", "oncall")
        acked = wait_for("silence made", lambda: one(base, "high_cpu")["silence_state"]
                         == "active" and one(base, "high_cpu"), 30)  # fmt: skip
        found = http_json(f"{stack.ams[1]}/api/v2/silence/{acked['silence_id']}")[1]
        assert found["status"]["state"] == "active"
        trusted = rounds(base, "trusted")
        wait_for("more rounds", lambda: rounds(base, "trusted") > trusted + 2, 30)
        assert one(base, "high_cpu")["status"] == "firing"


def _serve_embedded(tmp: Path, port: int, name: str) -> Proc:
    config = tmp / "embedded.yml"
    config.write_text(yaml.safe_dump({
        "rules": [{"name": "high_cpu", "for": 0}, {"name": "critical_cpu", "enabled": False}],
        "telemetry": {"system": "push", "sample_interval": "1s"},
    }))  # fmt: skip
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API)
    return start_bridge(tmp, port, env, config, name=name)


def test_embedded_restarts_continue_or_close_episodes(tmp_path: Path) -> None:
    """No Alertmanager: serve stopped while high_cpu fires and restarted with CPU still high
    continues the same episode (same id, event "continued"); stopped again and restarted with
    CPU low, it is resolved with the reason."""
    port = free_port()
    base = f"http://{LOOPBACK}:{port}"

    def trail(alert_id: int) -> list[str]:
        detail = http_json(f"{base}/api/v1/alerts/{alert_id}", token=API)[1]
        return [e["kind"] for e in detail["events"]]

    with running(_serve_embedded(tmp_path, port, "first")):
        push(base, 0.90)
        alert = wait_for("fired", lambda: stored(base, rule="high_cpu"), 30)[0]
    with running(_serve_embedded(tmp_path, port, "second")):
        push(base, 0.90)
        wait_for("continued", lambda: "continued" in trail(alert["id"]), 30)
        assert [a["id"] for a in stored(base, rule="high_cpu")] == [alert["id"]]
        assert one(base, "high_cpu")["status"] == "firing"
    with running(_serve_embedded(tmp_path, port, "third")):
        push(base, 0.10)
        wait_for("resolved at restart", lambda: one(base, "high_cpu")["status"] == "resolved", 30)
        final = one(base, "high_cpu")
        detail = http_json(f"{base}/api/v1/alerts/{alert['id']}", token=API)[1]
    assert (final["id"], final["resolution"]) == (alert["id"], "restart")
    assert detail["events"][-1]["detail"] == "condition no longer held at restart"
