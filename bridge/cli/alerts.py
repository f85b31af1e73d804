"""The alert commands: alerts, show, ack, unack, note, assign, retention."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import click

from bridge.cli.client import AlertClient, LocalClient, RemoteClient
from bridge.cli.common import (
    ALERT_ID,
    F,
    Whole,
    fail_cleanly,
    filter_params,
    main,
    settings_of,
    short_time,
    table,
)
from bridge.core.errors import BridgeError
from bridge.store import exists as store_exists


def _target_options(func: F) -> F:
    func = click.option(
        "--url", default=None, help="A running bridge (token from ALERTBRIDGE_API_TOKEN)."
    )(func)
    return click.option(
        "--db", default=None, help="Local database file (default: server.db of the config)."
    )(func)


@contextlib.contextmanager
def _client(ctx: click.Context, url: str | None, db: str | None) -> Iterator[AlertClient]:
    if not url:
        with _local(ctx, db) as local:
            yield local
        return
    remote = RemoteClient(url, settings_of(ctx).server.api_token)
    try:
        yield remote
    finally:
        remote.close()


@contextlib.contextmanager
def _local(ctx: click.Context, db: str | None) -> Iterator[LocalClient]:
    path = db or settings_of(ctx).server.db
    if not store_exists(path):
        raise BridgeError(
            f"no alert database at {path} (pass --db PATH of a bridge's database, or --url)"
        )
    client = LocalClient(path, settings_of(ctx).server.db_password_file)
    try:
        yield client
    finally:
        client.close()


def silence_text(alert: dict[str, Any]) -> str:
    """ "pending", "until 2026-11-23 10:00:00", "expired", "none: no Alertmanager configured"
    or "-"."""
    state = alert.get("silence_state")
    if state == "active" and alert.get("silenced_until"):
        return f"until {short_time(alert['silenced_until'])}"
    if state == "none":
        return "none: no Alertmanager configured"
    return state or "-"


def state_text(alert: dict[str, Any]) -> str:
    """The alert's state, and for a firing one what Alertmanager does with it: "firing",
    "firing, inhibited by #12", "acknowledged", "firing, silenced", "resolved (by hand)"."""
    state: str = alert["state"]
    if state == "resolved":
        how = {"inferred": "inferred", "manual": "by hand", "restart": "at restart"}
        return f"resolved ({how[alert['resolution']]})" if alert.get("resolution") in how else state
    if alert.get("am_state") != "suppressed":
        return state
    why = []
    inhibitors = alert.get("am_inhibited_by") or []
    if inhibitors:
        names = [f"#{i['alert_id']}" if i.get("alert_id") else i["fingerprint"][:8]
                 for i in inhibitors]  # fmt: skip
        why.append(f"inhibited by {', '.join(names)}")
    foreign = [s for s in alert.get("am_silenced_by") or [] if s != alert.get("silence_id")]
    if foreign:
        why.append("silenced")
    return ", ".join([state, *why]) if why else state


def escalation_text(esc: dict[str, Any]) -> str:
    """ "standard: level 1 of 3, running, next step at 2026-11-23 10:05:00" and the like."""
    level = f"level {esc['level']} of {esc['levels']}" if esc["level"] >= 0 else "not started"
    parts = [f"{esc['policy']}: {level}", esc["state"]]
    if esc.get("due_at"):
        what = {"running": "next step", "paused": "resumes", "acknowledged": "ack times out"}
        parts.append(f"{what.get(esc['state'], 'due')} at {short_time(esc['due_at'])}")
    if esc.get("copies"):
        parts.append(f"{len(esc['copies'])} active cop{'y' if len(esc['copies']) == 1 else 'ies'}")
    if esc.get("urgency") == "low":
        parts.append("low urgency")
    return ", ".join(parts)


def _alert_rows(alerts: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(a["id"]),
            state_text(a),
            a["severity"] or "-",
            a["alertname"],
            a["labels"].get("instance", "-"),
            short_time(a["starts_at"]),
            a["acked_by"] or "-",
            silence_text(a),
            (a["annotations"].get("summary") or "")[:60],
        ]
        for a in alerts
    ]
    headers = ["id", "state", "severity", "alertname", "instance", "started", "acked by",
               "silence", "summary"]  # fmt: skip
    return table(headers, rows)


def _echo_alert(alert: dict[str, Any], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(alert, indent=2))
    else:
        click.echo(_alert_rows([alert]))


@main.command("alerts")
@click.option("--status", type=click.Choice(["firing", "resolved"]), default=None)
@click.option("--severity", multiple=True, help="Repeat or comma-separate.")
@click.option("--rule", default=None, help="Alert (rule) name.")
@click.option("--since", default=None, help="RFC 3339 time, or a duration ago such as 2h.")
@click.option("--until", default=None, help="RFC 3339 time, or a duration ago.")
@click.option("--filter", "filters", multiple=True, help='Label matcher, e.g. team="infra".')
@click.option("--acknowledged/--unacknowledged", default=None)
@click.option(
    "--am-state",
    type=click.Choice(["active", "suppressed"]),
    default=None,
    help="Firing alerts Alertmanager notifies about (active) or mutes (suppressed).",
)
@click.option(
    "--sort",
    type=click.Choice(["attention", "newest"]),
    default="attention",
    show_default=True,
    help="attention: firing, active and unacknowledged first; newest: by id.",
)
@click.option("--limit", type=Whole(1, 1000), default=50, show_default=True)
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
@click.option(
    "--ack", "ack_id", type=ALERT_ID, default=None, help="Acknowledge this alert id instead."
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@fail_cleanly
def alerts_command(
    ctx: click.Context,
    status: str | None,
    severity: tuple[str, ...],
    rule: str | None,
    since: str | None,
    until: str | None,
    filters: tuple[str, ...],
    acknowledged: bool | None,
    am_state: str | None,
    sort: str,
    limit: int,
    cursor: str | None,
    ack_id: int | None,
    output: str,
    url: str | None,
    db: str | None,
) -> None:
    """List stored alerts, newest first (or acknowledge one with --ack ID)."""
    with _client(ctx, url, db) as client:
        if ack_id is not None:
            _echo_alert(client.ack(ack_id, None, ""), output)
            return
        params = filter_params(status, severity, rule, filters, acknowledged, since=since,
                               until=until, cursor=cursor, am_state=am_state,
                               limit=str(limit), sort=sort)  # fmt: skip
        page = client.list(params)
    if output == "json":
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(_alert_rows(page["alerts"]))
    if page["next_cursor"]:
        click.echo(f"(more: --cursor {page['next_cursor']})")


@main.command()
@click.argument("alert_id", type=ALERT_ID)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@fail_cleanly
def show(ctx: click.Context, alert_id: int, output: str, url: str | None, db: str | None) -> None:
    """One alert with labels, annotations and its audit trail."""
    with _client(ctx, url, db) as client:
        alert = client.show(alert_id)
    if output == "json":
        click.echo(json.dumps(alert, indent=2))
        return
    click.echo(_alert_rows([alert]))
    for key in ("labels", "annotations"):
        click.echo(f"{key}:")
        for name, value in alert[key].items():
            click.echo(f"  {name}={value}")
    if alert.get("enrichment"):
        click.echo("enrichment:")
        for name, value in alert["enrichment"].items():
            click.echo(f"  {name}={value}")
    if alert.get("clipped"):
        click.echo(f"clipped to the limits: {', '.join(alert['clipped'])}")
    for name, value in sorted((alert.get("extra") or {}).items()):
        if name == "values":
            value = ", ".join(f"{k}={v}" for k, v in sorted(value.items()))
        click.echo(f"{name}: {value}")
    for esc in alert.get("escalations") or []:
        click.echo(f"escalation: {escalation_text(esc)}")
    click.echo("events:")
    for event in alert["events"]:
        detail = f": {event['detail']}" if event["detail"] else ""
        click.echo(f"  {short_time(event['at'])}  {event['kind']} by {event['actor']}{detail}")
    if alert.get("events_truncated"):
        click.echo("  ... (the trail goes on: later events are left out of this answer)")


def _by_option(func: F) -> F:
    return click.option("--by", default=None, help="Who does it (default: your user name).")(func)


def _commented_command(name: str, summary: str, call: str) -> None:
    """Register `ack`, `unack` or `resolve`: the same options, one client call apart."""

    @main.command(name, help=summary)
    @click.argument("alert_id", type=ALERT_ID)
    @click.option("--comment", "-c", default="", help="Why, for the audit trail.")
    @_by_option
    @click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
    @_target_options
    @click.pass_context
    @fail_cleanly
    def command(ctx: click.Context, alert_id: int, comment: str, by: str | None, output: str,
                url: str | None, db: str | None) -> None:  # fmt: skip
        with _client(ctx, url, db) as client:
            action = getattr(client, call)
            _echo_alert(action(alert_id, by, comment), output)


_commented_command("ack", "Acknowledge a firing alert.", "ack")


_commented_command("unack", "Withdraw an acknowledgement.", "unack")


_commented_command(
    "resolve",
    "Resolve a firing alert by hand. For an alert Alertmanager sent, a later firing delivery"
    " of the same episode reopens it (with an event saying so); the embedded evaluator's stay"
    " resolved.",
    "resolve",
)


@main.command()
@click.argument("alert_id", type=ALERT_ID)
@click.argument("text")
@_by_option
@_target_options
@click.pass_context
@fail_cleanly
def note(ctx: click.Context, alert_id: int, text: str, by: str | None, url: str | None,
         db: str | None) -> None:  # fmt: skip
    """Add a note to an alert's audit trail."""
    with _client(ctx, url, db) as client:
        event = client.note(alert_id, by, text)
    click.echo(f"note {event['id']} added to alert {alert_id}")


