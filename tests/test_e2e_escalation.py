"""Escalation end to end on the Debian `prometheus` and `prometheus-alertmanager`: the bridge
posts a copy of the alert per level to Alertmanager, whose generated routes deliver it to the
level's receivers. Loopback HTTP servers stand in for Slack, PagerDuty and a generic webhook
(those services cannot be reached from here) and record exactly what they receive."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main
from tests.support import (
    LOOPBACK,
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
from tests.test_e2e_state import metric

pytestmark = pytest.mark.e2e

RULES = """\
  - {{name: critical_cpu, for: 0}}
  # Fires whatever the bridge's telemetry (a restarted bridge has lost what was pushed)
  - {{name: always_critical, metric: pipeline, expr: "vector(1)", condition: ">",
      threshold: 0, severity: critical, for: 0, enabled: {always}}}
"""
RECEIVERS = """\
  receivers:
    - {{name: ops-slack, type: slack, severities: [critical],
        config: {{api_url: "{stand_in}/slack", channel: "#ops", send_resolved: true}}}}
    - {{name: pager, type: pagerduty, severities: [critical],
        config: {{url: "{stand_in}/pagerduty", routing_key: "test-key"}}}}
    - {{name: manager, type: webhook, severities: [critical],
        config: {{url: "{stand_in}/manager"}}}}
    - {{name: teams-ops, type: msteams, severities: [critical],
        config: {{webhook_url_file: "{teams_url}"}}}}
    - {{name: broken, type: webhook, severities: [info],
        config: {{url: "http://{loop}:{closed}/nobody-listens"}}}}
"""
POLICIES = """\
escalation:
  worker: {worker}
  repost_interval: 1s
  policies:
    - name: page
      {ack_timeout}
      steps:
        - notify: [ops-slack]
        - wait: {wait}s
        - notify: [{level1}]
          {window}
        - wait: {wait}s
        - notify: [manager]
  routes:
    - {{severities: [critical], policy: page}}
