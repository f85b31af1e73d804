"""`alertbridge rules list|generate|check`."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from bridge.cli.common import (
    fail_cleanly,
    main,
    settings_of,
    table,
)
from bridge.core.humanize import HUMANIZERS
from bridge.core.model import AlertRule
from bridge.core.times import format_duration
from bridge.generate import render_all, write_all
from bridge.generate.check import run_checks


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
        "escalation": rule.escalation,
    }


@rules.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@fail_cleanly
def rules_list(ctx: click.Context, output: str) -> None:
    """Show every rule: metric, condition, threshold with unit, severity, cooldown, for."""
    settings = settings_of(ctx)
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
@fail_cleanly
def rules_generate(ctx: click.Context, out: Path) -> None:
    """Write Prometheus rules and their promtool tests, prometheus.yml and alertmanager.yml."""
    artifacts = render_all(settings_of(ctx))
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
@fail_cleanly
def rules_check(ctx: click.Context, directory: Path | None) -> None:
    """Run promtool and amtool on the generated files; non-zero exit on any failure."""
    settings = settings_of(ctx)
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
