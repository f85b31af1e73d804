"""How an escalation moves: pure functions from a stored escalation and a time to its next
state, the copies to post and the audit events. No I/O here; the engine (engine.py) reads,
posts and saves.

>>> from bridge.core.policies import Policy, Step
>>> p = Policy("p", (Step("notify", ("a",)), Step("wait", wait=60), Step("notify", ("b",))))
>>> esc = start(1, p, "high", 0, event_id=1)
>>> moved = advance(esc, 0)
>>> moved.escalation.position, moved.escalation.due_at, [c.level for c in moved.new_copies]
(2, 60000000000, [0])
>>> [c.level for c in advance(moved.escalation, 60 * NS).new_copies]
[1]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from bridge.core.errors import Conflict
from bridge.core.oncall import OnCall
from bridge.core.policies import MAX_REPEAT, MAX_STEPS, Policy, Step
from bridge.core.times import NS, format_duration, format_time
from bridge.store.records import Copy, Escalation


@dataclass(frozen=True, slots=True)
class Move:
    """An escalation's next state, the copies to post first, and the events to record."""

    escalation: Escalation
    new_copies: list[Copy] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)


def start(alert_id: int, policy: Policy, urgency: str, at: int, event_id: int) -> Escalation:
    """A new escalation whose first step is due at once."""
    return Escalation(
        alert_id=alert_id, policy=policy, urgency=urgency, state="running", position=0,
        repeats=0, round=1, due_at=at, level=-1, copies=(), reposted_at=None, version=0,
        updated_at=at, event_id=event_id,
    )  # fmt: skip


def _resolve(step: Step, policy: Policy, number: int, rnd: int, due: int, now: int,
             oncall: OnCall | None) -> tuple[Copy, str, list[tuple[str, str]]]:  # fmt: skip
    """A notify step taken at `now`: its copy (receivers; the people named and those on call
    in its schedules now; the fallback where a schedule has nobody), what it notified as the
    trail says it ("schedule primary -> alice (email, slack)"), and the events of schedules
    that had nobody."""
    oncall = oncall or OnCall({}, {})
    people = list(step.people)
    what = list(step.receivers) + [f"person {p}{_methods(oncall, p)}" for p in step.people]
    nobody: list[tuple[str, str]] = []
    for name in step.schedules:
        schedule = oncall.schedules.get(name)
        person = schedule.who(now) if schedule is not None else None
        if person is None:
            instead = ", ".join(policy.fallback) or "no fallback receivers"
            what.append(f"schedule {name} -> nobody on call")
            said = f"level {number}: schedule {name} has nobody on call: {instead}"
            nobody.append(("escalation_nobody_on_call", said))
            continue
        what.append(f"schedule {name} -> {person}{_methods(oncall, person)}")
        people.append(person)
    copy = Copy(number, rnd, due, step.receivers, people=tuple(dict.fromkeys(people)),
                fallback=bool(nobody and policy.fallback))  # fmt: skip
    return copy, ", ".join(what), nobody


def _methods(oncall: OnCall, person: str) -> str:
    known = oncall.people.get(person)
    methods = known.methods if known is not None else []
    return f" ({', '.join(methods)})" if methods else " (no contact method)"


def advance(esc: Escalation, now: int, oncall: OnCall | None = None) -> Move:
    """Take every step due at `now` of a running escalation: notify steps become copies
    (each starting at its step's due time, so that posting one again is the same alert),
    waits move the due time on from the previous due time (lateness does not accumulate),
    steps outside their window are skipped, a low-urgency alert stops after level 0. A
    step's schedules are looked up in `oncall` as it is taken."""
    if esc.state != "running" or esc.due_at is None or esc.due_at > now:
        return Move(esc)
    policy = esc.policy
    steps = policy.steps
    position, repeats, rnd, level = esc.position, esc.repeats, esc.round, esc.level
    due: int = esc.due_at
    next_due: int | None = due
    state: str = "running"
    new: list[Copy] = []
    events: list[tuple[str, str]] = []
    for _ in range((MAX_STEPS + 1) * (MAX_REPEAT + 1)):  # bounded: every step once a round
        if position >= len(steps):
            if repeats < policy.repeat:
                repeats, rnd, position = repeats + 1, rnd + 1, 0
                events.append(("escalation_repeated",
                               f"policy {policy.name}: from the first step again"
                               f" (repeat {repeats} of {policy.repeat})"))  # fmt: skip
                continue
            state, next_due = "exhausted", None
            events.append(("escalation_exhausted",
                           f"policy {policy.name}: every step taken; level {level} stays"
                           " notified until acknowledged or resolved"))  # fmt: skip
            break
        step = steps[position]
        if step.kind == "wait":
            due += step.wait * NS
            next_due = due
            position += 1
            if due > now:
                break
            continue
        number = policy.level_of(position)
        forced = position == esc.forced  # an operator's override: no urgency, no window
        if esc.urgency == "low" and number > 0 and not forced:
            state, next_due = "exhausted", None
            events.append(("escalation_exhausted",
                           f"policy {policy.name}: low urgency: no level past 0"))  # fmt: skip
            break
        position += 1
        if step.when is not None and not forced and not step.when.contains(now):
            events.append(("escalation_skipped",
                           f"level {number}: {', '.join(step.targets())}: outside"
                           f" {step.when.describe()}"))  # fmt: skip
            continue
        copy, what, nobody = _resolve(step, policy, number, rnd, due, now, oncall)
        new.append(copy)
        level = number
        suffix = f" (round {rnd})" if rnd > 1 else ""
        events.append(("escalated", f"level {number}: {what}{suffix}"))
        events += nobody
    moved = replace(esc, state=state, position=position, repeats=repeats, round=rnd,
                    due_at=next_due, level=level, copies=esc.copies + tuple(new),
                    forced=None, reposted_at=now if new else esc.reposted_at)  # fmt: skip
    return Move(moved, new, events)


