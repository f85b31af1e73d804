"""`alertbridge oncall [SCHEDULE] [--at T] [--days N]` and `alertbridge people`: who is on
call, from the configuration's people and schedules (bridge.core.oncall)."""

from __future__ import annotations

import asyncio
import json
import sys

import aiohttp
import click

from bridge.alertmanager.channels import INTEGRATION_OF, ProbeResult, probe_integrations
from bridge.cli.common import fail_cleanly, main, settings_of, table
from bridge.core.errors import BridgeError
from bridge.core.oncall import DAYS, MAX_DAYS, local_time, parse_at
from bridge.core.policies import PERSON_RECEIVER
from bridge.core.times import NS, now_ns


@main.command("oncall")
@click.argument("schedule", required=False)
@click.option("--at", "at_text", default=None, metavar="TIME",
              help="RFC 3339 time (default: now)")  # fmt: skip
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=DAYS, show_default=True,
              help="with SCHEDULE: the shifts over this many days from --at")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["table", "json", "ics"]), default="table",
              help="ics: with SCHEDULE, its shifts as an iCalendar file")  # fmt: skip
@click.pass_context
@fail_cleanly
def oncall_command(ctx: click.Context, schedule: str | None, at_text: str | None, days: int,
                   output: str) -> None:  # fmt: skip
    """Who is on call now (or --at) in every schedule; with SCHEDULE, and its shifts over the
    next --days, in the schedule's time zone (or as iCalendar, to import in a calendar)."""
    oncall = settings_of(ctx).oncall
    at = parse_at(at_text, now_ns(), "--at")
    if schedule is None:
        if output == "ics":
            raise click.UsageError("-o ics needs a SCHEDULE")
        now = oncall.now(at)
        if output == "json":
            click.echo(json.dumps(now, indent=2))
            return
        if not now:
            click.echo("no schedules configured (see `schedules:` in the documentation)")
            return
        rows = [[n["schedule"], n["person"] or "(nobody)", n["source"] or "-"] for n in now]
        click.echo(table(["schedule", "on call", "from"], rows))
        return
    if output == "json":
        click.echo(json.dumps(oncall.listing(schedule, at, days), indent=2))
        return
    chosen = oncall.schedule(schedule)
    shifts = chosen.shifts(at, at + days * 86400 * NS)
    if output == "ics":
        from bridge.core.ical import calendar_of  # (not at import: bridge.config says why)

        pairs = [(chosen.name, s) for s in shifts]
        click.echo(calendar_of(f"On call: {chosen.name}", pairs, now_ns()).decode(), nl=False)
        return
    rows = [[local_time(s.start, chosen.timezone), local_time(s.end, chosen.timezone),
             s.person or "(nobody)", s.source or "-"] for s in shifts]  # fmt: skip
    click.echo(table(["from", "until", "on call", "layer"], rows))


@main.group("people", invoke_without_command=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@fail_cleanly
def people_command(ctx: click.Context, output: str) -> None:
    """The people of the configuration: time zone, contact methods, schedules they are in
    (`people test NAME`: a test notification through each of their methods)."""
    if ctx.invoked_subcommand is not None:
        return
    records = settings_of(ctx).oncall.directory()
    if output == "json":
        click.echo(json.dumps(records, indent=2))
        return
    rows = [[r["name"], r["timezone"], ", ".join(r["methods"]) or "(none)",
             ", ".join(r["schedules"]) or "-"] for r in records]  # fmt: skip
    click.echo(table(["person", "timezone", "contacts", "schedules"], rows))


@people_command.command("test")
@click.argument("name")
@click.option("--timeout", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="Seconds to wait for Alertmanager's deliveries.")  # fmt: skip
@click.pass_context
@fail_cleanly
def people_test(ctx: click.Context, name: str, timeout: float) -> None:
    """Send one test notification through Alertmanager to NAME's receiver (person-NAME) and
    report, per contact method, whether Alertmanager delivered it. Exit 1 unless every
    method did."""
    settings = settings_of(ctx)
    person = settings.oncall.people.get(name)
    if person is None:
        known = ", ".join(sorted(settings.oncall.people)) or "none configured"
        raise BridgeError(f"no person {name!r} (people: {known})")
    if not person.contacts:
        raise BridgeError(f"{name} has no contact method: nothing to test")
    if not settings.alertmanager.urls:
        raise BridgeError("no Alertmanager configured (alertmanager.url or urls)")
    integrations = list(dict.fromkeys(INTEGRATION_OF.get(m, m) for m in person.methods))

    async def run() -> dict[str, ProbeResult]:
        async with aiohttp.ClientSession() as session:
            return await probe_integrations(session, settings.alertmanager.urls,
                                            PERSON_RECEIVER.format(name), integrations,
                                            "critical", timeout)  # fmt: skip

    results = asyncio.run(run())
    for integration, result in results.items():
        line = f"{'ok' if result.delivered else 'FAIL'}: {name} {integration}: {result.detail}"
        click.echo(line, err=not result.delivered)
    if not all(r.delivered for r in results.values()):
        sys.exit(1)
