"""Escalation policies and the routing rules that pick them (the `escalation:` section).

A policy is an ordered list of steps: `notify` (a level: receivers to notify, optionally only
within a time window), `wait` (a duration before the next step), and at the end an optional
`repeat` (go back to the first step, at most MAX_REPEAT times). Levels are numbered from 0 in
the order of the notify steps.

Routing rules pick the policies of a new episode, in priority order: the first rule that
matches wins unless it says `continue`; a rule of the rule set may name its policy
(`escalation:` on the rule), which then comes first. A rule matches on Alertmanager-style
label matchers and a list of severities. Urgency (`low` or `high`) comes from the alert's
`urgency` label, else from the routing rule (default high): a low-urgency alert never goes
past its first step.

>>> p = parse_policy({"name": "p", "steps": [{"notify": ["a"]}, {"wait": "5m"},
...                                           {"notify": ["b"]}]}, "f.yml", 0)
>>> [s.describe() for s in p.steps], p.levels
(['notify a', 'wait 5m', 'notify b'], 2)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.core.errors import ConfigError, InvalidInput
from bridge.core.matchers import Matcher
from bridge.core.model import Severity
from bridge.core.oncall import OnCall
from bridge.core.times import format_duration, parse_duration
from bridge.core.windows import Window, parse_window

MAX_REPEAT = 10
MAX_STEPS = 50
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
URGENCIES = ("high", "low")
#: Labels a copy of an alert posted for an escalation level carries besides the alert's own;
#: the generated routes send it by them, and the webhook receiver never stores it.
LABEL_POLICY, LABEL_LEVEL, LABEL_ROUND = "escalation_policy", "escalation_level", "escalation_round"
#: On a copy: the receivers held back from it by their rate limit (comma-separated); on the
#: summary alert that tells a held-back receiver instead: its name.
LABEL_HELD, LABEL_RECEIVER = "escalation_held", "escalation_receiver"
#: On a copy: the people it pages (comma-separated), and "true" when the policy's fallback
#: receivers get it (a schedule of its step had nobody on call).
LABEL_PEOPLE, LABEL_FALLBACK = "escalation_people", "escalation_fallback"
#: The annotation of a copy holding the link that acknowledges its alert (templates show it).
ACK_URL = "alertbridge_ack_url"
#: The receiver `rules generate` writes for a person (their contact methods).
PERSON_RECEIVER = "person-{}"
HELD_ALERT = "AlertbridgeEscalationsHeld"


#: The dead man's switch: an always-firing alert routed to the bridge (bridge.escalation.
#: heartbeat), and the local alert raised when it stops arriving.
HEARTBEAT_ALERT = "AlertbridgeHeartbeat"
SILENT_ALERT = "AlertingPipelineSilent"
HEARTBEAT_LABELS = {"alertname": HEARTBEAT_ALERT, "alertbridge": "heartbeat", "severity": "none"}


def is_heartbeat(labels: Mapping[str, str]) -> bool:
    """Whether an alert is the dead man's switch's heartbeat."""
    return labels.get("alertname") == HEARTBEAT_ALERT and labels.get("alertbridge") == "heartbeat"


#: The label of `alertbridge channels test` alerts: routed to the named receiver alone.
TEST_LABEL = "alertbridge_test"


def is_internal(labels: Mapping[str, str]) -> bool:
    """Whether an alert is the bridge's own (an escalation copy, the heartbeat, a channel
    test): never stored as an alert of its own."""
    return (
        is_copy(labels)
        or is_heartbeat(labels)
        or TEST_LABEL in labels
        or (labels.get("alertname") == HELD_ALERT and LABEL_RECEIVER in labels)
    )


def is_copy(labels: Mapping[str, str]) -> bool:
    """Whether an alert is one of the bridge's escalation copies."""
    return LABEL_LEVEL in labels and LABEL_POLICY in labels


