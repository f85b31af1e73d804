"""`alertbridge oncall [SCHEDULE] [--at T] [--days N]` and `alertbridge people`: who is on
call, from the configuration's people and schedules (bridge.core.oncall)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import click
from yarl import URL

from bridge.alertmanager.channels import INTEGRATION_OF, ProbeResult, probe_integrations
from bridge.cli.common import fail_cleanly, main, settings_of, table
from bridge.core.errors import BridgeError
from bridge.core.oncall import DAYS, MAX_DAYS, local_time, parse_at
from bridge.core.policies import PERSON_RECEIVER
from bridge.core.times import NS, now_ns
from bridge.generate import write_atomic


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


#: The largest calendar `calendar import` reads (a year of hourly shifts is about 3 MiB).
MAX_CALENDAR_BYTES = 10 * 1024 * 1024


async def _download(url: str, timeout: float) -> bytes:
    """A feed's body, bounded in size and time; BridgeError naming the host (never the whole
    URL: feed links carry their secret in the path or the query)."""
    host = URL(url).host or "?"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url) as answer,
        ):
            if answer.status != 200:
                raise BridgeError(f"the feed at {host} answered HTTP {answer.status}")
            body = bytearray()
            while chunk := await answer.content.read(65536):
                body += chunk
                if len(body) > MAX_CALENDAR_BYTES:
                    raise BridgeError(f"the feed at {host} is larger than"
                                      f" {MAX_CALENDAR_BYTES // 2**20} MiB")  # fmt: skip
            return bytes(body)
    except (aiohttp.ClientError, TimeoutError) as exc:
        reason = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        raise BridgeError(f"cannot fetch the feed at {host}: {reason}") from None


def _feed_url(url_file: str) -> str:
    """The feed's URL from a file (or - for standard input): a feed link is a secret."""
    try:
        text = sys.stdin.read() if url_file == "-" else Path(url_file).read_text()
    except OSError as exc:
        raise BridgeError(f"cannot read {url_file}: {exc.strerror}") from None
    url = text.strip()
    if url.startswith("webcal://"):  # what calendar applications are given: HTTPS
        url = "https://" + url.removeprefix("webcal://")
    if not url.startswith(("http://", "https://")) or any(c.isspace() for c in url):
        raise BridgeError(f"{url_file} must hold one http(s) or webcal URL")
    return url


@main.group("calendar")
def calendar_group() -> None:
    """Another tool's on-call calendar, to make a schedule layer of (`calendar: {file:}`)."""


@calendar_group.command("import")
@click.argument("source", required=False, type=click.Path(dir_okay=False))
@click.option("--url-file", metavar="FILE",
              help="read the feed's URL (http, https or webcal) from FILE, - for stdin,"
                   " rather than a SOURCE file: a feed link is a secret")  # fmt: skip
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False),
    default=None,
    help="write the calendar here (atomically) once it reads as iCalendar",
)
@click.option("--at", "at_text", default=None, metavar="TIME",
              help="RFC 3339 time the --days start at (default: now)")  # fmt: skip
@click.option("--days", type=click.IntRange(1, MAX_DAYS), default=DAYS, show_default=True,
              help="the days ahead to report shifts for")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="seconds to fetch the feed in")  # fmt: skip
@click.pass_context
@fail_cleanly
def calendar_import(ctx: click.Context, source: str | None, url_file: str | None,
                    out: str | None, at_text: str | None, days: int,
                    timeout: float) -> None:  # fmt: skip
    """Read a schedule exported as iCalendar by Grafana OnCall, Opsgenie or PagerDuty (a
    file, or a feed by --url-file), say whom its events name among the configured people over
    the next --days and which events name nobody, and with --out write it for a layer
    `calendar: {file: ...}` (run it from a timer to follow the feed; the bridge reads the
    file when it starts)."""
    from bridge.core.ical import CalendarLayer, addresses_of, read_calendar  # (bridge.config)

    if (source is None) == (url_file is None):
        raise click.UsageError("give a SOURCE file or --url-file, one of them")
    start = parse_at(at_text, now_ns(), "--at")
    if source is not None and source.startswith(("http://", "https://", "webcal://")):
        raise click.UsageError("a feed's URL goes in a file given as --url-file FILE (or"
                               " --url-file - and standard input): it is a secret")  # fmt: skip
    if source is not None:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise BridgeError(f"cannot read {source}: {exc.strerror}") from None
        if len(data) > MAX_CALENDAR_BYTES:
            raise BridgeError(f"{source} is larger than {MAX_CALENDAR_BYTES // 2**20} MiB")
    else:
        data = asyncio.run(_download(_feed_url(str(url_file)), timeout))
    try:
        calendar = read_calendar(data)
    except ValueError as exc:
        raise BridgeError(f"{source or 'the feed'}: {exc}") from None
    people = settings_of(ctx).oncall.people
    layer = CalendarLayer("import", calendar, addresses_of(people))
    end = start + days * 86400 * NS
    shifts = layer.named(start, end)
    unmatched = layer.unmatched(start, end)
    events = len(calendar.walk("VEVENT"))
    click.echo(f"{events} event(s); over the next {days} days:")
    for person in sorted(shifts):
        click.echo(f"  {person}: {shifts[person]} shift(s)")
    if not shifts:
        click.echo("  no shift names a configured person (an attendee's address of an email"
                   " method, or a person's name in the summary)")  # fmt: skip
    if unmatched:
        click.echo(f"  {unmatched} event(s) name nobody configured: not shifts", err=True)
    if out is not None:
        write_atomic(Path(out), data.decode("utf-8", errors="replace"))
        click.echo(f"wrote {out}: a layer reads it as {{name: imported, calendar: {{file:"
                   f" {Path(out).name}}}}} (a path beside the configuration file)")  # fmt: skip
