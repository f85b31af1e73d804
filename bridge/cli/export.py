"""`alertbridge export` (alerts, telemetry) and `alertbridge baseline`."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from bridge.baseline import compute_baseline, describe
from bridge.cli.common import Whole, fail_cleanly, main, settings_of
from bridge.errors import BridgeError
from bridge.export import FORMATS, Anonymizer, export_alerts, export_key, known_people
from bridge.promapi import PrometheusClient, default_step
from bridge.query import parse_when
from bridge.store import NS, Store, now_ns
from bridge.telemetry_export import export_telemetry, queries_for


@main.command("export")
@click.option("--what", type=click.Choice(["alerts", "telemetry"]), default="alerts",
              show_default=True)  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--output", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option("--since", default=None, help="RFC 3339 time or a duration ago (2h).")
@click.option("--until", default=None, help="RFC 3339 time or a duration ago (default: now).")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Telemetry: a seed metric (system.cpu.percent) or PromQL; default: the five metrics.",
)
@click.option("--step", type=Whole(1, 10**9), default=None, help="Telemetry step, seconds.")
@click.option("--prometheus-url", default=None, help="Telemetry source (default prometheus.url).")
@click.option(
    "--anonymize/--no-anonymize",
    default=True,
    show_default=True,
    help="Pseudonymise label values outside the allowlist, people and matching text.",
)
@click.option("--db", default=None, help="Local database file (default: server.db).")
@click.pass_context
@fail_cleanly
def export_command(
    ctx: click.Context,
    what: str,
    fmt: str,
    output: Path,
    since: str | None,
    until: str | None,
    metrics: tuple[str, ...],
    step: int | None,
    prometheus_url: str | None,
    anonymize: bool,
    db: str | None,
) -> None:
    """Export stored alerts (with ack, resolution, durations) or telemetry from Prometheus."""
    settings = settings_of(ctx)
    now = now_ns()
    start = parse_when(since, "since", now) if since else None
    end = parse_when(until, "until", now) if until else None
    path = db or settings.server.db
    if what == "telemetry" and not anonymize:
        store = None
    else:
        if not Path(path).exists():
            raise BridgeError(f"no alert database at {path} (pass --db PATH)")
        store = Store(path)
    try:
        anonymizer = None
        if anonymize:
            assert store is not None
            anonymizer = Anonymizer(export_key(store, os.environ), people=known_people(store))
        with _progress(what) as progress:
            if what == "alerts":
                assert store is not None
                result = export_alerts(store, output, fmt, anonymizer=anonymizer, since=start,
                                       until=end, progress=progress)  # fmt: skip
            else:
                url = prometheus_url or settings.prometheus.url
                if not url:
                    raise BridgeError("telemetry export needs --prometheus-url or prometheus.url")
                end_s = (end or now) / NS
                start_s = start / NS if start is not None else end_s - 3600
                result = export_telemetry(
                    PrometheusClient(url), output, fmt,
                    queries_for(metrics, settings.namespace), start_s, end_s,
                    step=step, anonymizer=anonymizer, progress=progress,
                )  # fmt: skip
    finally:
        if store is not None:
            store.close()
    state = "anonymised" if anonymize else "not anonymised"
    noun = "alerts" if what == "alerts" else "telemetry points"
    click.echo(
        f"wrote {result.records} {noun} ({state}) to {result.path}: {result.bytes} bytes, {fmt}"
    )


@contextlib.contextmanager
def _progress(what: str) -> Iterator[Callable[[int], None] | None]:
    """A running count on stderr when stdout is a terminal; nothing otherwise."""
    if not sys.stdout.isatty():
        yield None
        return
    done = 0

    def update(count: int) -> None:
        nonlocal done
        done += count
        click.echo(f"\rexporting {what}: {done} records", nl=False, err=True)

    try:
        yield update
    finally:
        click.echo(err=True)


@main.command("baseline")
@click.argument("metric")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True)
@click.option("--step", type=Whole(1, 10**9), default=None, help="Seconds (default ~1000 points).")
@click.option("--prometheus-url", default=None, help="Default: prometheus.url of the config.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@fail_cleanly
def baseline_command(
    ctx: click.Context,
    metric: str,
    days: float,
    step: int | None,
    prometheus_url: str | None,
    output: str,
) -> None:
    """A metric's history: mean, p50, p95, p99, max, suggested thresholds, rule backtest."""
    settings = settings_of(ctx)
    url = prometheus_url or settings.prometheus.url
    if not url:
        raise BridgeError("baseline needs --prometheus-url or prometheus.url")
    end = now_ns() / NS
    start = end - days * 86400
    step = step or default_step(start, end)
    client = PrometheusClient(url)
    result = compute_baseline(
        client, list(settings.rules), metric, settings.namespace, start, end, step
    )
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo("\n".join(describe(result)))
