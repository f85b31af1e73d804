"""The `alertbridge` command line."""

from __future__ import annotations

import contextlib
import functools
import getpass
import ipaddress
import json
import logging
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from bridge import __version__
from bridge.check import run_checks
from bridge.client import AlertClient, LocalClient, RemoteClient
from bridge.config import Settings, load_settings
from bridge.errors import BridgeError
from bridge.generate import render_all, write_all
from bridge.humanize import HUMANIZERS
from bridge.model import AlertRule, format_duration
from bridge.status import rule_states

F = TypeVar("F", bound=Callable[..., Any])


def _fail_cleanly(func: F) -> F:
    """Turn domain errors into one line on stderr and exit status 1; never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BridgeError as exc:
            click.echo(f"alertbridge: error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned text table, as amtool prints."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _settings(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = load_settings(obj.get("config"))
    settings: Settings = obj["settings"]
    return settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="alertbridge")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    envvar="ALERTBRIDGE_CONFIG",
    help="YAML configuration file (env ALERTBRIDGE_CONFIG).",
)
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """alertbridge: telemetry to Prometheus + Alertmanager, alerts back to durable storage."""
    ctx.ensure_object(dict)["config"] = config


@main.group()
def rules() -> None:
    """List, generate and check the rule set."""


def _threshold_text(rule: AlertRule) -> str:
    spec = rule.spec
    if spec is None:
        return f"{rule.threshold:g}"
    return f"{rule.threshold:g} {spec.seed_unit}".strip()


def rule_record(rule: AlertRule) -> dict[str, Any]:
    """A rule as plain JSON-ready data."""
    spec = rule.spec
    return {
        "name": rule.name,
        "metric": rule.metric_name,
        "condition": rule.condition.value,
        "threshold": rule.threshold,
        "unit": rule.unit,
        "threshold_base": rule.threshold_base,
        "threshold_base_text": HUMANIZERS[spec.humanize](rule.threshold_base) if spec else None,
        "severity": rule.severity.value,
        "cooldown_seconds": rule.cooldown_seconds,
        "for_seconds": rule.for_seconds,
        "window_seconds": rule.window_seconds,
        "labels": dict(rule.labels),
        "description": rule.description,
        "enabled": rule.enabled,
        "expr": rule.expr,
    }


@rules.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@_fail_cleanly
def rules_list(ctx: click.Context, output: str) -> None:
    """Show every rule: metric, condition, threshold with unit, severity, cooldown, for."""
    settings = _settings(ctx)
    if output == "json":
        click.echo(json.dumps([rule_record(r) for r in settings.rules], indent=2))
        return
    rows = [
        [
            r.name,
            r.metric_name,
            r.condition.value,
            _threshold_text(r),
            r.severity.value,
            format_duration(round(r.cooldown_seconds)),
            format_duration(r.for_seconds),
            "yes" if r.enabled else "no",
        ]
        for r in settings.rules
    ]
    headers = ["name", "metric", "cond", "threshold", "severity", "cooldown", "for", "enabled"]
    click.echo(table(headers, rows))


@rules.command("generate")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Root under which prometheus/ and alertmanager/ are written.",
)
@click.pass_context
@_fail_cleanly
def rules_generate(ctx: click.Context, out: Path) -> None:
    """Write Prometheus rules and their promtool tests, prometheus.yml and alertmanager.yml."""
    artifacts = render_all(_settings(ctx))
    try:
        written = write_all(artifacts, out)
    except OSError as exc:
        raise click.ClickException(f"cannot write under {out}: {exc.strerror}") from None
    for path in written:
        click.echo(f"wrote {path}")
    for name in artifacts.untested:
        click.echo(f"warning: no promtool unit test for rule {name}", err=True)


@rules.command("check")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Check an already generated tree (default: generate the rule set afresh and check it).",
)
@click.pass_context
@_fail_cleanly
def rules_check(ctx: click.Context, directory: Path | None) -> None:
    """Run promtool and amtool on the generated files; non-zero exit on any failure."""
    settings = _settings(ctx)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="alertbridge-check-") as tmp:
        root = directory
        if root is None:
            root = Path(tmp)
            write_all(render_all(settings), root)
        for result in run_checks(settings, root):
            click.echo(f"{'ok  ' if result.ok else 'FAIL'}  {result.name}")
            if not result.ok:
                failed += 1
                for line in result.output.splitlines():
                    click.echo(f"      {line}")
    if failed:
        click.echo(f"{failed} check(s) failed", err=True)
        sys.exit(1)


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: cannot know where it resolves, so treat it as exposed


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default 9470).")
@click.option("--db", default=None, help="SQLite database file.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback address without the webhook and API tokens.",
)
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info"
)
@click.pass_context
@_fail_cleanly
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    db: str | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Serve /metrics, the webhook receiver and the REST API until SIGINT or SIGTERM."""
    from aiohttp import web

    from bridge.app import create_app

    obj = ctx.ensure_object(dict)
    settings = load_settings(obj.get("config"), host=host, port=port, db=db)
    server = settings.server
    missing = [
        name
        for name, token in (
            ("ALERTBRIDGE_WEBHOOK_TOKEN", server.webhook_token),
            ("ALERTBRIDGE_API_TOKEN", server.api_token),
        )
        if token is None
    ]
    if not is_loopback(server.host) and missing and not insecure:
        raise click.ClickException(
            f"refusing to listen on {server.host} without {' and '.join(missing)} "
            "(set them, bind a loopback address, or pass --insecure)"
        )
    _configure_logging(log_level)
    app = create_app(settings)
    click.echo(f"alertbridge listening on http://{server.host}:{server.port}", err=True)
    web.run_app(app, host=server.host, port=server.port, print=None, handle_signals=True)