@main.command("assign")
@click.argument("alert_id", type=ALERT_ID)
@click.argument("who")
@_by_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@fail_cleanly
def assign_command(ctx: click.Context, alert_id: int, who: str, by: str | None, output: str,
                   url: str | None, db: str | None) -> None:  # fmt: skip
    """Assign an alert to WHO ("" unassigns)."""
    with _client(ctx, url, db) as client:
        _echo_alert(client.assign(alert_id, by, who), output)


@main.command()
@click.option("--days", type=Whole(1, 100_000), default=None, help="Set the retention.")
@click.option("--prune", "prune_now", is_flag=True, help="Delete what is past retention now.")
@click.option("--db", default=None, help="Local database file (default: server.db).")
@click.pass_context
@fail_cleanly
def retention(ctx: click.Context, days: int | None, prune_now: bool, db: str | None) -> None:
    """Show or set how long resolved alerts are kept (firing ones always are)."""
    with _local(ctx, db) as client:
        kept = client.retention(days)
        click.echo(f"retention: {kept} days (resolved alerts and their events)")
        if prune_now:
            click.echo(f"pruned {client.prune()} resolved alert(s)")


def _echo_escalations(result: dict[str, Any], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(result, indent=2))
        return
    for esc in result["escalations"]:
        click.echo(f"alert {esc['alert_id']}: {escalation_text(esc)}")