def acknowledged(esc: Escalation, at: int) -> Move:
    """An acknowledgement stops the escalation (its copies are then ended); with an ack
    timeout, it is due to be withdrawn at `at` plus the timeout."""
    if esc.state not in ("running", "paused", "exhausted"):
        return Move(esc)
    timeout = esc.policy.ack_timeout
    due = at + timeout * NS if timeout else None
    detail = "acknowledged"
    if due is not None:
        detail += (f"; escalation starts again at {format_time(due)} if still acknowledged"
                   f" and firing (ack timeout {format_duration(timeout)})")  # fmt: skip
    moved = replace(esc, state="acknowledged", due_at=due, paused_state=None)
    return Move(moved, events=[("escalation_stopped", detail)])


def restarted(esc: Escalation, at: int, why: str) -> Move:
    """Escalation from the first step again, at once (an acknowledgement withdrawn, an
    episode reopened): a new round, so that its copies are new alerts to Alertmanager."""
    if esc.state not in ("acknowledged", "stopped") and not (
        esc.state == "paused" and esc.paused_state == "acknowledged"
    ):
        return Move(esc)
    moved = replace(esc, state="running", position=0, repeats=0, round=esc.round + 1,
                    due_at=at, level=-1, paused_state=None)  # fmt: skip
    return Move(moved, events=[("escalation_restarted", f"policy {esc.policy.name}: {why}")])


def stopped(esc: Escalation, why: str) -> Move:
    """The alert resolved: nothing more, its copies are ended."""
    if esc.state == "stopped":
        return Move(esc)
    moved = replace(esc, state="stopped", due_at=None, paused_state=None)
    return Move(moved, events=[("escalation_stopped", why)])


def paused(esc: Escalation, at: int, until: int | None) -> Move:
    """No step until `until` (None: until resumed). Copies already posted stay active."""
    if esc.state not in ("running", "exhausted", "acknowledged", "paused"):
        raise Conflict(f"the escalation of alert {esc.alert_id} ({esc.policy.name}) is over")
    previous = esc.paused_state if esc.state == "paused" else esc.state
    moved = replace(esc, state="paused", paused_state=previous, due_at=until)
    detail = "paused " + (f"until {format_time(until)}" if until else "until resumed")
    return Move(moved, events=[("escalation_paused", f"policy {esc.policy.name}: {detail}")])


def resumed(esc: Escalation, at: int, by: str = "") -> Move:
    """Back to the state the pause interrupted; a running escalation takes its next step
    at once (a paused wait counts as waited)."""
    if esc.state != "paused":
        raise Conflict(f"the escalation of alert {esc.alert_id} ({esc.policy.name}) is not paused")
    state = esc.paused_state or "running"
    due = at if state == "running" else None
    if state == "acknowledged" and esc.policy.ack_timeout:
        due = at + esc.policy.ack_timeout * NS
    moved = replace(esc, state=state, paused_state=None, due_at=due)
    detail = f"policy {esc.policy.name}: resumed" + (f" by {by}" if by else "")
    return Move(moved, events=[("escalation_resumed", detail)])


def escalated_now(esc: Escalation, at: int, level: int | None) -> Move:
    """An operator's override: level `level` (default: the next one) is due now, whatever
    its window and the alert's urgency; the policy goes on from there. The engine takes it
    at its next tick (at once in the server that received the request)."""
    if esc.state == "stopped":
        raise Conflict(f"alert {esc.alert_id} is resolved: its escalation is over")
    policy = esc.policy
    notify = [i for i, s in enumerate(policy.steps) if s.kind == "notify"]
    if level is None:
        level = esc.level + 1
        if level >= len(notify):
            raise Conflict(
                f"alert {esc.alert_id} is at the last level ({esc.level}) of {policy.name}"
            )
    if not 0 <= level < len(notify):
        raise Conflict(f"policy {policy.name} has levels 0 to {len(notify) - 1}, not {level}")
    moved = replace(esc, state="running", position=notify[level], due_at=at, paused_state=None,
                    forced=notify[level])  # fmt: skip
    return Move(moved, events=[("escalation_override", f"level {level} now")])
