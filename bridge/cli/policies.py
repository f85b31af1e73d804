"""`alertbridge policies list|check|test`: the escalation policies of the config."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bridge.cli.common import fail_cleanly, main, settings_of, table
from bridge.config import Settings
from bridge.core.oncall import DAYS, local_time
from bridge.core.policies import Policy
from bridge.core.times import NS, format_duration, now_ns


@main.group()
def policies() -> None:
    """List, check and try the escalation policies."""


def _levels(policy: Policy) -> list[dict[str, Any]]:
    """The policy's notify steps as levels: number, receivers, wait before it (from the
    previous level), window."""
    out: list[dict[str, Any]] = []
    waited = 0
    for step in policy.steps:
        if step.kind == "wait":
            waited += step.wait
            continue
        out.append(
            {
                "level": len(out),
                "receivers": list(step.receivers),
                "schedules": list(step.schedules),
                "people": list(step.people),
                "after_seconds": waited,
                "when": step.when.describe() if step.when else None,
            }
        )
        waited = 0
    return out


def policy_record(policy: Policy) -> dict[str, Any]:
    return {
        "name": policy.name,
        "steps": [s.describe() for s in policy.steps],
        "levels": _levels(policy),
        "repeat": policy.repeat,
        "ack_timeout_seconds": policy.ack_timeout,
    }


def _rule_labels(settings: Settings) -> list[tuple[str, dict[str, str]]]:
    out = []
    for rule in settings.rules.enabled:
        labels = {**rule.labels, "alertname": rule.name, "severity": rule.severity.value}
        out.append((rule.name, labels))
    return out


@policies.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@fail_cleanly
def policies_list(ctx: click.Context, output: str) -> None:
    """Show every policy: its levels, waits, windows, repeats and acknowledgement timeout,
    then the routing rules in priority order."""
    settings = settings_of(ctx)
    esc = settings.escalation
    if output == "json":
        routes = [
            {
                "policy": r.policy,
                "matchers": [str(m) for m in r.matchers],
                "severities": sorted(r.severities),
                "urgency": r.urgency,
                "continue": r.continue_,
            }
            for r in esc.routes
        ]
        doc = {
            "policies": [policy_record(p) for p in esc.policies],
            "routes": routes,
            "rules": dict(esc.rule_policies),
        }
        click.echo(json.dumps(doc, indent=2))
        return
    if not esc.policies:
        click.echo(f"no escalation policies in {settings.source}")
        return
    rows = []
    for policy in esc.policies:
        for level in _levels(policy):
            rows.append(
                [
                    policy.name if level["level"] == 0 else "",
                    str(level["level"]),
                    "+" + format_duration(level["after_seconds"]),
                    ", ".join(
                        [
                            *level["receivers"],
                            *(f"schedule {n}" for n in level["schedules"]),
                            *(f"person {n}" for n in level["people"]),
                        ]
                    ),
                    level["when"] or "always",
                ]
            )
        extra = []
        if policy.repeat:
            extra.append(f"repeat {policy.repeat}x")
        if policy.ack_timeout:
            extra.append(f"ack timeout {format_duration(policy.ack_timeout)}")
        if extra:
            rows.append(["", "", "", "; ".join(extra), ""])
    click.echo(table(["policy", "level", "after", "receivers", "when"], rows))
    if esc.routes or esc.rule_policies:
        click.echo("")
        route_rows = [[f"rule {n}", f'alertname="{n}"', p, "high", "no"]
                      for n, p in esc.rule_policies.items()]  # fmt: skip
        for i, r in enumerate(esc.routes):
            matchers = [str(m) for m in r.matchers]
            if r.severities:
                matchers.append("severity in " + "|".join(sorted(r.severities)))
            route_rows.append(
                [f"route {i + 1}", ", ".join(matchers) or "(every alert)", r.policy, r.urgency,
                 "yes" if r.continue_ else "no"]
            )  # fmt: skip
        click.echo(table(["priority", "matches", "policy", "urgency", "continue"], route_rows))


@policies.command("check")
@click.pass_context
@fail_cleanly
def policies_check(ctx: click.Context) -> None:
    """Validate the policies (loading the config does: errors name the file, the policy and
    the step), then report what an operator would want to know: policies no route selects,
    receivers a level names that take none of the severities routed to it, and rules whose
    alerts get no policy. Exit 1 on errors, 0 with warnings."""
    settings = settings_of(ctx)
    esc = settings.escalation
    warnings: list[str] = []
    used = set(esc.rule_policies.values()) | {r.policy for r in esc.routes}
    for policy in esc.policies:
        if policy.name not in used:
            warnings.append(f"policy {policy.name}: no route or rule selects it")
    receivers = {r.name: r for r in settings.alertmanager.receivers}
    covered: list[str] = []
    for rule, labels in _rule_labels(settings):
        chosen = esc.select(labels)
        if not chosen:
            covered.append(rule)
            continue
        for selected in chosen:
            levels = _levels(selected.policy)
            for level in levels[:1] if selected.urgency == "low" else levels:
                takers = [
                    n for n in level["receivers"]
                    if labels["severity"] in {s.value for s in receivers[n].severities}
                ]  # fmt: skip
                if not takers and not level["schedules"] and not level["people"]:
                    warnings.append(
                        f"rule {rule}: policy {selected.policy.name} level {level['level']}"
                        f" notifies nobody: {', '.join(level['receivers'])} take no"
                        f" {labels['severity']} alerts (their severities)"
                    )
    warnings += oncall_warnings(settings, now_ns())
    for line in warnings:
        click.echo(f"warning: {line}")
    if esc.policies and covered:
        click.echo(f"note: no policy for rule(s) {', '.join(covered)} (they do not escalate)")
    click.echo(
        f"ok: {len(esc.policies)} policies, {len(esc.routes)} routes"
        f" in {settings.source}" + (f", {len(warnings)} warning(s)" if warnings else "")
    )


def oncall_warnings(settings: Settings, now: int, days: int = DAYS) -> list[str]:
    """Schedules with nobody on call at times over the next `days`, and people a page can
    reach by no contact method."""
    oncall = settings.oncall
    out = []
    for name, schedule in sorted(oncall.schedules.items()):
        gaps = schedule.gaps(now, now + days * 86400 * NS)
        if gaps:
            first = gaps[0]
            out.append(f"schedule {name}: nobody on call {len(gaps)} time(s) in the next"
                       f" {days} days, first {local_time(first.start, schedule.timezone)} .."
                       f" {local_time(first.end, schedule.timezone)}")  # fmt: skip
        for layer in schedule.layers:
            unmatched = getattr(layer, "unmatched", None)  # a calendar layer's
            count = unmatched(now, now + days * 86400 * NS) if unmatched is not None else 0
            if count:
                out.append(f"schedule {name}: {count} event(s) of layer {layer.name}'s"
                           f" calendar in the next {days} days name nobody configured")  # fmt: skip
    paged = {p for s in oncall.schedules.values() for p in s.people()}
    paged |= {p for pol in settings.escalation.policies for st in pol.steps for p in st.people}
    for name in sorted(paged):
        person = oncall.people.get(name)
        if person is not None and not person.contacts:
            out.append(f"person {name}: no contact method (a page to them reaches nobody)")
    return out


@policies.command("test")
@click.argument("labels", nargs=-1, required=True)
@click.pass_context
@fail_cleanly
def policies_test(ctx: click.Context, labels: tuple[str, ...]) -> None:
    """Which policies an alert with LABELS (name=value ...) would get, as `amtool config
    routes test` shows receivers. Exit 1 when none."""
    parsed: dict[str, str] = {}
    for item in labels:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.UsageError(f"not a label like severity=critical: {item!r}")
        parsed[name] = value.strip('"')
    chosen = settings_of(ctx).escalation.select(parsed)
    if not chosen:
        click.echo("no policy: the alert would not escalate")
        sys.exit(1)
    for selected in chosen:
        click.echo(f"{selected.policy.name} (urgency {selected.urgency}, by {selected.why})")


@main.command("simulate")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
@fail_cleanly
def simulate_command(ctx: click.Context, scenario: str, output: str) -> None:
    """Replay SCENARIO (metric values over time, optional acknowledgements) through the rule
    set and the escalation policies on a virtual clock, with no network, and print the
    timeline: what fires when, who would be notified when, what an acknowledgement changes."""
    import asyncio

    from bridge.escalation.simulate import load_scenario, simulate

    settings = settings_of(ctx)
    loaded = load_scenario(scenario, settings.prometheus.evaluation_interval)
    timeline = asyncio.run(simulate(settings, loaded))
    if output == "json":
        click.echo(json.dumps([e.to_json() for e in timeline], indent=2))
        return
    for entry in timeline:
        click.echo(f"{format_duration(entry.at):>8}  {entry.what:<10}  {entry.text}")