def _fetch_status(url: str, token: str | None) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        raise click.ClickException(f"--url must be http:// or https://, got {url!r}")
    request = urllib.request.Request(url.rstrip("/") + "/api/v1/status")  # noqa: S310 - scheme checked
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - scheme checked above
        data: dict[str, Any] = json.loads(response.read())
        return data


def _local_status(settings: Settings) -> dict[str, Any]:
    from bridge.telemetry import CpuSampler, memory_used_bytes

    sampler = CpuSampler()
    time.sleep(0.5)  # CPU utilisation needs two readings of the CPU times
    cpu = sampler()
    metrics = {"system.memory.used_mb": memory_used_bytes() / 2**20}
    if cpu is not None:
        metrics["system.cpu.percent"] = cpu * 100
    return {"snapshot": metrics, "rules": rule_states(settings.rules, metrics)}


@main.command()
@click.option("--url", default=None, help="Bridge base URL (default: the configured server).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@_fail_cleanly
def status(ctx: click.Context, url: str | None, output: str) -> None:
    """Telemetry against every rule: OK, or the severity of each rule that holds."""
    settings = _settings(ctx)
    url = url or f"http://{settings.server.host}:{settings.server.port}"
    token = settings.server.api_token.value if settings.server.api_token else None
    source = url
    try:
        data = _fetch_status(url, token)
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError):
        source = "local (bridge not reachable at " + url + "; system metrics only)"
        data = _local_status(settings)
    if output == "json":
        click.echo(json.dumps({"source": source, **data}, indent=2))
        return
    click.echo(f"source: {source}")
    if "alerts" in data:
        counts = ", ".join(f"{state} {n}" for state, n in data["alerts"].items())
        click.echo(f"alerts: {counts}")
    rows = [
        [
            r["rule"],
            r["metric"],
            "-" if r["value"] is None else f"{r['value']:.4g}",
            f"{r['condition']} {r['threshold']:g} {r['unit']}".strip(),
            r["state"],
        ]
        for r in data["rules"]
    ]
    click.echo(table(["rule", "metric", "value", "threshold", "state"], rows))


# --- alerts --------------------------------------------------------------------------------


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no USER/LOGNAME in a container
        return "cli"


def _target_options(func: F) -> F:
    func = click.option(
        "--url", default=None, help="A running bridge (token from ALERTBRIDGE_API_TOKEN)."
    )(func)
    return click.option(
        "--db", default=None, help="Local database file (default: server.db of the config)."
    )(func)


@contextlib.contextmanager
def _client(ctx: click.Context, url: str | None, db: str | None) -> Iterator[AlertClient]:
    settings = _settings(ctx)
    client: LocalClient | RemoteClient
    if url:
        client = RemoteClient(url, settings.server.api_token)
    else:
        path = db or settings.server.db
        if not Path(path).exists():
            raise BridgeError(
                f"no alert database at {path} (pass --db PATH of a bridge's database, or --url)"
            )
        client = LocalClient(path)
    try:
        yield client
    finally:
        client.close()


def _short_time(text: str | None) -> str:
    return "-" if text is None else text[:19].replace("T", " ")


def silence_text(alert: dict[str, Any]) -> str:
    """ "pending", "until 2026-11-23 10:00:00", "expired" or "-"."""
    state = alert.get("silence_state")
    if state == "active" and alert.get("silenced_until"):
        return f"until {_short_time(alert['silenced_until'])}"
    return state or "-"


