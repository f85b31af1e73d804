"""`alertbridge rules list|generate|check`."""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import click
import yaml

from bridge.cli.client import RemoteClient
from bridge.cli.common import (
    default_actor,
    fail_cleanly,
    main,
    settings_of,
    table,
)
from bridge.config import Settings
from bridge.core.custom import with_expr
from bridge.core.errors import BridgeError
from bridge.core.model import AlertRule
from bridge.core.rulebook import as_yaml, entries_of, rule_from, rule_record
from bridge.core.rules import RuleSet
from bridge.core.times import format_duration, format_time
from bridge.generate import render_all, write_all, write_atomic
from bridge.generate.check import run_checks
from bridge.generate.prometheus import OPERATOR_FILE, render_prometheus_rule
from bridge.generate.ruletest import timeline_of
from bridge.host.tools import run_tool


@main.group()
def rules() -> None:
    """List, generate and check the rule set."""


def _threshold_text(rule: AlertRule) -> str:
    spec = rule.spec
    if spec is None:
        return f"{rule.threshold:g}"
    return f"{rule.threshold:g} {spec.seed_unit}".strip()


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
@click.option("--format", "fmt", type=click.Choice(["files", "prometheus-operator"]),
              default="files", show_default=True,
              help="files: the trees Prometheus, Alertmanager and Grafana read;"
                   " prometheus-operator: one PrometheusRule resource (its groups checked by"
                   " promtool).")  # fmt: skip
@click.option("--name", default="alertbridge", show_default=True,
              help="prometheus-operator: the resource's name.")  # fmt: skip
@click.option("--namespace", "k8s_namespace", default=None,
              help="prometheus-operator: the Kubernetes namespace.")  # fmt: skip
@click.option("--label", "labels", multiple=True,
              help="prometheus-operator: KEY=VALUE on the resource, what the Prometheus"
                   " resource's ruleSelector matches (repeatable).")  # fmt: skip
@click.pass_context
@fail_cleanly
def rules_generate(ctx: click.Context, out: Path, fmt: str, name: str,
                   k8s_namespace: str | None, labels: tuple[str, ...]) -> None:  # fmt: skip
    """Write Prometheus rules and their promtool tests, prometheus.yml and alertmanager.yml
    (or, --format prometheus-operator, a PrometheusRule resource)."""
    settings = settings_of(ctx)
    if fmt == "prometheus-operator":
        _operator(settings, out, name, k8s_namespace, _pairs(labels, "--label"))
        return
    artifacts = render_all(settings)
    try:
        written = write_all(artifacts, out)
    except OSError as exc:
        raise click.ClickException(f"cannot write under {out}: {exc.strerror}") from None
    for path in written:
        click.echo(f"wrote {path}")
    for rule in artifacts.untested:
        click.echo(f"warning: no promtool unit test for rule {rule}", err=True)


def _operator(settings: Settings, out: Path, name: str, k8s_namespace: str | None,
              labels: dict[str, Any]) -> None:  # fmt: skip
    """The PrometheusRule resource, written once promtool accepted its groups."""
    text = render_prometheus_rule(list(settings.rules), settings.namespace, name, k8s_namespace,
                                  {k: str(v) for k, v in labels.items()},
                                  heartbeat=settings.heartbeat.enabled)  # fmt: skip
    spec = yaml.safe_load(text)["spec"]
    with tempfile.TemporaryDirectory(prefix="alertbridge-operator-") as tmp:
        groups = Path(tmp) / "groups.yml"
        groups.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        run = run_tool("promtool", "check", "rules", str(groups))
    if not run.ok:
        raise BridgeError(f"promtool refused the resource's groups: {run.output[-500:]}")
    target = out / OPERATOR_FILE
    try:
        write_atomic(target, text)
    except OSError as exc:
        raise BridgeError(f"cannot write {target}: {exc.strerror}") from None
    click.echo(f"wrote {target} (groups checked by promtool)")


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


# --- the rule set of a running bridge (bridge.http.rules) ----------------------------------

_URL = click.option("--url", envvar="ALERTBRIDGE_URL", default=None,
                    help="The running bridge (default $ALERTBRIDGE_URL; token from"
                         " ALERTBRIDGE_API_TOKEN, an admin key for changes).")  # fmt: skip
_TIMEOUT = click.option("--timeout", type=float, default=120.0, show_default=True,
                        help="Seconds to wait for the change (checks, reloads).")  # fmt: skip


def _remote(ctx: click.Context, url: str | None, timeout: float = 30.0) -> RemoteClient:
    if not url:
        raise BridgeError("this changes a running bridge: give --url (or set ALERTBRIDGE_URL)")
    return RemoteClient(url, settings_of(ctx).server.api_token, timeout)


def _by() -> str:
    return urllib.parse.urlencode({"by": default_actor()})


