"""Render alertmanager.yml: a route per rule, twin inhibitions, the bridge's webhook receiver."""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import combinations
from typing import Any

from bridge.config import BRIDGE_RECEIVER, AlertmanagerSettings, Receiver, person_contacts
from bridge.core.model import AlertRule, Severity
from bridge.core.policies import (
    HEARTBEAT_ALERT,
    HELD_ALERT,
    LABEL_FALLBACK,
    LABEL_HELD,
    LABEL_LEVEL,
    LABEL_PEOPLE,
    LABEL_POLICY,
    LABEL_RECEIVER,
    PERSON_RECEIVER,
    TEST_LABEL,
    EscalationSettings,
    Step,
)
from bridge.core.rules import rules_by_metric
from bridge.core.times import format_duration
from bridge.generate.dump import dump_yaml
from bridge.generate.templates import TEMPLATES_DIR, apply_templates

GROUP_BY = ["alertname", "job", "instance"]
#: The receiver of escalation copies no level receiver takes (their severities): nothing.
NULL_RECEIVER = "alertbridge-escalation-none"
INHIBIT_EQUAL = ["metric", "instance"]


def _matcher(name: str, value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def _severity_matcher(receiver: Receiver) -> str:
    return "severity=~" + '"' + "|".join(s.value for s in receiver.severities) + '"'


def direct_receivers(
    settings: AlertmanagerSettings, escalation: EscalationSettings | None
) -> list[Receiver]:
    """Receivers reached by severity: those no escalation policy names (a receiver a policy
    names is reached through its level only, or level 0 would notify it twice)."""
    used = {n for p in escalation.policies for n in p.receivers()} if escalation else set()
    return [r for r in settings.receivers if r.name not in used]


def routed_receivers(
    rule: AlertRule, settings: AlertmanagerSettings, escalation: EscalationSettings | None = None
) -> list[str]:
    """Receivers an alert of `rule` reaches, in the order amtool reports them."""
    names = [BRIDGE_RECEIVER]
    names += [r.name for r in direct_receivers(settings, escalation)
              if rule.severity in r.severities]  # fmt: skip
    return names


def level_receivers(
    escalation: EscalationSettings, settings: AlertmanagerSettings
) -> list[tuple[str, int, list[Receiver]]]:
    """(policy, level, receivers) for every level of every policy."""
    by_name = {r.name: r for r in settings.receivers}
    out = []
    for policy in escalation.policies:
        notify = [s for s in policy.steps if s.kind == "notify"]
        for level, step in enumerate(notify):
            out.append((policy.name, level, [by_name[n] for n in step.receivers]))
    return out


def copy_receivers(receivers: list[Receiver], severity: Severity) -> list[str]:
    """Which of a level's receivers an escalation copy of this severity reaches, as amtool
    reports them (the null receiver when none takes it)."""
    names = [r.name for r in receivers if severity in r.severities]
    return names or [NULL_RECEIVER]


def _level_matchers(receiver: Receiver, escalation: EscalationSettings) -> list[str]:
    """A level receiver takes its severities, and not a copy its rate limit held back."""
    out = [_severity_matcher(receiver)]
    if escalation.limit_of(receiver.name):
        name = re.escape(receiver.name)
        out.append(f'{LABEL_HELD}!~"(.*,)?{name}(,.*)?"')
    return out


def escalation_routes(
    escalation: EscalationSettings, settings: AlertmanagerSettings
) -> list[dict[str, Any]]:
    """A route per policy level, ahead of the others and not continuing: copies go to the
    level's receivers (each within its severities) and nowhere else. Each copy is a group
    of its own (group_by: ['...']) notified at once (group_wait 0s)."""
    routes = []
    for limit in escalation.rate_limits:  # the summary that replaces what a limit held back
        routes.append({
            "matchers": [_matcher("alertname", HELD_ALERT),
                         _matcher(LABEL_RECEIVER, limit.receiver)],
            "receiver": limit.receiver, "group_by": ["..."], "group_wait": "0s",
            "continue": False,
        })  # fmt: skip
    by_name = {r.name: r for r in settings.receivers}
    for policy, level, receivers in level_receivers(escalation, settings):
        step = _notify_steps(escalation, policy)[level]
        children = [
            {"matchers": _level_matchers(r, escalation), "receiver": r.name, "continue": True}
            for r in receivers
        ]
        # the people it may page (named, or in its schedules), each by the copy's label
        for person in people_of_step(escalation, step):
            receiver = PERSON_RECEIVER.format(person)
            matchers = [_listed(LABEL_PEOPLE, person)]
            children.append({"matchers": matchers, "receiver": receiver, "continue": True})
        if step.schedules:  # a schedule with nobody on call: the policy's fallback
            fallback = escalation.policy(policy)
            for name in fallback.fallback if fallback else ():
                if name not in step.receivers:
                    children.append({
                        "matchers": [_matcher(LABEL_FALLBACK, "true"),
                                     *_level_matchers(by_name[name], escalation)],
                        "receiver": name, "continue": True,
                    })  # fmt: skip
        routes.append(
            {
                "matchers": [_matcher(LABEL_POLICY, policy), _matcher(LABEL_LEVEL, str(level))],
                "receiver": NULL_RECEIVER,
                "group_by": ["..."],
                "group_wait": "0s",
                "continue": False,
                "routes": children,
            }
        )
    return routes


def _notify_steps(escalation: EscalationSettings, policy: str) -> list[Step]:
    found = escalation.policy(policy)
    return [s for s in found.steps if s.kind == "notify"] if found else []


def people_of_step(escalation: EscalationSettings, step: Step) -> list[str]:
    """Everyone a step may page: the people it names, and those of its schedules."""
    named = list(step.people)
    for name in step.schedules:
        schedule = escalation.oncall.schedules.get(name)
        named += sorted(schedule.people()) if schedule else []
    return list(dict.fromkeys(named))


def _listed(label: str, value: str) -> str:
    """A matcher: `value` is one of the comma-separated values of `label`."""
    return f'{label}=~"(.*,)?{re.escape(value)}(,.*)?"'


def person_receivers(
    escalation: EscalationSettings, settings: AlertmanagerSettings, public_url: str | None = None
) -> list[dict[str, Any]]:
    """One receiver per person of the directory, `person-NAME`, of their contact methods
    (each rendered as the receiver of its type would be: templates, the Teams adapter)."""
    out: list[dict[str, Any]] = []
    for receiver in person_contacts(escalation.oncall):
        rendered = receiver_config(receiver, settings, public_url)
        if out and out[-1]["name"] == receiver.name:
            for kind, configs in rendered.items():
                if kind != "name":
                    out[-1].setdefault(kind, []).extend(configs)
        else:
            out.append(rendered)
    names = {r["name"] for r in out}
    out += [{"name": PERSON_RECEIVER.format(n)} for n in sorted(escalation.oncall.people)
            if PERSON_RECEIVER.format(n) not in names]  # fmt: skip
    return sorted(out, key=lambda r: str(r["name"]))


def inhibit_rules(rules: list[AlertRule]) -> list[dict[str, Any]]:
    """A more severe rule on a metric silences each less severe rule on it (same instance);
    threshold rules of one condition only (an anomaly, or several conditions, is another
    question about the metric than its level: neither silences nor is silenced)."""
    out = []
    plain = [r for r in rules if r.anomaly is None and not r.also]
    for group in rules_by_metric(plain).values():
        ordered = sorted(group, key=lambda r: -r.severity.rank)
        for high, low in combinations(ordered, 2):
            if high.severity.rank > low.severity.rank:
                out.append(
                    {
                        "source_matchers": [_matcher("alertname", high.name)],
                        "target_matchers": [_matcher("alertname", low.name)],
                        "equal": INHIBIT_EQUAL,
                    }
                )
    return out


def adapter_url(settings: AlertmanagerSettings, receiver: str) -> str:
    """Where Alertmanager posts a Teams receiver's notifications: the bridge's adapter, at
    the same address as its webhook."""
    base = settings.webhook_url.removesuffix("/api/v1/alertmanager").rstrip("/")
    return f"{base}/api/v1/adapters/msteams/{receiver}"


def receiver_config(receiver: Receiver, settings: AlertmanagerSettings,
                    public_url: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A receiver's Alertmanager configuration. Microsoft Teams: on 0.25 and 0.26 (0.26 has
    msteams_configs but no webhook_url_file: the secret would sit in alertmanager.yml) a
    webhook to the bridge's adapter with the bridge's webhook token; 0.27 msteams_configs
    (an Office 365 connector URL) and 0.28+ msteamsv2_configs (a Workflows URL), both with
    webhook_url_file."""
    config = dict(receiver.config)
    if receiver.type != "msteams":
        config = apply_templates(receiver.type, config, public_url)
        return {"name": receiver.name, f"{receiver.type}_configs": [config]}
    send_resolved = bool(config.get("send_resolved", True))
    version = tuple(int(p) for p in settings.version.split("."))
    if version >= (0, 27):
        kind = "msteamsv2_configs" if version >= (0, 28) else "msteams_configs"
        native = {"webhook_url_file": config["webhook_url_file"], "send_resolved": send_resolved}
        native.update({k: config[k] for k in ("title", "text") if k in config})
        return {"name": receiver.name, kind: [native]}
    webhook = {
        "url": adapter_url(settings, receiver.name),
        "send_resolved": send_resolved,
        "http_config": {"authorization": {"type": "Bearer",
                                          "credentials_file": settings.webhook_token_file}},
    }  # fmt: skip
    return {"name": receiver.name, "webhook_configs": [webhook]}


def test_routes(settings: AlertmanagerSettings, people: Sequence[str]) -> list[dict[str, Any]]:
    """`alertbridge channels test R` (and `people test P`, to person-P): its alert (label
    alertbridge_test="R") to R alone, at once (each test alert is a group of its own), and
    nothing more: no repeat and no resolved notification within a day, which would count as
    deliveries of a later test."""
    names = [r.name for r in settings.receivers] + [PERSON_RECEIVER.format(p) for p in people]
    return [
        {"matchers": [_matcher(TEST_LABEL, name)], "receiver": name, "group_by": ["..."],
         "group_wait": "0s", "group_interval": "1d", "repeat_interval": "1d", "continue": False}
        for name in names
    ]  # fmt: skip


def heartbeat_route(interval: int) -> dict[str, Any]:
    """The heartbeat to the bridge alone, again every `interval` (group_interval and
    repeat_interval both: a firing group is notified again at the first flush after its
    repeat interval)."""
    every = format_duration(interval)
    return {
        "matchers": [_matcher("alertname", HEARTBEAT_ALERT)],
        "receiver": BRIDGE_RECEIVER,
        "group_by": ["alertname"],
        "group_wait": "0s",
        "group_interval": every,
        "repeat_interval": every,
        "continue": False,
    }


def render_alertmanager(
    rules: list[AlertRule],
    settings: AlertmanagerSettings,
    escalation: EscalationSettings | None = None,
    heartbeat: int | None = None,
    public_url: str | None = None,
) -> str:
    """`alertmanager.yml` for the enabled rules (and the escalation policies' levels, and
    the heartbeat every `heartbeat` seconds; with the bridge's `public_url`, links in the
    receivers that take them)."""
    escalation = escalation or EscalationSettings()
    routes: list[dict[str, Any]] = [heartbeat_route(heartbeat)] if heartbeat else []
    routes += test_routes(settings, sorted(escalation.oncall.people))
    routes += escalation_routes(escalation, settings)
    windows: list[dict[str, Any]] = []
    for rule in rules:
        if not rule.enabled:
            continue
        # Alertmanager rejects repeat_interval 0s: a cooldown of 0 becomes the minimum, 1s.
        route: dict[str, Any] = {
            "matchers": [_matcher("alertname", rule.name)],
            "receiver": BRIDGE_RECEIVER,
            "repeat_interval": format_duration(max(1, round(rule.cooldown_seconds))),
            "continue": True,
        }
        if rule.when is not None:
            windows.append(time_interval(rule))
            route = windowed_route(rule, route, direct_receivers(settings, escalation))
        routes.append(route)
    for receiver in direct_receivers(settings, escalation):
        routes.append(
            {"matchers": [_severity_matcher(receiver)], "receiver": receiver.name, "continue": True}
        )
    receivers: list[dict[str, Any]] = [
        {
            "name": BRIDGE_RECEIVER,
            # One webhook config per bridge replica: Alertmanager notifies each on its own
            # (and retries each on its own); the store keeps one row per episode.
            "webhook_configs": [
                {
                    "url": url,
                    "send_resolved": True,
                    "http_config": {
                        "authorization": {
                            "type": "Bearer",
                            "credentials_file": settings.webhook_token_file,
                        }
                    },
                }
                for url in settings.webhook_urls
            ],
        }
    ]
    for receiver in settings.receivers:
        receivers.append(receiver_config(receiver, settings, public_url))
    receivers += person_receivers(escalation, settings, public_url)
    if escalation.policies:
        receivers.append({"name": NULL_RECEIVER})
    doc = {
        "route": {
            "receiver": BRIDGE_RECEIVER,
            "group_by": GROUP_BY,
            "group_wait": format_duration(settings.group_wait),
            "group_interval": format_duration(settings.group_interval),
            "repeat_interval": format_duration(settings.repeat_interval),
            "routes": routes,
        },
        "inhibit_rules": inhibit_rules(rules),
        "receivers": receivers,
        "templates": [f"{TEMPLATES_DIR}/*.tmpl"],  # relative to alertmanager.yml
    }
    if windows:
        doc["time_intervals"] = windows
    return dump_yaml(doc)


#: Alertmanager's weekday names (time_intervals).
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def time_interval(rule: AlertRule) -> dict[str, Any]:
    """The rule's window as an Alertmanager time interval (`rule-NAME`), in its time zone
    (`location`, Alertmanager 0.25). A window across midnight is its two parts on the same
    weekdays (the weekday of a window is the local day of the instant, as Alertmanager's)."""
    window = rule.when
    if window is None:  # (never: asked for windowed rules only)
        raise ValueError(f"rule {rule.name} has no window")

    def hhmm(minutes: int) -> str:
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    if window.start < window.end:
        times = [{"start_time": hhmm(window.start), "end_time": hhmm(window.end)}]
    else:
        times = [{"start_time": hhmm(window.start), "end_time": "24:00"},
                 {"start_time": "00:00", "end_time": hhmm(window.end)}]  # fmt: skip
        times = [t for t in times if t["start_time"] != t["end_time"]]
    return {"name": f"rule-{rule.name}",
            "time_intervals": [{"weekdays": [_WEEKDAYS[d] for d in sorted(window.days)],
                                "times": times, "location": window.timezone}]}  # fmt: skip


def windowed_route(rule: AlertRule, route: dict[str, Any],
                   direct: list[Receiver]) -> dict[str, Any]:  # fmt: skip
    """The route of a rule with a window: every notification of its alerts (the bridge's
    and the channels' its severity reaches) only within `rule-NAME`; no route after it sees
    them (routing does not depend on the time: the channels' routes are repeated here,
    each with the window)."""
    names = [BRIDGE_RECEIVER, *(r.name for r in direct if rule.severity in r.severities)]
    children = [{"receiver": name, "active_time_intervals": [f"rule-{rule.name}"],
                 "continue": True} for name in names]  # fmt: skip
    return {**route, "continue": False, "routes": children}
