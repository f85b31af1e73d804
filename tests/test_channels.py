"""Delivery statistics from Alertmanager's metrics text (its real format, 0.25 and 0.27 with
receiver names), and the generated test routes. The probe itself, on the real Alertmanager:
tests/test_e2e_escalation.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.alertmanager.channels import parse_metrics, totals
from bridge.cli.channels import stats_rows
from bridge.config import load_settings
from bridge.generate.alertmanager import render_alertmanager

METRICS = """
# HELP alertmanager_notification_latency_seconds The latency of notifications in seconds.
# TYPE alertmanager_notification_latency_seconds histogram
alertmanager_notification_latency_seconds_bucket{integration="webhook",le="1"} 9
alertmanager_notification_latency_seconds_bucket{integration="webhook",le="5"} 10
alertmanager_notification_latency_seconds_bucket{integration="webhook",le="+Inf"} 10
alertmanager_notification_latency_seconds_sum{integration="webhook"} 4.5
alertmanager_notification_latency_seconds_count{integration="webhook"} 10
alertmanager_notification_requests_failed_total{integration="webhook"} 2
alertmanager_notification_requests_total{integration="webhook"} 12
alertmanager_notifications_failed_total{integration="webhook",reason="other"} 1
alertmanager_notifications_failed_total{integration="webhook",reason="serverError"} 1
alertmanager_notifications_total{integration="webhook"} 11
alertmanager_notification_requests_total{integration="slack",receiver="ops"} 3
alertmanager_notification_requests_failed_total{integration="slack",receiver="ops"} 0
alertmanager_notification_requests_total{integration="email"} 0
"""


def test_stats_per_integration_and_per_receiver_when_labelled() -> None:
    stats = parse_metrics(METRICS)
    webhook = stats["webhook"].to_json()
    assert webhook == {
        "integration": "webhook", "receiver": None, "notifications": 11, "failed": 2,
        "attempts": 12, "attempts_failed": 2, "success_ratio": 0.8333,
        "latency_mean_seconds": 0.45, "latency_p99_seconds": 5.0,
    }  # fmt: skip
    assert totals(stats, "slack", "ops") == (3.0, 0.0)  # the receiver's own series
    assert totals(stats, "webhook", "anyone") == (12.0, 2.0)  # 0.25: the integration's
    assert stats["email"].to_json()["success_ratio"] is None
    rows = stats_rows({"http://am": [s.to_json() for s in stats.values()], "http://down": "x"})
    assert rows[0] == ["http://am", "webhook", "12", "2", "83.3%", "450 ms", "<= 5000 ms"]
    assert rows[-1][-1] == "x"


def test_each_receiver_has_a_test_route_ahead_of_the_others(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("alertmanager: {receivers: [{name: ops, type: webhook, severities: [critical],"
                    " config: {url: 'http://127.0.0.1:9/'}}]}")  # fmt: skip
    settings = load_settings(path, {})
    routes = yaml.safe_load(render_alertmanager(list(settings.rules), settings.alertmanager))
    first = routes["route"]["routes"][0]
    assert first == {"matchers": ['alertbridge_test="ops"'], "receiver": "ops",
                     "group_by": ["..."], "group_wait": "0s", "group_interval": "1d",
                     "repeat_interval": "1d", "continue": False}  # fmt: skip


def test_every_integration_is_one_package_behind_the_channel_interface() -> None:
    """The registry holds each integration under its receiver type; each validates, finds
    its target and renders through the same interface (the adapter route, the heartbeat and
    the configuration use only that)."""
    import inspect

    from bridge.channels import CHANNELS, Channel
    from bridge.channels.delivery import TargetError

    assert set(CHANNELS) == {"msteams", "webhook"}
    for kind, channel in CHANNELS.items():
        assert channel.type == kind
        assert isinstance(channel.adapter, bool)
        for method in ("validate", "target", "render"):
            ours = inspect.signature(getattr(channel, method))
            theirs = inspect.signature(getattr(Channel, method))
            assert list(ours.parameters) == list(theirs.parameters)[1:], (kind, method)
        assert type(channel).__module__ == f"bridge.channels.{kind}"  # one package each
    with pytest.raises(TargetError, match="no url"):
        CHANNELS["webhook"].target({})


async def test_the_adapter_takes_only_types_alertmanager_cannot_deliver(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """POST /api/v1/adapters/TYPE/RECEIVER: 404 for a type with no adapter (webhook:
    Alertmanager delivers those itself) and for an unknown one, naming it."""
    from tests.test_receiver import BEARER, make_app

    client = await aiohttp_client(make_app(tmp_path))
    for kind in ("webhook", "carrier-pigeon"):
        answer = await client.post(f"/api/v1/adapters/{kind}/ops", json={}, headers=BEARER)
        assert answer.status == 404
        assert f"no adapter for receivers of type {kind!r}" in (await answer.json())["message"]