def _said(answer: dict[str, Any]) -> None:
    """What a change did, as amtool says it: the version, the difference, the reloads."""
    version = answer.get("version")
    if not answer.get("changed"):
        click.echo("unchanged: the rule set already is so")
        return
    if isinstance(version, dict):
        click.echo(f"version {version['version']}: {version['action']} {version['rule']}".rstrip())
        if version.get("diff"):
            click.echo(version["diff"].rstrip())
    click.echo(f"checked: {len(answer.get('checks', []))} checks passed")
    for url in answer.get("reloaded", []):
        click.echo(f"reloaded: {url}")


def _entry_file(path: str) -> dict[str, Any]:
    """A rule from a YAML or JSON file (`-`: standard input): a mapping of its fields."""
    stream = click.open_file(path, encoding="utf-8")
    try:
        raw = yaml.safe_load(stream)
    except yaml.YAMLError as exc:
        raise BridgeError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
    finally:
        if path != "-":
            stream.close()
    if isinstance(raw, dict) and isinstance(raw.get("rules"), list) and len(raw["rules"]) == 1:
        raw = raw["rules"][0]  # a `rules:` list of one, as `rules export` writes
    if not isinstance(raw, dict):
        raise BridgeError(f"{path}: must hold one rule: a mapping of its fields")
    return raw


def _pairs(items: tuple[str, ...], option: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BridgeError(f"{option} {item!r}: give KEY=VALUE")
        out[key] = value
    return out


@rules.command("add")
@click.argument("name", required=False)
@click.option("-f", "--file", "path", default=None, help="The rule as YAML or JSON (- : stdin).")
@click.option("--metric", default=None)
@click.option("--condition", default=None, help="> < >= <= == !=")
@click.option("--threshold", type=float, default=None)
@click.option("--severity", default=None, help="info, warning, error or critical")
@click.option("--for", "for_", default=None, help="How long it holds before firing (5m).")
@click.option("--expr", default=None, help="PromQL, for a metric outside the catalogue.")
@click.option("--description", default=None)
@click.option("--label", "labels", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--annotation", "annotations", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--from-baseline", "baseline", default=None, metavar="METRIC",
              help="Start from the rule `baseline METRIC --suggest` gives (Prometheus's"
                   " history of --days); the other options change it.")  # fmt: skip
@click.option("--days", type=click.FloatRange(min=0, min_open=True), default=7.0,
              show_default=True, help="--from-baseline: the history's length.")  # fmt: skip
@click.option("--prometheus-url", default=None,
              help="--from-baseline: default prometheus.url of the config.")  # fmt: skip
@_URL
@_TIMEOUT
@click.pass_context
@fail_cleanly
def rules_add(ctx: click.Context, name: str | None, path: str | None, metric: str | None,
              condition: str | None, threshold: float | None, severity: str | None,
              for_: str | None, expr: str | None, description: str | None,
              labels: tuple[str, ...], annotations: tuple[str, ...], baseline: str | None,
              days: float, prometheus_url: str | None, url: str | None,
              timeout: float) -> None:  # fmt: skip
    """Add a rule to a running bridge: checked by promtool and amtool, written, reloaded."""
    entry = _entry_file(path) if path else {}
    if baseline:
        from bridge.cli.export import baseline_of
        from bridge.export.baseline import suggested_rule

        _remote(ctx, url)  # (said before Prometheus is asked, when there is no bridge)
        entry = {**suggested_rule(baseline_of(ctx, baseline, days, None, prometheus_url)),
                 **entry}  # fmt: skip
    given = {
        "name": name, "metric": metric, "condition": condition, "threshold": threshold,
        "severity": severity, "for": for_, "expr": expr, "description": description,
    }  # fmt: skip
    entry.update({k: v for k, v in given.items() if v is not None})
    if labels:
        entry["labels"] = _pairs(labels, "--label")
    if annotations:
        entry["annotations"] = _pairs(annotations, "--annotation")
    if not entry.get("name"):
        raise BridgeError("give the rule's NAME (or a file with -f)")
    _said(_remote(ctx, url, timeout).call("POST", f"/api/v1/rules?{_by()}", entry))


@rules.command("edit")
@click.argument("name")
@click.option("--set", "sets", multiple=True, help="FIELD=VALUE (YAML value), repeatable.")
@click.option("-f", "--file", "path", default=None, help="The whole rule, replacing it.")
@_URL
@_TIMEOUT
@click.pass_context
@fail_cleanly
def rules_edit(ctx: click.Context, name: str, sets: tuple[str, ...], path: str | None,
               url: str | None, timeout: float) -> None:  # fmt: skip
    """Change fields of a rule (--set threshold=90) or replace it (-f FILE)."""
    if bool(sets) == bool(path):
        raise BridgeError("give --set FIELD=VALUE (one or more) or -f FILE")
    client = _remote(ctx, url, timeout)
    if path:
        _said(client.call("PUT", f"/api/v1/rules/{name}?{_by()}", _entry_file(path)))
        return
    fields = {k: yaml.safe_load(v) for k, v in _pairs(sets, "--set").items()}
    _said(client.call("PATCH", f"/api/v1/rules/{name}?{_by()}", fields))


def _simple(action: str, method: str, suffix: str, help_text: str) -> None:
    @rules.command(action, help=help_text)
    @click.argument("name")
    @_URL
    @_TIMEOUT
    @click.pass_context
    @fail_cleanly
    def command(ctx: click.Context, name: str, url: str | None, timeout: float) -> None:
        _said(_remote(ctx, url, timeout).call(method, f"/api/v1/rules/{name}{suffix}?{_by()}"))


_simple("rm", "DELETE", "", "Delete a rule of a running bridge (a default one: disable it).")
_simple("enable", "POST", "/enable", "Enable a rule of a running bridge.")
_simple("disable", "POST", "/disable", "Disable a rule of a running bridge.")


@rules.command("history")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_URL
@click.pass_context
@fail_cleanly
def rules_history(ctx: click.Context, limit: int, output: str, url: str | None) -> None:
    """The versions of a running bridge's rule set: who changed what, when."""
    answer = _remote(ctx, url).call("GET", f"/api/v1/rules/history?limit={limit}")
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
        return
    rows = [[str(v["version"]), format_time(v["at"]), v["actor"], v["action"], v["rule"]]
            for v in answer["versions"]]  # fmt: skip
    click.echo(table(["version", "at", "by", "action", "rule"], rows))
    click.echo(f"in force: version {answer['version']}", err=True)


@rules.command("rollback")
@click.argument("version", type=click.IntRange(1))
@_URL
@_TIMEOUT
@click.pass_context
@fail_cleanly
def rules_rollback(ctx: click.Context, version: int, url: str | None, timeout: float) -> None:
    """Put the rule set of an earlier version in force again (as a new version)."""
    _said(_remote(ctx, url, timeout).call("POST", f"/api/v1/rules/rollback?{_by()}",
                                          {"to": version}))  # fmt: skip


@rules.command("export")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default="-",
              help="File to write (default: standard output).")  # fmt: skip