@dataclass(frozen=True, slots=True)
class Step:
    """One step: notify (a level: receivers, and people, named or whoever is on call in a
    schedule when the step is taken), or wait `wait` seconds."""

    kind: str  # notify | wait
    receivers: tuple[str, ...] = ()
    wait: int = 0
    when: Window | None = None
    schedules: tuple[str, ...] = ()
    people: tuple[str, ...] = ()

    def targets(self) -> list[str]:
        """What it notifies, as written: "team-mail", "schedule primary", "person alice"."""
        return [*self.receivers, *(f"schedule {s}" for s in self.schedules),
                *(f"person {p}" for p in self.people)]  # fmt: skip

    def describe(self) -> str:
        if self.kind == "wait":
            return f"wait {format_duration(self.wait)}"
        text = "notify " + ", ".join(self.targets())
        return text + (f" (only {self.when.describe()})" if self.when else "")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "wait":
            out["wait"] = self.wait
        else:
            out["receivers"] = list(self.receivers)
            if self.schedules:
                out["schedules"] = list(self.schedules)
            if self.people:
                out["people"] = list(self.people)
            if self.when:
                out["when"] = self.when.to_json()
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Step:
        when = raw.get("when")
        return cls(
            kind=raw["kind"],
            receivers=tuple(raw.get("receivers", ())),
            wait=int(raw.get("wait", 0)),
            when=Window(when["timezone"], frozenset(when["days"]), when["start"], when["end"])
            if when
            else None,
            schedules=tuple(raw.get("schedules", ())),
            people=tuple(raw.get("people", ())),
        )


@dataclass(frozen=True, slots=True)
class Policy:
    """A named escalation policy. `ack_timeout` (seconds, 0: none): an acknowledgement not
    followed by resolution within it is withdrawn and escalation starts again."""

    name: str
    steps: tuple[Step, ...]
    repeat: int = 0
    ack_timeout: int = 0
    #: Receivers notified in place of a schedule that has nobody on call when its step is
    #: taken.
    fallback: tuple[str, ...] = ()

    @property
    def levels(self) -> int:
        return sum(1 for s in self.steps if s.kind == "notify")

    def level_of(self, position: int) -> int:
        """The level of the notify step at `position`."""
        return sum(1 for s in self.steps[:position] if s.kind == "notify")

    def receivers(self) -> list[str]:
        """Every receiver the policy notifies, in order, once each (the fallback too)."""
        named = [r for s in self.steps for r in s.receivers]
        return list(dict.fromkeys([*named, *self.fallback]))

    def to_json(self) -> dict[str, Any]:
        """The policy as copied onto an episode when it starts."""
        out = {"name": self.name, "steps": [s.to_json() for s in self.steps],
               "repeat": self.repeat, "ack_timeout": self.ack_timeout}  # fmt: skip
        if self.fallback:
            out["fallback"] = list(self.fallback)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Policy:
        return cls(
            name=raw["name"],
            steps=tuple(Step.from_json(s) for s in raw["steps"]),
            repeat=int(raw.get("repeat", 0)),
            ack_timeout=int(raw.get("ack_timeout", 0)),
            fallback=tuple(raw.get("fallback", ())),
        )


