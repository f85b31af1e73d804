"""`alertbridge simulate SCENARIO.yml`: metric values over time, and optional acknowledgements,
replayed through the rule set and the escalation policies on a virtual clock, with no network:
which alert fires when, who would be notified when, what an acknowledgement changes.

The rules are evaluated as Prometheus would at every `step` (the condition on the value in
seed units; firing once it held for the rule's `for`; resolved when it stops holding); an
alert whose more severe twin fires is marked inhibited, as the generated inhibition rules make
Alertmanager hold its notifications (and its escalation copies). Escalation is the real engine
on a throw-away store, with its posts to Alertmanager recorded instead of sent.

A scenario (times are durations from the start):

    duration: 1h            # how long to replay
    step: 15s               # evaluation interval (default prometheus.evaluation_interval)
    instance: web-1:9100    # the instance label of the alerts (default "simulated")
    start: 2026-12-07T09:00:00+01:00   # the virtual clock's start (time windows); default
                            # Monday 2026-12-07 09:00 UTC
    metrics:                # seed units; each value holds from its time until the next
      system.cpu.percent:
        - {at: 0s, value: 40}
        - {at: 5m, value: 97}
        - {at: 40m, value: 35}
    acks:                   # optional: acknowledge (or unack: true) a rule's alert
      - {at: 12m, rule: critical_cpu, by: alice}
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.config import Settings
from bridge.core.alerts import ReceivedAlert
from bridge.core.errors import ConfigError, Conflict
from bridge.core.expressions import alert_labels
from bridge.core.model import AlertRule
from bridge.core.times import NS, format_duration, parse_duration, parse_rfc3339
from bridge.escalation.engine import Escalator
from bridge.store import open_store

T0 = 1_796_634_000 * NS  # the virtual clock's default start: Monday 2026-12-07 09:00 UTC
MAX_STEPS = 200_000


@dataclass(frozen=True, slots=True)
class Ack:
    at: int  # seconds
    rule: str
    by: str
    unack: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    duration: int
    step: int
    instance: str
    metrics: Mapping[str, Sequence[tuple[int, float]]]
    acks: Sequence[Ack] = ()
    start: int = T0  # the virtual clock's start (time windows depend on it), ns


@dataclass(frozen=True, slots=True)
class Entry:
    """One line of the timeline."""

    at: int  # seconds from the start
    what: str  # metric, pending, firing, resolved, ack, escalation
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"at": format_duration(self.at), "at_seconds": self.at, "what": self.what,
                "text": self.text}  # fmt: skip


def _duration(raw: object, source: str, key: str) -> int:
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(source, key, str(exc)) from None


def load_scenario(path: str | Path, default_step: int) -> Scenario:
    """A scenario file; ConfigError naming the file and the key."""
    source = str(path)
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(source, "file", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, "yaml", str(exc).replace("\n", " ")) from None
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "file", "top level must be a mapping")
    unknown = set(raw) - {"duration", "step", "instance", "metrics", "acks", "start"}
    if unknown:
        raise ConfigError(source, sorted(unknown)[0], "unknown setting")
    duration = _duration(raw.get("duration", "1h"), source, "duration")
    step = _duration(raw.get("step", default_step), source, "step")
    if step <= 0 or duration <= 0:
        raise ConfigError(source, "step" if step <= 0 else "duration", "must be longer than 0s")
    if duration // step > MAX_STEPS:
        raise ConfigError(source, "duration", f"at most {MAX_STEPS} steps of {step}s")
    metrics_raw = raw.get("metrics")
    if not isinstance(metrics_raw, Mapping) or not metrics_raw:
        raise ConfigError(source, "metrics", "must map metric names to lists of {at, value}")
    metrics: dict[str, list[tuple[int, float]]] = {}
    for name, points in metrics_raw.items():
        key = f"metrics.{name}"
        if not isinstance(points, list) or not points:
            raise ConfigError(source, key, "must be a non-empty list of {at, value}")
        out = []
        for i, point in enumerate(points):
            if not isinstance(point, Mapping) or set(point) != {"at", "value"}:
                raise ConfigError(source, f"{key}[{i}]", "must be {at: DURATION, value: NUMBER}")
            value = point["value"]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(source, f"{key}[{i}].value", f"must be a number, got {value!r}")
            out.append((_duration(point["at"], source, f"{key}[{i}].at"), float(value)))
        if [t for t, _ in out] != sorted({t for t, _ in out}):
            raise ConfigError(source, key, "times must increase")
        metrics[str(name)] = out
    acks = []
    for i, entry in enumerate(raw.get("acks") or []):
        key = f"acks[{i}]"
        if not isinstance(entry, Mapping) or not {"at", "rule"} <= set(entry):
            raise ConfigError(source, key, "must be {at, rule, by} (unack: true to withdraw)")
        if set(entry) - {"at", "rule", "by", "unack"}:
            raise ConfigError(source, key, "takes only at, rule, by, unack")
        when = _duration(entry["at"], source, f"{key}.at")
        by, unack = str(entry.get("by", "simulated")), bool(entry.get("unack", False))
        acks.append(Ack(when, str(entry["rule"]), by, unack))
    instance = str(raw.get("instance", "simulated"))
    start = T0
    if raw.get("start") is not None:
        text = raw["start"].isoformat() if hasattr(raw["start"], "isoformat") else raw["start"]
        try:
            parsed = parse_rfc3339(str(text).replace("+00:00", "Z")) if text else None
        except ValueError:
            parsed = None
        if parsed is None:
            raise ConfigError(source, "start", f"must be an RFC 3339 time, got {text!r}")
        start = parsed
    ordered = sorted(acks, key=lambda a: a.at)
    return Scenario(duration, step, instance, metrics, ordered, start)


def _value(points: Sequence[tuple[int, float]], at: int) -> float | None:
    current = None
    for t, value in points:
        if t > at:
            break
        current = value
    return current


@dataclass
class _RuleState:
    pending_since: int | None = None
    alert_id: int | None = None
    starts_at: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    inhibited_by: str | None = None


class _Recorder:
    """Alertmanager as the simulation's engine sees it: posts taken, nothing sent."""

    def __init__(self) -> None:
        self.posts = 0

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> int:
        self.posts += len(alerts)
        return 1