@click.option("--url", envvar="ALERTBRIDGE_URL", default=None,
              help="A running bridge's rule set (default: the configuration's).")  # fmt: skip
@click.pass_context
@fail_cleanly
def rules_export(ctx: click.Context, out: str, url: str | None) -> None:
    """Write the rule set as the `rules:` of a configuration file (to keep in git)."""
    if url:
        records = _remote(ctx, url).call("GET", "/api/v1/rules")["rules"]
        current = RuleSet(tuple(rule_from(r["name"], r) for r in records))
    else:
        current = settings_of(ctx).rules
    text = as_yaml(entries_of(current))
    if out == "-":
        click.echo(text, nl=False)
        return
    try:
        write_atomic(Path(out), text)
    except OSError as exc:
        raise BridgeError(f"cannot write {out}: {exc.strerror}") from None
    click.echo(f"wrote {out}", err=True)


@rules.command("test")
@click.argument("name")
@click.option("--series", "series", multiple=True, required=True,
              help="metric{labels} values, as promtool: 0.5 0.9x10 (repeatable).")  # fmt: skip
@click.option("--interval", default="1m", show_default=True, help="Between two samples.")
@click.option("--duration", default=None, help="How long (default: the longest series).")
@click.option("-f", "--file", "path", default=None,
              help="Test this rule (YAML or JSON) instead of the rule set's NAME.")  # fmt: skip
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--url", envvar="ALERTBRIDGE_URL", default=None,
              help="Test a running bridge's rule (default: the configuration's).")  # fmt: skip
@click.pass_context
@fail_cleanly
def rules_test(ctx: click.Context, name: str, series: tuple[str, ...], interval: str,
               duration: str | None, path: str | None, output: str,
               url: str | None) -> None:  # fmt: skip
    """When would a rule go pending and fire on these series, with which labels and
    annotations (promtool evaluates the rule as generated)."""
    body: dict[str, Any] = {"series": list(series), "interval": interval}
    if duration:
        body["duration"] = duration
    if path:
        body["rule"] = _entry_file(path)
    if url:
        answer = _remote(ctx, url, 120).call("POST", f"/api/v1/rules/{name}/test", body)
    else:
        settings = settings_of(ctx)
        if path:
            rule = rule_from(name, with_expr(body["rule"], settings.metrics, settings.namespace))
        else:
            found = settings.rules.get(name)
            if found is None:
                raise BridgeError(f"no rule named {name!r} in {settings.source}")
            rule = found
        answer = timeline_of(rule, settings.namespace, body["series"], interval, duration)
    if output == "json":
        click.echo(json.dumps(answer, indent=2))
        return
    if not answer["episodes"]:
        click.echo(f"{name} neither pends nor fires on these series (for {answer['for']})")
        return
    for episode in answer["episodes"]:
        labels = ", ".join(f'{k}="{v}"' for k, v in episode["labels"].items())
        click.echo(f"{{{labels}}}")
        click.echo(f"  pending at {episode['pending_at']}, firing at"
                   f" {episode['firing_at'] or 'never'}, resolved at"
                   f" {episode['resolved_at'] or 'never'}")  # fmt: skip
        for key, value in episode["annotations"].items():
            click.echo(f"  {key}: {value}")