@dataclass(frozen=True, slots=True)
class Route:
    """A routing rule: which alerts get `policy`."""

    policy: str
    matchers: tuple[Matcher, ...] = ()
    severities: frozenset[str] = frozenset()  # empty: any
    urgency: str = "high"
    continue_: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.severities and labels.get("severity", "") not in self.severities:
            return False
        return all(m.matches(dict(labels)) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class Selected:
    """A policy chosen for an episode, with the episode's urgency."""

    policy: Policy
    urgency: str
    why: str  # the rule or route that chose it


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `max` escalation notifications to `receiver` per `per` seconds; above it the
    receiver gets one summary instead (the copies still reach the level's other receivers)."""

    receiver: str
    max: int
    per: int


#: The least time a copy stays active in Alertmanager without being posted again.
MIN_HOLD_SECONDS = 300


@dataclass(frozen=True, slots=True)
class EscalationSettings:
    """Policies, routing rules, and how often active copies are re-posted to Alertmanager."""

    policies: tuple[Policy, ...] = ()
    routes: tuple[Route, ...] = ()
    repost_interval: int = 60
    rule_policies: Mapping[str, str] = field(default_factory=dict)  # alertname -> policy
    rate_limits: tuple[RateLimit, ...] = ()
    #: process: the engine runs in a worker process of its own; inline: in the server's.
    worker: str = "process"
    #: The people and schedules steps page (bridge.core.oncall).
    oncall: OnCall = field(default_factory=lambda: OnCall({}, {}))

    @property
    def hold_seconds(self) -> int:
        """How far ahead a posted copy's endsAt lies: four repost intervals (as Prometheus
        does with its resend delay), and at least MIN_HOLD_SECONDS, so that a restart of the
        engine (its worker process, or the server) does not let Alertmanager resolve copies
        that a later repost would fire again: a second page for the same level."""
        return max(4 * self.repost_interval, MIN_HOLD_SECONDS)

    def limit_of(self, receiver: str) -> RateLimit | None:
        return next((r for r in self.rate_limits if r.receiver == receiver), None)

    def policy(self, name: str) -> Policy | None:
        return next((p for p in self.policies if p.name == name), None)

    def select(self, labels: Mapping[str, str]) -> list[Selected]:
        """The policies of a new episode with these labels, in priority order."""
        label_urgency = labels.get("urgency", "")
        out: list[Selected] = []
        named = self.rule_policies.get(labels.get("alertname", ""))
        if named:
            policy = self.policy(named)
            if policy is not None:
                urgency = label_urgency if label_urgency in URGENCIES else "high"
                return [Selected(policy, urgency, f"rule {labels.get('alertname')}")]
        for index, route in enumerate(self.routes):
            if not route.matches(labels):
                continue
            policy = self.policy(route.policy)
            if policy is not None and all(s.policy.name != policy.name for s in out):
                urgency = label_urgency if label_urgency in URGENCIES else route.urgency
                out.append(Selected(policy, urgency, f"route {index + 1}"))
            if not route.continue_:
                break
        return out


def config_matchers(raw: object, source: str, key: str) -> tuple[Matcher, ...]:
    """A config list of Alertmanager matchers; ConfigError naming `key`."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(source, key, 'must be a list like [team="infra"]')
    try:
        return tuple(Matcher.parse(str(m)) for m in raw)
    except InvalidInput as exc:
        raise ConfigError(source, key, exc.reason) from None


def positive_duration(raw: object, source: str, key: str) -> int:
    """A config duration longer than 0s, in seconds; ConfigError naming `key`."""
    try:
        seconds = parse_duration(raw)
    except ValueError as exc:
        raise ConfigError(source, key, str(exc)) from None
    if seconds <= 0:
        raise ConfigError(source, key, "must be longer than 0s")
    return seconds


def _where(policy: str, step: int | None = None) -> str:
    where = f"escalation.policies.{policy}"
    return where if step is None else f"{where}.steps[{step}]"


def parse_policy(raw: object, source: str, index: int) -> Policy:
    """One entry of `escalation.policies`; errors name the file, the policy and the step."""
    if not isinstance(raw, Mapping):
        raise ConfigError(source, f"escalation.policies[{index}]", "must be a mapping")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(
            source,
            f"escalation.policies[{index}].name",
            "must be a name of letters, digits, _ or -",
        )
    unknown = set(raw) - {"name", "steps", "ack_timeout", "fallback"}
    if unknown:
        raise ConfigError(source, f"{_where(name)}.{sorted(unknown)[0]}", "unknown setting")
    ack_timeout = 0
    if raw.get("ack_timeout") is not None:
        try:
            ack_timeout = parse_duration(raw["ack_timeout"])
        except ValueError as exc:
            raise ConfigError(source, f"{_where(name)}.ack_timeout", str(exc)) from None
    steps_raw = raw.get("steps")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ConfigError(source, f"{_where(name)}.steps", "must be a non-empty list of steps")
    if len(steps_raw) > MAX_STEPS:
        raise ConfigError(source, f"{_where(name)}.steps", f"at most {MAX_STEPS} steps")
    steps: list[Step] = []
    repeat = 0
    for i, entry in enumerate(steps_raw):
        key = _where(name, i)
        if not isinstance(entry, Mapping):
            raise ConfigError(source, key, "must be a mapping: notify, wait or repeat")
        kinds = [k for k in ("notify", "wait", "repeat") if k in entry]
        if len(kinds) != 1:
            raise ConfigError(source, key, "must have exactly one of notify, wait, repeat")
        kind = kinds[0]
        unknown = set(entry) - {kind} - ({"when"} if kind == "notify" else set())
        if unknown:
            raise ConfigError(
                source, f"{key}.{sorted(unknown)[0]}", f"not allowed on a {kind} step"
            )
        if kind == "notify":
            receivers, schedules, people = _targets(entry["notify"], source, f"{key}.notify")
            when = parse_window(entry["when"], source, f"{key}.when") if "when" in entry else None
            steps.append(Step("notify", receivers, when=when, schedules=schedules, people=people))
        elif kind == "wait":
            steps.append(Step("wait", wait=positive_duration(entry["wait"], source, f"{key}.wait")))
        else:
            count = entry["repeat"]
            if i != len(steps_raw) - 1:
                raise ConfigError(source, f"{key}.repeat", "repeat must be the last step")
            if (
                isinstance(count, bool)
                or not isinstance(count, int)
                or not 1 <= count <= MAX_REPEAT
            ):
                raise ConfigError(
                    source, f"{key}.repeat", f"must be a count from 1 to {MAX_REPEAT}"
                )
            if not any(s.kind == "wait" for s in steps):
                raise ConfigError(source, f"{key}.repeat", "a repeated policy needs a wait step")
            repeat = count
    if not any(s.kind == "notify" for s in steps):
        raise ConfigError(source, f"{_where(name)}.steps", "needs at least one notify step")
    fallback_raw = raw.get("fallback", [])
    if isinstance(fallback_raw, str):
        fallback_raw = [fallback_raw]
    if not isinstance(fallback_raw, list) or not all(isinstance(r, str) and r
                                                     for r in fallback_raw):  # fmt: skip
        raise ConfigError(source, f"{_where(name)}.fallback", "must be a list of receivers")
    return Policy(name, tuple(steps), repeat, ack_timeout, tuple(dict.fromkeys(fallback_raw)))


def _targets(
    raw: object, source: str, key: str
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """A notify step's targets: receivers by name, `{schedule: NAME}`, `{person: NAME}`."""
    entries = [raw] if isinstance(raw, str | Mapping) else raw
    if not isinstance(entries, list) or not entries:
        raise ConfigError(source, key, "must be a non-empty list of receivers, {schedule: NAME}"
                          " or {person: NAME}")  # fmt: skip
    found: dict[str, list[str]] = {"receiver": [], "schedule": [], "person": []}
    for entry in entries:
        if isinstance(entry, str) and entry:
            found["receiver"].append(entry)
            continue
        if isinstance(entry, Mapping) and len(entry) == 1:
            ((kind, name),) = entry.items()
            if kind in ("schedule", "person") and isinstance(name, str) and name:
                found[kind].append(name)
                continue
        raise ConfigError(source, key, f"{entry!r}: a receiver's name, {{schedule: NAME}} or"
                          " {person: NAME}")  # fmt: skip
    receivers, schedules, people = (tuple(dict.fromkeys(v)) for v in found.values())
    return receivers, schedules, people


def _route(raw: object, source: str, index: int, names: set[str]) -> Route:
    key = f"escalation.routes[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(source, key, "must be a mapping")
    unknown = set(raw) - {"policy", "matchers", "severities", "urgency", "continue"}
    if unknown:
        raise ConfigError(source, f"{key}.{sorted(unknown)[0]}", "unknown setting")
    policy = raw.get("policy")
    if policy not in names:
        raise ConfigError(source, f"{key}.policy", f"no policy named {policy!r}")
    matchers = config_matchers(raw.get("matchers", []), source, f"{key}.matchers")
    sev_raw = raw.get("severities", [])
    if not isinstance(sev_raw, list):
        raise ConfigError(source, f"{key}.severities", "must be a list of severities")
    try:
        severities = frozenset(Severity(s).value for s in sev_raw)
    except ValueError:
        raise ConfigError(source, f"{key}.severities", f"unknown severity in {sev_raw!r}") from None
    urgency = raw.get("urgency", "high")
    if urgency not in URGENCIES:
        raise ConfigError(source, f"{key}.urgency", "must be high or low")
    cont = raw.get("continue", False)
    if not isinstance(cont, bool):
        raise ConfigError(source, f"{key}.continue", "must be true or false")
    return Route(str(policy), matchers, severities, str(urgency), cont)


def load_escalation(
    raw: object,
    source: str,
    receivers: Sequence[str],
    rule_policies: Mapping[str, str],
    oncall: OnCall | None = None,
) -> EscalationSettings:
    """The `escalation:` section, checked against the configured receivers, people and
    schedules, and the rules that name a policy."""
    oncall = oncall or OnCall({}, {})
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(source, "escalation", "must be a mapping")
    unknown = set(raw) - {"policies", "routes", "repost_interval", "rate_limits", "worker"}
    if unknown:
        raise ConfigError(source, f"escalation.{sorted(unknown)[0]}", "unknown setting")
    policies_raw = raw.get("policies") or []
    if not isinstance(policies_raw, list):
        raise ConfigError(source, "escalation.policies", "must be a list of policies")
    policies = [parse_policy(p, source, i) for i, p in enumerate(policies_raw)]
    names: set[str] = set()
    known = set(receivers)
    for policy in policies:
        if policy.name in names:
            raise ConfigError(source, _where(policy.name), "policy defined twice")
        names.add(policy.name)
        for i, step in enumerate(policy.steps):
            where = f"{_where(policy.name, i)}.notify"
            for receiver in step.receivers:
                _known(receiver, known, source, where, "receiver", "alertmanager.receivers")
            for schedule in step.schedules:
                _known(schedule, set(oncall.schedules), source, where, "schedule", "schedules")
            for person in step.people:
                _known(person, set(oncall.people), source, where, "person", "people")
        for receiver in policy.fallback:
            _known(receiver, known, source, f"{_where(policy.name)}.fallback", "receiver",
                   "alertmanager.receivers")  # fmt: skip
    routes_raw = raw.get("routes") or []
    if not isinstance(routes_raw, list):
        raise ConfigError(source, "escalation.routes", "must be a list of routing rules")
    routes = tuple(_route(r, source, i, names) for i, r in enumerate(routes_raw))
    for rule, policy_name in rule_policies.items():
        if policy_name not in names:
            raise ConfigError(
                source, f"rules.{rule}.escalation", f"no policy named {policy_name!r}"
            )
    repost = 60
    if raw.get("repost_interval") is not None:
        try:
            repost = parse_duration(raw["repost_interval"])
        except ValueError as exc:
            raise ConfigError(source, "escalation.repost_interval", str(exc)) from None
        if repost <= 0:
            raise ConfigError(source, "escalation.repost_interval", "must be longer than 0s")
    limits = _rate_limits(raw.get("rate_limits"), source, policies)
    worker = raw.get("worker", "process")
    if worker not in ("process", "inline"):
        raise ConfigError(source, "escalation.worker", f"must be process or inline, got {worker!r}")
    return EscalationSettings(tuple(policies), routes, repost, dict(rule_policies), limits,
                              str(worker), oncall)  # fmt: skip


def _known(name: str, known: set[str], source: str, key: str, what: str, where: str) -> None:
    if name not in known:
        choices = ", ".join(sorted(known)) or "none configured"
        raise ConfigError(source, key, f"unknown {what} {name!r} ({where}: {choices})")


def _rate_limits(raw: object, source: str, policies: Sequence[Policy]) -> tuple[RateLimit, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(source, "escalation.rate_limits", "must be a list")
    notified = {r for p in policies for r in p.receivers()}
    out: list[RateLimit] = []
    for i, entry in enumerate(raw):
        key = f"escalation.rate_limits[{i}]"
        if not isinstance(entry, Mapping) or set(entry) != {"receiver", "max", "per"}:
            raise ConfigError(source, key, "must be {receiver: NAME, max: COUNT, per: DURATION}")
        receiver = entry["receiver"]
        if receiver not in notified:
            raise ConfigError(source, f"{key}.receiver",
                              f"{receiver!r} is notified by no escalation policy")  # fmt: skip
        if any(r.receiver == receiver for r in out):
            raise ConfigError(source, f"{key}.receiver", f"{receiver!r} is limited twice")
        count = entry["max"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(source, f"{key}.max", f"must be a count of at least 1, got {count!r}")
        per = positive_duration(entry["per"], source, f"{key}.per")
        out.append(RateLimit(str(receiver), count, per))
    return tuple(out)
