"""What real senders send, through the real Alertmanager 0.25 on loopback, with the
reconciler on: a start Alertmanager set itself (nanoseconds in the webhook, milliseconds in
its API), a group of 2,500 alerts, a group with one oversized alert."""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bridge.core.times import format_time, now_ns
from bridge.host.tools import find_tool
from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    generate_stack,
    http_json,
    http_text,
    running,
    stack_config,
    start_alertmanager,
    start_bridge,
    wait_for,
)

pytestmark = pytest.mark.e2e
API, HOOK = "e2e-api", "e2e-hook"

CONFIG = stack_config(scrape=False, reconcile="{reconcile}", resend="1s")


@contextmanager
def stack(tmp: Path, reconcile: str = "1s") -> Iterator[tuple[str, str]]:
    """A bridge and an Alertmanager notifying it (no Prometheus: alerts are posted to
    Alertmanager as any client does); yields (bridge URL, Alertmanager URL)."""
    bridge_port, am_port = free_port(), free_port()
    config, gen = generate_stack(tmp, CONFIG, HOOK, loop=LOOPBACK, bridge=bridge_port,
                                 am=am_port, reconcile=reconcile)  # fmt: skip
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)
    with (
        running(start_bridge(tmp, bridge_port, env, config)),
        running(start_alertmanager(tmp, gen / "alertmanager/alertmanager.yml", am_port)),
    ):
        yield f"http://{LOOPBACK}:{bridge_port}", f"http://{LOOPBACK}:{am_port}"


def alerts(base: str, **params: str) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"limit": "1000", **params})
    status, body = http_json(f"{base}/api/v1/alerts?{query}", token=API)
    assert status == 200, body
    found: list[dict[str, Any]] = body["alerts"]
    return found


def count(base: str, **params: str) -> int:
    """Stored alerts matching params, all pages."""
    total, cursor = 0, ""
    for _ in range(100):
        query = {"limit": "1000", **params, **({"cursor": cursor} if cursor else {})}
        status, body = http_json(f"{base}/api/v1/alerts?{urllib.parse.urlencode(query)}",
                                 token=API)  # fmt: skip
        assert status == 200, body
        total += len(body["alerts"])
        cursor = body.get("next_cursor") or ""
        if not cursor:
            return total
    raise AssertionError("more than 100 pages")


def metric(base: str, name: str) -> float:
    """The sum of a metric's samples on the bridge's /metrics."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in http_text(f"{base}/metrics").splitlines()
               if line.startswith(name) and line[len(name)] in " {")  # fmt: skip


def rounds_after(base: str, more: int) -> None:
    """Until the reconciler made `more` trusted rounds from now (bounded: 30 s)."""
    name = 'alertbridge_reconcile_rounds_total{outcome="trusted"}'
    start = metric(base, name)
    wait_for(f"{more} reconcile rounds", lambda: metric(base, name) >= start + more, 30)


def test_a_start_alertmanager_set_itself_is_one_episode_acked_and_resolved(
    tmp_path: Path,
) -> None:
    """`amtool alert add` (no startsAt): the webhook's start has nanoseconds, the API's only
    milliseconds; one row whatever the reconciler reads, firing and silenced once
    acknowledged, resolved when Alertmanager resolves it."""
    with stack(tmp_path) as (base, am):
        subprocess.run(
            [find_tool("amtool"), f"--alertmanager.url={am}", "alert", "add", "amtool_made",
             "severity=warning", "--annotation=summary=made by hand"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        (listed,) = wait_for("listed", lambda: http_json(f"{am}/api/v2/alerts")[1], 30)
        api_digits = len(listed["startsAt"].rstrip("Z").split(".")[1])

        def exact() -> list[dict[str, Any]]:
            """The stored row once it has the webhook's start (the reconciler may have
            stored the episode first, from the API's)."""
            rows = alerts(base, rule="amtool_made")
            digits = [len(a["starts_at"].rstrip("Z").split(".")[1]) for a in rows]
            return rows if digits and digits[0] > api_digits else []

        (alert,) = wait_for("stored with the webhook's start", exact, 30)
        assert alert["starts_at"].startswith(listed["startsAt"].rstrip("Z"))
        rounds_after(base, 3)
        (alert,) = alerts(base)  # the reconciler saw it listed: still one row
        assert (alert["status"], alert["am_state"]) == ("firing", "active")
        status, _ = http_json(f"{base}/api/v1/alerts/{alert['id']}/ack",
                              {"by": "alice", "comment": "on it"}, API)  # fmt: skip
        assert status == 200
        wait_for("silenced", lambda: alerts(base)[0]["silence_state"] == "active", 30)
        rounds_after(base, 3)
        (alert,) = alerts(base)
        assert (alert["status"], alert["silence_state"]) == ("firing", "active")
        (listed,) = http_json(f"{am}/api/v2/alerts")[1]
        assert listed["status"]["silencedBy"] == [alert["silence_id"]]
        # Alertmanager resolves it (muted: no webhook comes; the reconciler learns it).
        ended = {"labels": listed["labels"], "startsAt": listed["startsAt"],
                 "endsAt": format_time(now_ns())}  # fmt: skip
        assert http_json(f"{am}/api/v2/alerts", [ended])[0] == 200
        done = wait_for("resolved", lambda: alerts(base, status="resolved"), 30)
        assert [a["id"] for a in done] == [alert["id"]]
        assert count(base) == 1
        assert wait_for("silence expired",
                        lambda: alerts(base)[0]["silence_state"] == "expired", 30)  # fmt: skip


