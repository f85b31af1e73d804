"""The `alertbridge` command line."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from bridge import __version__
from bridge.check import run_checks
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