telemetry: {{system: push, sample_interval: 1s}}
"""
CONFIG = stack_config(rules=RULES, resend="6s", receivers=RECEIVERS, rest=POLICIES)
WAIT = 3  # seconds between levels


class StandIn:
    """A loopback HTTP server answering 200 to every POST and recording (path, body, time)."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.received: list[tuple[str, Any, float]] = []
        self.failures = dict(failures or {})  # path -> how many requests to answer 500
        self.changed = threading.Condition()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with recorder.changed:
                    recorder.received.append((self.path, body, time.monotonic()))
                    recorder.changed.notify_all()
                    failing = recorder.failures.get(self.path, 0) > 0
                    if failing:
                        recorder.failures[self.path] -= 1
                if failing:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b"Teams is down")
                    return
                self.send_response(202 if self.path == "/pagerduty" else 200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": "success"}' if self.path == "/pagerduty" else b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def at(self, path: str, firing: bool = True) -> list[tuple[Any, float]]:
        """What `path` received that notifies of a firing (or, with False, resolved) alert."""
        with self.changed:
            return [(b, t) for p, b, t in self.received if p == path and _firing(p, b) == firing]

    def wait(self, path: str, count: int = 1, timeout: float = 30, firing: bool = True) -> float:
        """Block (bounded) until `path` has received `count` such notifications; the time
        of the last of them (time.monotonic)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.at(path, firing)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    got = len(self.at(path, firing))
                    raise AssertionError(
                        f"{path}: {got} of {count} after {timeout}s: {self.received}"
                    )
                self.changed.wait(left)
            return self.at(path, firing)[count - 1][1]


def _firing(path: str, body: Any) -> bool:
    if path == "/teams":
        return "[FIRING" in json.dumps(body)
    if path == "/pagerduty":
        return bool(body.get("event_action") == "trigger")
    if path == "/slack":
        return "[FIRING" in json.dumps(body)
    return bool(body.get("status") == "firing")


@contextmanager
def stand_in(failures: dict[str, int] | None = None) -> Iterator[StandIn]:
    server = StandIn(failures)
    try:
        yield server
    finally:
        server.close()


class Stack:
    """Bridge, Prometheus and Alertmanager generated from CONFIG, receivers at `receivers`."""

    def __init__(self, tmp: Path, receivers: StandIn, ack_timeout: int = 0, window: str = "",
                 always: bool = False, level1: str = "pager",
                 worker: str = "process") -> None:  # fmt: skip
        self.rule = "always_critical" if always else "critical_cpu"
        self.tmp = tmp
        self.bridge_port, self.prom_port, self.am_port = free_port(), free_port(), free_port()
        teams_url = tmp / "teams-url"
        teams_url.write_text(f"{receivers.url}/teams\n")
        self.config, gen = generate_stack(
            tmp, CONFIG, HOOK, loop=LOOPBACK, bridge=self.bridge_port, am=self.am_port,
            stand_in=receivers.url, wait=WAIT, window=window, always=str(always).lower(),
            teams_url=teams_url, level1=level1, closed=free_port(), worker=worker,
            ack_timeout=f"ack_timeout: {ack_timeout}s" if ack_timeout else "",
        )  # fmt: skip
        self.gen = gen
        self.base = f"http://{LOOPBACK}:{self.bridge_port}"
        self.am = f"http://{LOOPBACK}:{self.am_port}"
        self.env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)

    def bridge(self) -> Any:
        return start_bridge(self.tmp, self.bridge_port, self.env, self.config)

    def prometheus(self) -> Any:
        # An alert firing at the first evaluation, before the Alertmanager is discovered,
        # is dropped and resent only after --rules.alert.resend-delay (1m by default).
        return start_prometheus(self.tmp, self.gen / "prometheus/prometheus.yml", self.prom_port,
                                ["--rules.alert.resend-delay=2s"])  # fmt: skip

    def alertmanager(self) -> Any:
        return start_alertmanager(self.tmp, self.gen / "alertmanager/alertmanager.yml",
                                  self.am_port)  # fmt: skip

    def fire(self) -> int:
        if self.rule == "critical_cpu":
            body = {"cpu_usage_ratio": 0.99}
            status, answer = http_json(f"{self.base}/api/v1/telemetry", body, API)
            assert status == 200, answer
        alert = wait_for(f"{self.rule} stored", lambda: stored(self.base, rule=self.rule), 60)
        return int(alert[0]["id"])

    def escalation(self, alert_id: int) -> dict[str, Any]:
        status, body = http_json(f"{self.base}/api/v1/alerts/{alert_id}/escalation", token=API)
        assert status == 200, body
        [esc] = body["escalations"]
        result: dict[str, Any] = esc
        return result

    def copies_in_alertmanager(self) -> list[dict[str, Any]]:
        """Escalation copies Alertmanager holds that have not ended."""
        _, alerts = http_json(f"{self.am}/api/v2/alerts")
        return [a for a in alerts if "escalation_level" in a["labels"]
                and a["status"]["state"] != "unprocessed" and _active(a)]  # fmt: skip

    def trail(self, alert_id: int) -> list[tuple[str, str, str]]:
        _, body = http_json(f"{self.base}/api/v1/alerts/{alert_id}", token=API)
        return [(e["kind"], e["actor"], e["detail"]) for e in body["events"]
                if e["kind"].startswith("escalat")]  # fmt: skip


def _active(alert: dict[str, Any]) -> bool:
    from bridge.core.times import parse_rfc3339

    ends = parse_rfc3339(alert["endsAt"])
    return ends is None or ends > time.time_ns()


def _reposted_after(stack: Stack, alert_id: int, count: int) -> None:
    """Wait (bounded) until the bridge has posted its copies again `count` more times: the
    window in which a duplicate delivery would have shown."""
    seen = {stack.escalation(alert_id)["reposted_at"]}

    def more() -> bool:
        seen.add(stack.escalation(alert_id)["reposted_at"])
        return len(seen) > count

    wait_for(f"{count} reposts", more, 30)


@pytest.mark.parametrize("worker", ["process", "inline"])
def test_nobody_acknowledges_each_level_is_delivered_once_in_time(
    tmp_path: Path, worker: str
) -> None:
    """In the engine's own process (the default) and in the server's (inline)."""
    with stand_in() as receivers:
        stack = Stack(tmp_path, receivers, worker=worker)
        with running(stack.alertmanager()), running(stack.bridge()), running(stack.prometheus()):
            alert_id = stack.fire()
            t0 = receivers.wait("/slack")
            t1 = receivers.wait("/pagerduty")
            t2 = receivers.wait("/manager")
            assert WAIT - 1.0 <= t1 - t0 <= WAIT + 2.5
            assert WAIT - 1.0 <= t2 - t1 <= WAIT + 2.5
            _reposted_after(stack, alert_id, 3)
            assert [len(receivers.at(p)) for p in ("/slack", "/pagerduty", "/manager")] == [1, 1, 1]
            slack = json.dumps(receivers.at("/slack")[0][0])
            assert "critical_cpu" in slack
            pager = receivers.at("/pagerduty")[0][0]
            assert pager["payload"]["custom_details"]["firing"]
            hook = receivers.at("/manager")[0][0]
            labels = hook["alerts"][0]["labels"]
            assert (labels["escalation_policy"], labels["escalation_level"]) == ("page", "2")
            assert hook["alerts"][0]["annotations"]["alertbridge_id"] == str(alert_id)
            escalated = [d for k, _, d in stack.trail(alert_id) if k == "escalated"]
            assert escalated == ["level 0: ops-slack", "level 1: pager", "level 2: manager"]
            # The bridge stored none of its copies as alerts of their own.
            assert [a["id"] for a in stored(stack.base)] == [alert_id]


def test_acknowledged_during_level_1_level_2_never_comes(tmp_path: Path) -> None:
    with stand_in() as receivers:
        stack = Stack(tmp_path, receivers)
        with running(stack.alertmanager()), running(stack.bridge()), running(stack.prometheus()):
            alert_id = stack.fire()
            t0 = receivers.wait("/slack")
            receivers.wait("/pagerduty")
            status, body = http_json(f"{stack.base}/api/v1/alerts/{alert_id}/ack",
                                     {"by": "oncall"}, API)  # fmt: skip
            assert status == 200, body
            wait_for("copies ended in Alertmanager", lambda: not stack.copies_in_alertmanager(), 30)
            esc = stack.escalation(alert_id)
            assert (esc["state"], esc["copies"], esc["due_at"]) == ("acknowledged", [], None)
            # Level 2 was due at t0 + 2 * WAIT: look on past it (bounded) for a delivery.
            wait_for("past level 2's due time", lambda: time.monotonic() > t0 + 2 * WAIT + 2, 30)
            assert receivers.at("/manager") == []
            assert len(receivers.at("/pagerduty")) == 1


def test_the_bridge_killed_during_level_1_level_2_on_time_level_1_not_again(
    tmp_path: Path,
) -> None:
    with stand_in() as receivers:
        stack = Stack(tmp_path, receivers, always=True)
        with running(stack.alertmanager()), running(stack.prometheus()):
            bridge = stack.bridge()
            with running(bridge):
                alert_id = stack.fire()
                t0 = receivers.wait("/slack")
                receivers.wait("/pagerduty")
                bridge.stop(signal.SIGKILL)
            with running(stack.bridge()):
                t2 = receivers.wait("/manager")
                assert 2 * WAIT - 1.0 <= t2 - t0 <= 2 * WAIT + 3.0
                _reposted_after(stack, alert_id, 2)
                assert [len(receivers.at(p)) for p in ("/slack", "/pagerduty", "/manager")] == [
                    1, 1, 1
                ]  # fmt: skip
                escalated = [d for k, _, d in stack.trail(alert_id) if k == "escalated"]
                assert escalated == ["level 0: ops-slack", "level 1: pager", "level 2: manager"]


def test_the_ack_timeout_restarts_escalation_and_a_step_outside_its_window_is_skipped(
    tmp_path: Path,
) -> None:
    today = time.gmtime().tm_wday
    never = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][(today + 3) % 7]
    window = f"when: {{timezone: UTC, days: [{never}]}}"
    with stand_in() as receivers:
        stack = Stack(tmp_path, receivers, ack_timeout=2, window=window)
        with running(stack.alertmanager()), running(stack.bridge()), running(stack.prometheus()):
            alert_id = stack.fire()
            receivers.wait("/slack")
            status, body = http_json(f"{stack.base}/api/v1/alerts/{alert_id}/ack",
                                     {"by": "oncall"}, API)  # fmt: skip
            assert status == 200, body
            # Two seconds later the acknowledgement is withdrawn and level 0 comes again.
            receivers.wait("/slack", count=2, timeout=30)
            trail = stack.trail(alert_id)
            assert ("escalation_restarted", "escalation",
                    "policy page: acknowledgement withdrawn (timed out): from the first step"
                    ) in trail  # fmt: skip
            _, detail = http_json(f"{stack.base}/api/v1/alerts/{alert_id}", token=API)
            assert not detail["acknowledged"]
            # Level 1 (pager) is outside its window: skipped; level 2 comes after both waits.
            receivers.wait("/manager", timeout=30)
            assert receivers.at("/pagerduty") == []
            skipped = [d for k, _, d in stack.trail(alert_id) if k == "escalation_skipped"]
            assert skipped[:1] == [f"level 1: pager: outside {never} 00:00-24:00 UTC"]


def test_teams_through_the_adapter_a_card_and_a_retry_when_teams_fails(tmp_path: Path) -> None:
    """Level 1 notifies Teams through the bridge's adapter (Alertmanager 0.25 has no Teams):
    the stand-in answers 500 to the first attempt, Alertmanager retries, the second gets the
    card: title, severity, escalation level and the command that acknowledges the alert."""
    with stand_in({"/teams": 1}) as receivers:
        stack = Stack(tmp_path, receivers, level1="pager, teams-ops")
        with running(stack.alertmanager()), running(stack.bridge()), running(stack.prometheus()):
            alert_id = stack.fire()
            receivers.wait("/teams", count=2, timeout=40)
            first, second = (body for body, _ in receivers.at("/teams"))
            assert first == second  # the same card, delivered again
            content = second["attachments"][0]["content"]
            assert content["body"][0]["text"] == "[FIRING:1] critical_cpu"
            facts = {f["title"]: f["value"] for f in content["body"][-1]["facts"]}
            assert facts["Severity"] == "critical"
            assert facts["Escalation"] == "level 1 of page"
            assert facts["Acknowledge"] == f"alertbridge ack {alert_id}"
            outcomes = [
                metric(stack.base, "alertbridge_adapter_notifications_total", adapter="msteams",
                       receiver="teams-ops", outcome=outcome)
                for outcome in ("failed", "delivered")
            ]  # fmt: skip
            assert outcomes == [1.0, 1.0]


def test_channels_test_reports_delivery_and_failure_and_stats_count_them(tmp_path: Path) -> None:
    """`channels test` sends through Alertmanager to one receiver and judges by Alertmanager's
    counters: the stand-in up, success (exit 0, and only that receiver got it); a receiver
    whose endpoint is down, failure (exit 1). `channels stats` and GET /api/v1/channels show
    the attempts and the failure."""
    with stand_in() as receivers:
        stack = Stack(tmp_path, receivers)
        with running(stack.alertmanager()), running(stack.bridge()):
            runner = CliRunner(env={"ALERTBRIDGE_API_TOKEN": API})
            ok = runner.invoke(main, ["--config", str(stack.config), "channels", "test",
                                      "manager", "--timeout", "20"])  # fmt: skip
            assert ok.exit_code == 0, ok.output
            assert ok.output.startswith("ok: manager: delivered by Alertmanager's webhook")
            [(body, _)] = receivers.at("/manager")
            assert body["alerts"][0]["labels"]["alertname"] == "AlertbridgeChannelTest"
            assert [p for p, _, _ in receivers.received] == ["/manager"]  # to it alone
            bad = runner.invoke(main, ["--config", str(stack.config), "channels", "test",
                                       "broken", "--timeout", "20"])  # fmt: skip
            assert bad.exit_code == 1
            assert "FAIL: broken: Alertmanager's webhook integration failed" in bad.output
            missing = runner.invoke(main, ["--config", str(stack.config), "channels", "test",
                                           "nobody"])  # fmt: skip
            assert missing.exit_code == 1
            assert "no receiver named 'nobody'" in missing.output
            stats = runner.invoke(main, ["--config", str(stack.config), "channels", "stats",
                                         "-o", "json"])  # fmt: skip
            [webhook] = [s for s in json.loads(stats.output)["alertmanager"][stack.am]
                         if s["integration"] == "webhook"]  # fmt: skip
            assert webhook["attempts"] >= 2
            assert webhook["attempts_failed"] >= 1
            status, body = http_json(f"{stack.base}/api/v1/channels", token=API)
            assert status == 200, body
            [served] = [s for s in body["alertmanager"][stack.am] if s["integration"] == "webhook"]
            assert served["attempts_failed"] >= 1
            assert {"name": "manager", "type": "webhook", "severities": ["critical"],
                    "integration": "webhook"} in body["receivers"]  # fmt: skip
            assert stored(stack.base) == []  # test alerts are not stored


def test_the_escalation_worker_killed_is_started_again_and_goes_on(tmp_path: Path) -> None:
    """The engine runs in a worker process of the server's; killed during level 1, the
    server starts it again, and level 2 still comes (once), level 1 not again."""
    import psutil

    with stand_in() as receivers:
        stack = Stack(tmp_path, receivers, always=True)
        with running(stack.alertmanager()), running(stack.prometheus()):
            bridge = stack.bridge()
            with running(bridge):
                alert_id = stack.fire()
                receivers.wait("/pagerduty")
                server = psutil.Process(bridge.popen.pid)
                [worker] = [c for c in server.children()
                            if "escalation-worker" in c.cmdline()]  # fmt: skip
                worker.kill()

                def again() -> list[Any]:
                    return [c for c in server.children() if c.pid != worker.pid
                            and "escalation-worker" in c.cmdline()]  # fmt: skip

                restarted = wait_for("a new worker", again, 20)
                assert len(restarted) == 1
                receivers.wait("/manager", timeout=30)
                _reposted_after(stack, alert_id, 2)
                assert [len(receivers.at(p)) for p in ("/slack", "/pagerduty", "/manager")] == [
                    1, 1, 1
                ]  # fmt: skip
                assert metric(stack.base, "alertbridge_escalations_total", policy="page",
                              level="2") == 1.0  # fmt: skip
            assert not psutil.pid_exists(restarted[0].pid) or (
                psutil.Process(restarted[0].pid).status() == psutil.STATUS_ZOMBIE
            )  # stopped with the server