def _alert_rows(alerts: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(a["id"]),
            a["state"],
            a["severity"] or "-",
            a["alertname"],
            a["labels"].get("instance", "-"),
            _short_time(a["starts_at"]),
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
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", default=None, help="next_cursor of the previous page.")
@click.option("--ack", "ack_id", type=int, default=None, help="Acknowledge this alert id instead.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@_fail_cleanly
def alerts_command(
    ctx: click.Context,
    status: str | None,
    severity: tuple[str, ...],
    rule: str | None,
    since: str | None,
    until: str | None,
    filters: tuple[str, ...],
    acknowledged: bool | None,
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
            _echo_alert(client.ack(ack_id, _default_actor(), ""), output)
            return
        params: dict[str, list[str]] = {"limit": [str(limit)]}
        for key, value in (("status", status), ("rule", rule), ("since", since),
                           ("until", until), ("cursor", cursor)):  # fmt: skip
            if value:
                params[key] = [value]
        if severity:
            params["severity"] = list(severity)
        if filters:
            params["filter"] = list(filters)
        if acknowledged is not None:
            params["acknowledged"] = [str(acknowledged).lower()]
        page = client.list(params)
    if output == "json":
        click.echo(json.dumps(page, indent=2))
        return
    click.echo(_alert_rows(page["alerts"]))
    if page["next_cursor"]:
        click.echo(f"(more: --cursor {page['next_cursor']})")


@main.command()
@click.argument("alert_id", type=int)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@_fail_cleanly
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
    click.echo("events:")
    for event in alert["events"]:
        detail = f": {event['detail']}" if event["detail"] else ""
        click.echo(f"  {_short_time(event['at'])}  {event['kind']} by {event['actor']}{detail}")


def _by_option(func: F) -> F:
    return click.option("--by", default=None, help="Who does it (default: your user name).")(func)


def _ack_command(name: str, summary: str, acking: bool) -> None:
    """Register `ack` or `unack`: the same options, one client call apart."""

    @main.command(name, help=summary)
    @click.argument("alert_id", type=int)
    @click.option("--comment", "-c", default="", help="Why, for the audit trail.")
    @_by_option
    @click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
    @_target_options
    @click.pass_context
    @_fail_cleanly
    def command(ctx: click.Context, alert_id: int, comment: str, by: str | None, output: str,
                url: str | None, db: str | None) -> None:  # fmt: skip
        with _client(ctx, url, db) as client:
            call = client.ack if acking else client.unack
            _echo_alert(call(alert_id, by or _default_actor(), comment), output)


_ack_command("ack", "Acknowledge a firing alert.", acking=True)
_ack_command("unack", "Withdraw an acknowledgement.", acking=False)


@main.command()
@click.argument("alert_id", type=int)
@click.argument("text")
@_by_option
@_target_options
@click.pass_context
@_fail_cleanly
def note(ctx: click.Context, alert_id: int, text: str, by: str | None, url: str | None,
         db: str | None) -> None:  # fmt: skip
    """Add a note to an alert's audit trail."""
    with _client(ctx, url, db) as client:
        event = client.note(alert_id, by or _default_actor(), text)
    click.echo(f"note {event['id']} added to alert {alert_id}")


@main.command("assign")
@click.argument("alert_id", type=int)
@click.argument("who")
@_by_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_target_options
@click.pass_context
@_fail_cleanly
def assign_command(ctx: click.Context, alert_id: int, who: str, by: str | None, output: str,
                   url: str | None, db: str | None) -> None:  # fmt: skip
    """Assign an alert to WHO ("" unassigns)."""
    with _client(ctx, url, db) as client:
        _echo_alert(client.assign(alert_id, by or _default_actor(), who), output)


@main.command()
@click.option("--days", type=click.IntRange(min=1), default=None, help="Set the retention.")
@click.option("--prune", "prune_now", is_flag=True, help="Delete what is past retention now.")
@click.option("--db", default=None, help="Local database file (default: server.db).")
@click.pass_context
@_fail_cleanly
def retention(ctx: click.Context, days: int | None, prune_now: bool, db: str | None) -> None:
    """Show or set how long resolved alerts are kept (firing ones always are)."""
    with _client(ctx, None, db) as client:
        assert isinstance(client, LocalClient)
        kept = client.retention(days)
        click.echo(f"retention: {kept} days (resolved alerts and their events)")
        if prune_now:
            click.echo(f"pruned {client.prune()} resolved alert(s)")


@main.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work directory for configs, data and logs (default: a new temporary one).",
)
@click.pass_context
@_fail_cleanly
def dev(ctx: click.Context, workdir: Path | None) -> None:
    """Run real Prometheus + Alertmanager + the bridge on loopback until Ctrl-C."""
    from bridge.dev import Stack, run_dev

    settings = _settings(ctx)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def ready(stack: Stack) -> None:
        click.echo(f"alertbridge   {stack.bridge}   (metrics {stack.bridge}/metrics)")
        click.echo(f"prometheus    {stack.prometheus}")
        click.echo(f"alertmanager  {stack.alertmanager}")
        click.echo(f"files and logs in {stack.workdir}; Ctrl-C stops everything", err=True)

    if workdir is not None:
        run_dev(settings, workdir, ready, stop)
        return
    with tempfile.TemporaryDirectory(prefix="alertbridge-dev-") as tmp:
        run_dev(settings, Path(tmp), ready, stop)