def _fingerprint(rule: AlertRule, instance: str) -> str:
    return hashlib.sha256(f"{rule.name}/{instance}".encode()).hexdigest()[:16]


async def simulate(settings: Settings, scenario: Scenario) -> list[Entry]:
    """The timeline of a scenario (see the module's documentation)."""
    timeline: list[Entry] = []
    rules = [r for r in settings.rules.enabled if r.metric_name in scenario.metrics and not r.expr]
    states = {r.name: _RuleState() for r in rules}
    now = [scenario.start]
    with tempfile.TemporaryDirectory(prefix="alertbridge-simulate-") as tmp:
        store = open_store(Path(tmp) / "simulation.db")
        await store.start()
        try:
            engine = Escalator(store, settings.escalation, _Recorder(), clock=lambda: now[0])
            await engine.consumer.start()
            position = await store.last_event_id()
            acks = list(scenario.acks)
            previous: dict[str, float | None] = {}
            names: dict[int, tuple[str, str | None]] = {}  # alert id -> (rule, inhibited by)
            for tick in range(scenario.duration // scenario.step + 1):
                at = tick * scenario.step
                now[0] = scenario.start + at * NS
                for name, points in scenario.metrics.items():
                    value = _value(points, at)
                    if value is not None and previous.get(name) != value:
                        timeline.append(Entry(at, "metric", f"{name} = {value:g}"))
                    previous[name] = value
                await _evaluate(store, rules, states, scenario, at, now[0], timeline)
                for name, state in states.items():
                    if state.alert_id is not None:
                        names[state.alert_id] = (name, state.inhibited_by)
                while acks and acks[0].at <= at:
                    await _ack(store, states, acks.pop(0), at, now[0], timeline)
                await engine.consumer.catch_up()
                await engine.tick()
                for event in await store.events_after(position, 10_000):
                    position = event.id
                    if event.kind.startswith("escalat") and event.kind != "escalation_started":
                        rule, held = names.get(event.alert_id, ("?", None))
                        text = f"{rule}: {event.kind}: {event.detail}"
                        if held and event.kind == "escalated":
                            text += f" (held by Alertmanager: inhibited by {held})"
                        timeline.append(Entry(at, "escalation", text))
        finally:
            await store.close()
    return timeline


async def _evaluate(
    store: Any,
    rules: Sequence[AlertRule],
    states: dict[str, _RuleState],
    scenario: Scenario,
    at: int,
    now: int,
    timeline: list[Entry],
) -> None:
    for rule in rules:
        state = states[rule.name]
        value = _value(scenario.metrics[rule.metric_name], at)
        holds = value is not None and rule.condition.holds(value, rule.threshold)
        if holds and state.alert_id is None:
            if state.pending_since is None:
                state.pending_since = at
                if rule.for_seconds:
                    timeline.append(Entry(at, "pending", f"{rule.name} pending (for "
                                          f"{format_duration(rule.for_seconds)})"))  # fmt: skip
            if at - state.pending_since >= rule.for_seconds:
                state.labels = {"alertname": rule.name, "instance": scenario.instance,
                                "job": "simulated", **alert_labels(rule)}  # fmt: skip
                alert = ReceivedAlert(_fingerprint(rule, scenario.instance), "firing", now, None,
                                      state.labels, {"summary": rule.description}, "")  # fmt: skip
                result = await store.ingest([alert], now)
                state.alert_id, state.starts_at = result.fired[0], now
                twins = [r.name for r in rules if r.metric_name == rule.metric_name
                         and r.severity.rank > rule.severity.rank
                         and states[r.name].alert_id is not None]  # fmt: skip
                note = ""
                state.inhibited_by = twins[0] if twins else None
                if twins:
                    note = f", inhibited by {twins[0]}: Alertmanager holds its notifications"
                timeline.append(Entry(at, "firing", f"{rule.name} FIRING ({rule.severity.value},"
                                      f" {rule.metric_name} = {value:g}, alert"
                                      f" {state.alert_id}){note}"))  # fmt: skip
        elif not holds:
            state.pending_since = None
            if state.alert_id is not None:
                alert = ReceivedAlert(_fingerprint(rule, scenario.instance), "resolved",
                                      state.starts_at, now, state.labels,
                                      {"summary": rule.description}, "")  # fmt: skip
                await store.ingest([alert], now)
                timeline.append(Entry(at, "resolved", f"{rule.name} resolved"))
                state.alert_id = None


async def _ack(store: Any, states: dict[str, _RuleState], ack: Ack, at: int, now: int,
               timeline: list[Entry]) -> None:  # fmt: skip
    state = states.get(ack.rule)
    if state is None or state.alert_id is None:
        timeline.append(Entry(at, "ack", f"{ack.rule}: nothing firing to"
                              f" {'unacknowledge' if ack.unack else 'acknowledge'}"))  # fmt: skip
        return
    try:
        if ack.unack:
            await store.unacknowledge(state.alert_id, ack.by, "simulated", now)
            timeline.append(Entry(at, "ack", f"{ack.rule} unacknowledged by {ack.by}"))
        else:
            await store.acknowledge(state.alert_id, ack.by, "simulated", now)
            timeline.append(Entry(at, "ack", f"{ack.rule} acknowledged by {ack.by}"))
    except Conflict as exc:  # as the CLI would answer: the scenario goes on
        timeline.append(Entry(at, "ack", f"{ack.rule}: {exc}"))
