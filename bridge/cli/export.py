"""`alertbridge export`: alerts to Parquet, CSV or JSON Lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from bridge.cli.common import fail_cleanly, main, settings_of
from bridge.errors import BridgeError
from bridge.export import FORMATS, Anonymizer, export_alerts, export_key, known_people
from bridge.query import parse_when
from bridge.store import Store, now_ns


@main.command("export")
@click.option("--what", type=click.Choice(["alerts"]), default="alerts", show_default=True)
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True)
@click.option("--output", type=click.Path(path_type=Path), required=True, help="File to write.")
@click.option("--since", default=None, help="Alerts that started at or after: RFC 3339 or 2h.")
@click.option("--until", default=None, help="Alerts that started before: RFC 3339 or 2h.")
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
    anonymize: bool,
    db: str | None,
) -> None:
    """Export stored alerts with acknowledgement, resolution and their durations."""
    path = db or settings_of(ctx).server.db
    if not Path(path).exists():
        raise BridgeError(f"no alert database at {path} (pass --db PATH)")
    now = now_ns()
    start = parse_when(since, "since", now) if since else None
    end = parse_when(until, "until", now) if until else None
    store = Store(path)
    try:
        anonymizer = (
            Anonymizer(export_key(store, os.environ), people=known_people(store))
            if anonymize
            else None
        )
        if sys.stdout.isatty():
            total = store.read(lambda c: c.execute("SELECT count(*) FROM alerts").fetchone()[0])
            with click.progressbar(length=total, label=f"exporting {what}") as bar:
                result = export_alerts(store, output, fmt, anonymizer=anonymizer, since=start,
                                       until=end, progress=bar.update)  # fmt: skip
        else:
            result = export_alerts(
                store, output, fmt, anonymizer=anonymizer, since=start, until=end
            )
    finally:
        store.close()
    state = "anonymised" if anonymize else "not anonymised"
    click.echo(
        f"wrote {result.records} {what} ({state}) to {result.path}: {result.bytes} bytes, {fmt}"
    )
