"""`alertbridge channels list|test|stats`: the receivers, a test notification through
Alertmanager to one of them, and delivery statistics."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp
import click

from bridge.alertmanager.channels import INTEGRATION_OF, cluster_stats, probe_receiver
from bridge.cli.common import fail_cleanly, main, settings_of, table
from bridge.config import Settings
from bridge.core.errors import BridgeError


@main.group()
def channels() -> None:
    """List, test and measure the notification channels (Alertmanager's receivers)."""


def _receiver(settings: Settings, name: str) -> Any:
    receiver = next((r for r in settings.alertmanager.receivers if r.name == name), None)
    if receiver is None:
        names = ", ".join(r.name for r in settings.alertmanager.receivers) or "none configured"
        raise BridgeError(f"no receiver named {name!r} (alertmanager.receivers: {names})")
    return receiver


def _urls(settings: Settings) -> tuple[str, ...]:
    if not settings.alertmanager.urls:
        raise BridgeError("no Alertmanager configured (alertmanager.url or urls)")
    return settings.alertmanager.urls


@channels.command("list")
@click.pass_context
@fail_cleanly
def channels_list(ctx: click.Context) -> None:
    """Every receiver: type, the integration that delivers it, its severities."""
    receivers = settings_of(ctx).alertmanager.receivers
    rows = [[r.name, r.type, INTEGRATION_OF.get(r.type, r.type),
             ",".join(s.value for s in r.severities)] for r in receivers]  # fmt: skip
    click.echo(table(["receiver", "type", "integration", "severities"], rows))


@channels.command("test")
@click.argument("receiver")
@click.option("--timeout", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="Seconds to wait for Alertmanager's delivery.")  # fmt: skip
@click.pass_context
@fail_cleanly
def channels_test(ctx: click.Context, receiver: str, timeout: float) -> None:
    """Send a test notification through Alertmanager to RECEIVER alone and report whether
    Alertmanager delivered it (from its notification counters). Exit 1 when it did not."""
    settings = settings_of(ctx)
    target = _receiver(settings, receiver)
    urls = _urls(settings)
    integration = INTEGRATION_OF.get(target.type, target.type)

    async def run() -> Any:
        async with aiohttp.ClientSession() as session:
            return await probe_receiver(session, urls, receiver, integration,
                                        target.severities[0].value, timeout)  # fmt: skip

    result = asyncio.run(run())
    if result.delivered:
        click.echo(f"ok: {receiver}: {result.detail}")
        return
    click.echo(f"FAIL: {receiver}: {result.detail}", err=True)
    sys.exit(1)


def stats_rows(stats: dict[str, Any]) -> list[list[str]]:
    rows = []
    for url, per in stats.items():
        if isinstance(per, str):
            rows.append([url, "-", "-", "-", "-", "-", per])
            continue
        for item in per:
            ratio = item["success_ratio"]
            rows.append([
                url, item["integration"] + (f"/{item['receiver']}" if item["receiver"] else ""),
                str(item["attempts"]), str(item["attempts_failed"]),
                "-" if ratio is None else f"{ratio:.1%}",
                "-" if item["latency_mean_seconds"] is None
                else f"{item['latency_mean_seconds'] * 1000:.0f} ms",
                "-" if item["latency_p99_seconds"] is None
                else f"<= {item['latency_p99_seconds'] * 1000:.0f} ms",
            ])  # fmt: skip
    return rows


async def gather_stats(urls: tuple[str, ...]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        raw = await cluster_stats(session, urls)
    return {url: per if isinstance(per, str) else [s.to_json() for s in per.values()]
            for url, per in raw.items()}  # fmt: skip


@channels.command("stats")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@fail_cleanly
def channels_stats(ctx: click.Context, output: str) -> None:
    """Deliveries per integration from each Alertmanager replica's own metrics
    (alertmanager_notification_requests_total and _failed_total, notifications_total and
    _failed_total, notification_latency_seconds): attempts, failed attempts, success ratio,
    mean and p99 latency. A running bridge's escalation
    steps and Teams deliveries: GET /api/v1/channels, or its /metrics."""
    stats = asyncio.run(gather_stats(_urls(settings_of(ctx))))
    if output == "json":
        click.echo(json.dumps({"alertmanager": stats}, indent=2))
        return
    click.echo(table(["alertmanager", "integration", "attempts", "failed", "success",
                      "latency mean", "latency p99"], stats_rows(stats)))  # fmt: skip
