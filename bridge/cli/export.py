"""`alertbridge export` (alerts, telemetry) and `alertbridge baseline`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from bridge.cli.common import Whole, fail_cleanly, main, settings_of
from bridge.config import Settings
from bridge.core.errors import BridgeError, StoreError
from bridge.core.rulebook import as_yaml
from bridge.core.times import NS, now_ns
from bridge.export import output as export_output
from bridge.export.anonymize import Anonymizer
from bridge.export.baseline import Baseline, compute_baseline, describe, suggested_rule
from bridge.export.output import FORMATS, Destination
from bridge.export.promapi import PrometheusClient, default_step
from bridge.store import AlertStore, open_store
from bridge.store import exists as store_exists
from bridge.store.query import parse_when

if TYPE_CHECKING:  # (bridge.export.history imports pyarrow: not at every command's start)
    from bridge.export.history import ExportSource


@main.command("export")
@click.option("--what", type=click.Choice(["alerts", "events", "telemetry"]), default="alerts",
              show_default=True,
              help="alerts; events (their audit trail); telemetry (from Prometheus).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option(
    "--output", required=True, help="File to write (replaced atomically), or - for stdout."
)
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
    help="Pseudonymise label values outside the allowlist and people, and scrub them from text.",
)
@click.option("--db", default=None, help="Local database file (default: server.db).")
@click.pass_context
@fail_cleanly
def export_command(
    ctx: click.Context,
    what: str,
    fmt: str,
    output: str,
    since: str | None,
    until: str | None,
    metrics: tuple[str, ...],
    step: int | None,
    prometheus_url: str | None,
    anonymize: bool,
    db: str | None,
) -> None:
    """Export stored alerts (with ack, resolution, durations, notes), their events, or
    telemetry from Prometheus."""
    # Here, not at the top: pyarrow (and numpy) load for an export, not for every command.
    from bridge.export.history import export_history
    from bridge.export.telemetry import export_telemetry, queries_for

    settings = settings_of(ctx)
    now = now_ns()
    start = parse_when(since, "since", now) if since else None
    end = parse_when(until, "until", now) if until else None
    path = db or settings.server.db
    needs_store = what != "telemetry" or anonymize
    if needs_store and not store_exists(path):
        raise BridgeError(f"no alert database at {path} (pass --db PATH)")
    destination = Destination.of(output, path if needs_store else None)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_terminated_cleanly())
        store = stack.enter_context(_read_only(path, settings)) if needs_store else None
        anonymizer = _anonymizer(store, path, settings) if anonymize and store else None
        if what == "telemetry":
            url = prometheus_url or settings.prometheus.url
            if not url:
                raise BridgeError("telemetry export needs --prometheus-url or prometheus.url")
            end_s = (end or now) / NS
            start_s = start / NS if start is not None else end_s - 3600
            queries = queries_for(metrics, settings.namespace, declared=settings.metrics)
            with _progress(what, None) as progress:
                result = export_telemetry(
                    PrometheusClient(url), destination, fmt, queries, start_s, end_s,
                    step=step, anonymizer=anonymizer, progress=progress,
                )  # fmt: skip
        else:
            if store is None:  # cannot happen: alerts and events need the store
                raise BridgeError(f"no alert database at {path}")
            total = asyncio.run(store.count(what, start, end))
            with _progress(what, total) as progress:
                result = export_history(store, destination, what, fmt, anonymizer=anonymizer,
                                        since=start, until=end, progress=progress)  # fmt: skip
    state = "anonymised" if anonymize else "not anonymised"
    noun = {"alerts": "alerts", "events": "events", "telemetry": "telemetry points"}[what]
    size = f": {result.bytes} bytes" if result.bytes is not None else ""
    click.echo(f"wrote {result.records} {noun} ({state}) to {result.shown}{size}, {fmt}",
               err=destination.streaming)  # fmt: skip


@contextlib.contextmanager
def _read_only(path: str, settings: Settings) -> Iterator[AlertStore]:
    store = open_store(path, read_only=True, password_file=settings.server.db_password_file)
    try:
        yield store
    finally:
        asyncio.run(store.close())


def _anonymizer(store: ExportSource, path: str, settings: Settings) -> Anonymizer:
    """The export's Anonymizer; its key generated and kept in the database the first time
    (which then needs write access), unless ALERTBRIDGE_EXPORT_KEY(_FILE) gives one."""
    from bridge.export.history import MissingKey, anonymizer_for

    given = settings.server.export_key.data if settings.server.export_key else None
    try:
        return asyncio.run(anonymizer_for(store, given))
    except MissingKey as missing:
        try:
            asyncio.run(_keep_key(path, settings))
        except StoreError:
            raise missing from None
    return asyncio.run(anonymizer_for(store, given))


async def _keep_key(path: str, settings: Settings) -> None:
    from bridge.export.history import export_key

    writable = open_store(path, password_file=settings.server.db_password_file)
    try:
        await writable.start()
        await export_key(writable, None)
    finally:
        await writable.close()


@contextlib.contextmanager
def _terminated_cleanly() -> Iterator[None]:
    """SIGTERM ends the export as Ctrl-C does: the temporary file is removed (exit 143)."""

    def terminate(signum: int, frame: object) -> None:
        export_output.ABORT.append(
            128 + signum
        )  # also seen by the commit, should this be swallowed
        raise SystemExit(128 + signum)

    export_output.ABORT.clear()
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
        if export_output.ABORT:
            raise SystemExit(export_output.ABORT[0])
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _progress(what: str, total: int | None) -> Iterator[Callable[[int], None] | None]:
    """On a terminal (stderr): done of total, rate and time left; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    began = time.monotonic()
    with click.progressbar(
        length=total or 0, label=f"exporting {what}", file=sys.stderr, show_pos=True,
        show_eta=total is not None, show_percent=total is not None,
        item_show_func=lambda rate: rate,
    ) as bar:  # fmt: skip
        done = 0

        def update(n: int) -> None:
            nonlocal done
            done += n
            rate = done / max(time.monotonic() - began, 1e-6)
            bar.update(n, f"{rate:,.0f}/s")

        yield update