@main.command()
@click.argument("alert_id", type=ALERT_ID)
@click.option("--level", type=Whole(0, 1000), default=None,
              help="The level to notify now (default: the next one).")  # fmt: skip
@_by_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@fail_cleanly
def escalate(ctx: click.Context, alert_id: int, level: int | None, by: str | None, output: str,
             url: str | None, db: str | None) -> None:  # fmt: skip
    """Escalate an alert now: its next level (or --level N) is notified at once, whatever
    the level's time window; the policy goes on from there. Audited as yours."""
    body: dict[str, Any] = {"by": by}
    if level is not None:
        body["level"] = level
    with _client(ctx, url, db) as client:
        _echo_escalations(client.override(alert_id, "escalate", body), output)


@main.group()
def escalation() -> None:
    """Pause and resume an alert's escalation."""


@escalation.command("pause")
@click.argument("alert_id", type=ALERT_ID)
@click.option("--for", "duration", default=None,
              help="How long, as 30m or 2h (default: until resumed).")  # fmt: skip
@_by_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@fail_cleanly
def escalation_pause(ctx: click.Context, alert_id: int, duration: str | None, by: str | None,
                     output: str, url: str | None, db: str | None) -> None:  # fmt: skip
    """No further step until the pause ends (copies already sent stay active)."""
    body: dict[str, Any] = {"by": by}
    if duration is not None:
        body["for"] = duration
    with _client(ctx, url, db) as client:
        _echo_escalations(client.override(alert_id, "pause", body), output)


@escalation.command("resume")
@click.argument("alert_id", type=ALERT_ID)
@_by_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@fail_cleanly
def escalation_resume(ctx: click.Context, alert_id: int, by: str | None, output: str,
                      url: str | None, db: str | None) -> None:  # fmt: skip
    """End a pause: the step it held is taken at once."""
    with _client(ctx, url, db) as client:
        _echo_escalations(client.override(alert_id, "resume", {"by": by}),
                          output)  # fmt: skip
