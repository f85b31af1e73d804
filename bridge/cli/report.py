"""`alertbridge report [--since 30d] [--until T] [--flap 10m] [-o table|json]`: time to
acknowledge and to resolve, noisy and flapping rules, what nobody acknowledged, time at each
escalation level (bridge.export.report), from a local database or a running bridge."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from typing import Any

import click

from bridge.cli.client import RemoteClient
from bridge.cli.common import fail_cleanly, main, settings_of, table
from bridge.core.errors import BridgeError
from bridge.core.times import format_duration
from bridge.export.report import Report, of_store, seconds_text, window
from bridge.store import exists as store_exists
from bridge.store import open_store


def report_of(db: str, since: int, until: int, flap: int,
              password_file: str | None = None) -> Report:  # fmt: skip
    """The report of a database (read-only, one snapshot per table)."""
    store = open_store(db, read_only=True, password_file=password_file)
    try:
        return of_store(store, since, until, flap)
    finally:
        asyncio.run(store.close())


def _stats_rows(rows: dict[str, Any]) -> list[list[str]]:
    return [
        [k, str(s["count"]), seconds_text(s["median_seconds"]), seconds_text(s["p90_seconds"])]
        for k, s in rows.items()
    ]


def render(data: dict[str, Any]) -> str:
    """The report's JSON as text tables."""
    out = [f"report {data['since']} .. {data['until']}: {data['episodes']} episodes"]
    for title, key in (("time to acknowledge", "time_to_acknowledge"),
                       ("time to resolve", "time_to_resolve")):  # fmt: skip
        for by, rows in data[key].items():
            out += [
                "",
                f"{title}, by {by}",
                table([by, "episodes", "median", "p90"], _stats_rows(rows)),
            ]
    flap = format_duration(data["flap_seconds"])
    for title, key, what in (("noisiest rules", "noisiest_rules", "episodes"),
                             (f"flapping rules (fired again within {flap})", "flapping_rules",
                              "flaps"),
                             ("never acknowledged", "never_acknowledged", "episodes")):  # fmt: skip
        out += ["", title, table(["rule", what], [[r["rule"], str(r[what])] for r in data[key]])]
    days = [[rule, day, str(n)] for rule, per in data["episodes_per_rule_per_day"].items()
            for day, n in per.items()]  # fmt: skip
    out += ["", "episodes per rule per day", table(["rule", "day", "episodes"], days)]
    out += [
        "",
        "time at each escalation level",
        table(["level", "steps", "median", "p90"], _stats_rows(data["time_at_escalation_level"])),
    ]
    return "\n".join(out)


@main.command("report")
@click.option("--since", default=None,
              help="Start: RFC 3339, or a duration ago (30d, 12h); default 30 days before"
                   " the end.")  # fmt: skip
@click.option("--until", default=None, help="End: RFC 3339, or a duration ago (default now).")
@click.option("--flap", default="10m", show_default=True,
              help="Fired again within this of its end: a flap.")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--url", default=None, help="A running bridge (token from ALERTBRIDGE_API_TOKEN).")
@click.option("--db", default=None, help="Local database file (default: server.db).")
@click.pass_context
@fail_cleanly
def report(ctx: click.Context, since: str | None, until: str | None, flap: str, output: str,
           url: str | None, db: str | None) -> None:  # fmt: skip
    """Time to acknowledge and to resolve (median, p90) by rule, severity and assignee;
    episodes per rule per day; the noisiest and the flapping rules; what nobody
    acknowledged; time at each escalation level."""
    if url:
        query = urllib.parse.urlencode({k: v for k, v in (("since", since), ("until", until),
                                                          ("flap", flap)) if v})  # fmt: skip
        data = RemoteClient(url, settings_of(ctx).server.api_token).get(f"/api/v1/report?{query}")
    else:
        path = db or settings_of(ctx).server.db
        start, end, flap_seconds = window(since, until, flap)
        if not store_exists(path):
            raise BridgeError(f"no alert database at {path} (pass --db PATH, or --url)")
        secret = settings_of(ctx).server.db_password_file
        data = report_of(path, start, end, flap_seconds, secret).to_json()
    click.echo(json.dumps(data, indent=2) if output == "json" else render(data))