def baseline_of(ctx: click.Context, metric: str, days: float, step: int | None,
                prometheus_url: str | None) -> Baseline:  # fmt: skip
    """A metric's baseline from Prometheus's history over the last `days`."""
    settings = settings_of(ctx)
    url = prometheus_url or settings.prometheus.url
    if not url:
        raise BridgeError("baseline needs --prometheus-url or prometheus.url")
    end = now_ns() / NS
    start = end - days * 86400
    step = step or default_step(start, end)
    client = PrometheusClient(url)
    return compute_baseline(client, list(settings.rules), metric, settings.namespace, start,
                            end, step)  # fmt: skip


@main.command("baseline")
@click.argument("metric")
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True)
@click.option("--step", type=Whole(1, 10**9), default=None, help="Seconds (default ~1000 points).")
@click.option("--prometheus-url", default=None, help="Default: prometheus.url of the config.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--suggest", is_flag=True,
              help="Print a ready rule (YAML) at the suggested warning threshold instead:"
                   " `rules add -f -` takes it.")  # fmt: skip
@click.pass_context
@fail_cleanly
def baseline_command(
    ctx: click.Context,
    metric: str,
    days: float,
    step: int | None,
    prometheus_url: str | None,
    output: str,
    suggest: bool,
) -> None:
    """A metric's history: mean, p50, p95, p99, max, suggested thresholds, rule backtest."""
    result = baseline_of(ctx, metric, days, step, prometheus_url)
    if suggest:
        click.echo(as_yaml([suggested_rule(result)]), nl=False)
        return
    if output == "json":
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        click.echo("\n".join(describe(result)))