def test_a_group_of_2500_is_stored_whole_and_resolves_whole(tmp_path: Path) -> None:
    """One group_by group of 2,500 alerts (about 1.1 MB) in one notification: every alert
    stored by the webhook (the reconciler idle for an hour), then resolved by it."""
    starts = format_time(now_ns() - 10**9)
    group = [{"labels": {"alertname": "fleet_down", "job": "node", "instance": "all",
                         "pod": f"pod-{i:05d}", "severity": "warning"},
              "annotations": {"summary": f"pod {i} of the fleet is down " + "x" * 200},
              "startsAt": starts} for i in range(2500)]  # fmt: skip
    with stack(tmp_path, reconcile="1h") as (base, am):
        assert http_json(f"{am}/api/v2/alerts", group)[0] == 200
        wait_for("all stored", lambda: count(base, status="firing") == 2500, 60)
        assert metric(base, "alertbridge_webhook_requests_total") >= 1
        assert metric(base, 'alertbridge_webhook_requests_total{code="413"}') == 0
        ended = [{**a, "endsAt": format_time(now_ns())} for a in group]
        assert http_json(f"{am}/api/v2/alerts", ended)[0] == 200
        wait_for("all resolved", lambda: count(base, status="resolved") == 2500, 60)
        assert count(base) == 2500
        sample = alerts(base, status="resolved")[0]
        assert sample["resolution"] == "alertmanager"


def test_a_group_with_one_oversized_alert_stores_all_six(tmp_path: Path) -> None:
    """The sixth alert's label value of 4,097 characters is clipped and marked, its five
    neighbours stored as they are, all by the webhook; acknowledging it silences it in
    Alertmanager (a matcher on the clipped value's prefix), and it alone."""
    group = [{"labels": {"alertname": "big_one", "job": "app", "instance": "a",
                         "pod": f"pod-{i}" + ("y" * 4097 if i == 5 else "")}}
             for i in range(6)]  # fmt: skip
    with stack(tmp_path, reconcile="1h") as (base, am):  # a round only when an ack kicks it
        assert http_json(f"{am}/api/v2/alerts", group)[0] == 200
        wait_for("six stored", lambda: count(base) == 6, 30)
        wait_for("counted", lambda: metric(base, "alertbridge_alerts_clipped_total") == 1, 10)
        stored = alerts(base)
        clipped = [a for a in stored if a["clipped"]]
        assert len(clipped) == 1
        assert clipped[0]["clipped"] == ["labels.pod"]
        assert len(clipped[0]["labels"]["pod"]) == 4096
        status, _ = http_json(f"{base}/api/v1/alerts/{clipped[0]['id']}/ack",
                              {"by": "alice"}, API)  # fmt: skip
        assert status == 200

        def muted() -> bool:
            listed = http_json(f"{am}/api/v2/alerts?silenced=true")[1]
            big = [a for a in listed if len(a["labels"]["pod"]) > 4096]
            return bool(big and big[0]["status"]["silencedBy"])

        assert wait_for("the clipped alert silenced in Alertmanager", muted, 30)
        others = [a for a in http_json(f"{am}/api/v2/alerts")[1]
                  if len(a["labels"]["pod"]) <= 4096]  # fmt: skip
        assert len(others) == 5
        assert all(not a["status"]["silencedBy"] for a in others)
