"""`alertbridge serve`, `status` and `dev`."""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from bridge.cli.common import (
    Whole,
    configure_logging,
    fail_cleanly,
    main,
    settings_of,
    table,
)
from bridge.config import STREAM_PRIORITIES, Settings, load_settings
from bridge.core.errors import BridgeError
from bridge.telemetry.status import rule_states


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: cannot know where it resolves, so treat it as exposed


@main.command()
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=Whole(1, 65535), default=None, help="Port to bind (default 9470).")
@click.option("--db", default=None, help="SQLite database file.")
@click.option(
    "--insecure",
    is_flag=True,
    help="Allow a non-loopback address without the webhook and API tokens.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    help="Log level; debug also logs every HTTP request (the access log).",
)
@click.pass_context
@fail_cleanly
def serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    db: str | None,
    insecure: bool,
    log_level: str,
) -> None:
    """Serve /metrics, the webhook receiver and the REST API until SIGINT or SIGTERM."""
    from bridge.host import apikeys
    from bridge.http.app import create_app
    from bridge.http.keys import GUARD
    from bridge.http.server import ListenError, fitted_limits, raise_open_files_limit
    from bridge.http.server import serve as run_server

    obj = ctx.ensure_object(dict)
    settings = load_settings(obj.get("config"), host=host, port=port, db=db)
    server = settings.server
    has_keys = any(k.revoked_at is None for k in apikeys.load(server.keys_path))
    missing = [
        name
        for name, token in (
            ("ALERTBRIDGE_WEBHOOK_TOKEN", server.webhook_token),
            ("ALERTBRIDGE_API_TOKEN (or API keys)", server.api_token or has_keys),
        )
        if not token
    ]
    if not is_loopback(server.host) and missing and not insecure:
        raise click.UsageError(
            f"refusing to listen on {server.host} without {' and '.join(missing)} "
            "(set them, bind a loopback address, or pass --insecure)"
        )
    configure_logging(log_level)
    app = create_app(settings, stream_worker=True)
    guard = app[GUARD]
    guard.limits = fitted_limits(guard.limits, raise_open_files_limit())

    def listening(url: str) -> None:  # called once the socket is really bound
        click.echo(f"alertbridge listening on {url}", err=True)

    # Like Prometheus and Alertmanager, no line per request unless asked: a line per webhook
    # POST and per scrape costs the receiver CPU on its event loop and buries the log.
    access_log = logging.getLogger("aiohttp.access") if log_level == "debug" else None
    try:
        run_server(app, server.host, server.port, guard, access_log=access_log,
                   on_listening=listening)  # fmt: skip
    except ListenError as exc:
        raise BridgeError(str(exc)) from None


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
    from bridge.telemetry.exporter import CpuSampler, memory_used_bytes

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
@fail_cleanly
def status(ctx: click.Context, url: str | None, output: str) -> None:
    """Telemetry against every rule: OK, or the severity of each rule that holds."""
    settings = settings_of(ctx)
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
    beat = data.get("heartbeat") or {}
    if beat.get("state") not in (None, "off"):
        last = "none yet" if beat.get("age_seconds") is None else f"{beat['age_seconds']:.0f}s ago"
        click.echo(f"heartbeat: {beat['state']} (last {last}, timeout {beat['timeout_seconds']}s)")
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


@main.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Work directory for configs, data and logs (default: a new temporary one).",
)
@click.option("--ha", is_flag=True, help="Two Alertmanager replicas, gossiping, as in production.")
@click.pass_context
@fail_cleanly
def dev(ctx: click.Context, workdir: Path | None, ha: bool) -> None:
    """Run real Prometheus + Alertmanager + the bridge on loopback until Ctrl-C."""
    from bridge.cli.dev import Stack, run_dev

    settings = settings_of(ctx)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    def ready(stack: Stack) -> None:
        click.echo(f"alertbridge   {stack.bridge}   (metrics {stack.bridge}/metrics)")
        click.echo(f"prometheus    {stack.prometheus}")
        for url in stack.alertmanagers or (stack.alertmanager,):
            click.echo(f"alertmanager  {url}")
        click.echo(f"files and logs in {stack.workdir}; Ctrl-C stops everything", err=True)

    if workdir is not None:
        run_dev(settings, workdir, ready, stop, ha)
        return
    with tempfile.TemporaryDirectory(prefix="alertbridge-dev-") as tmp:
        run_dev(settings, Path(tmp), ready, stop, ha)


@main.command("stream-worker", hidden=True)
@click.option("--db", required=True)
@click.option("--parent", type=int, required=True)
@click.option("--fd", type=int, required=True)
@click.option("--priority", type=click.Choice(STREAM_PRIORITIES), default="idle")
@click.option("--keys", default=None)
@click.pass_context
@fail_cleanly
def stream_worker(
    ctx: click.Context, db: str, parent: int, fd: int, priority: str, keys: str | None
) -> None:
    """The live event streams' own process, started by `serve` (not run by hand)."""
    import asyncio

    from bridge.http.fanout import run_stream_worker

    configure_logging("info")
    settings = load_settings(ctx.ensure_object(dict).get("config"), db=db)
    asyncio.run(run_stream_worker(settings, db, parent, fd, priority, keys))


@main.command("escalation-worker", hidden=True)
@click.option("--db", required=True)
@click.option("--parent", type=int, required=True)
@click.pass_context
@fail_cleanly
def escalation_worker(ctx: click.Context, db: str, parent: int) -> None:
    """The escalation engine's own process, started by `serve` (not run by hand)."""
    import asyncio

    from bridge.escalation.worker import run_worker

    configure_logging("info")
    settings = load_settings(ctx.ensure_object(dict).get("config"), db=db)
    asyncio.run(run_worker(settings, db, parent))
