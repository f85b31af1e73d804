"""The escalation engine: follows the feed of changes (a new or reopened episode starts its
policies, an acknowledgement stops them, an unacknowledgement starts them again, a
resolution ends them), takes the steps that are due, and keeps the copies of the alert it
posted to Alertmanager alive (posted again every repost interval) until they are ended.

Alertmanager delivers; the bridge decides when. A level's copy is the alert's labels plus
escalation_policy, escalation_level and escalation_round, posted to every replica; the
generated alertmanager.yml routes those labels to the level's receivers. Since a copy's
startsAt is its step's due time, posting it again is the same alert to Alertmanager, which
de-duplicates: a step taken, posted, and not saved before a crash is taken again after the
restart without a second notification. A save names the version it read: a step computed
from a state an acknowledgement changed meanwhile is not saved, and its copies are ended.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from bridge.core.errors import AlertmanagerError, Conflict, NotFound, Unprocessable
from bridge.core.logutil import log_failure
from bridge.core.model import json_integer
from bridge.core.policies import (
    ACK_URL,
    HELD_ALERT,
    LABEL_FALLBACK,
    LABEL_HELD,
    LABEL_LEVEL,
    LABEL_PEOPLE,
    LABEL_POLICY,
    LABEL_RECEIVER,
    LABEL_ROUND,
    EscalationSettings,
    RateLimit,
)
from bridge.core.times import NS, format_duration, format_micros, parse_duration
from bridge.escalation import transitions
from bridge.escalation.transitions import Move
from bridge.feed.consumer import FeedConsumer
from bridge.host.aio import stop_task, wait_event
from bridge.store import MAX_TEXT, Copy, Escalation, Event, StoredAlert
from bridge.store.interface import Actions, Escalations, FeedCursors, Reads, RuleVersions

log = logging.getLogger(__name__)
#: The consumer name under which the engine keeps its position in the feed.
CONSUMER = "escalation"
ACTOR = "escalation"
#: Copies posted to Alertmanager in one request at most.
POST_CHUNK = 500
#: Seconds the engine lets changes gather after a wake-up before it handles them (a burst is
#: taken in large batches).
COALESCE = 0.2
#: The least time between two rounds of due work: steps due within it are taken together, in
#: one read, one post and one transaction (bench.escalation: at 1,000 steps/s, 0.3 s against
#: 0.1 s put p99 lateness at 0.43 s, not 0.34 s, for a mean of 96 % ingest, not 91 %).
MIN_TICK = 0.3


class Poster(Protocol):
    """Where copies go: Alertmanager's API v2 on every replica (AlertmanagerCluster)."""

    async def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> int: ...


def copy_labels(alert: StoredAlert, esc: Escalation, copy: Copy) -> dict[str, str]:
    labels = {
        **alert.labels,
        LABEL_POLICY: esc.policy.name,
        LABEL_LEVEL: str(copy.level),
        LABEL_ROUND: str(copy.round),
    }
    if copy.people:
        labels[LABEL_PEOPLE] = ",".join(copy.people)
    if copy.fallback:
        labels[LABEL_FALLBACK] = "true"
    if copy.held:  # the generated routes keep it from these receivers
        labels[LABEL_HELD] = ",".join(copy.held)
    return labels


class Limiter:
    """The rate limits of receivers: a sliding window of what each was sent, and what was
    held back from each since its summary began.

    >>> limiter = Limiter({"pager": RateLimit("pager", 2, 60)})
    >>> [limiter.take("pager", t * NS) for t in (0, 1, 2, 61)]
    [True, True, False, True]
    """

    def __init__(self, limits: Mapping[str, RateLimit]) -> None:
        self.limits = dict(limits)
        self.sent: dict[str, collections.deque[int]] = {r: collections.deque() for r in limits}
        self.held: dict[str, list[int]] = {}  # receiver -> alert ids held back (this summary)
        self.since: dict[str, int] = {}  # receiver -> when its current summary began
        self.last_held: dict[str, int] = {}
        self.held_total: dict[str, int] = {}

    def take(self, receiver: str, now: int) -> bool:
        """Whether `receiver` may be notified now (counted if so)."""
        limit = self.limits.get(receiver)
        if limit is None:
            return True
        window = self.sent[receiver]
        while window and window[0] <= now - limit.per * NS:
            window.popleft()
        if len(window) < limit.max:
            window.append(now)
            return True
        return False

    def hold(self, receiver: str, alert_id: int, now: int) -> None:
        limit = self.limits[receiver]
        if receiver in self.last_held and now - self.last_held[receiver] > limit.per * NS:
            self.held.pop(receiver, None)  # a quiet window since: a new summary
            self.since.pop(receiver, None)
        self.held.setdefault(receiver, []).append(alert_id)
        self.since.setdefault(receiver, now)
        self.last_held[receiver] = now
        self.held_total[receiver] = self.held_total.get(receiver, 0) + 1


#: Makes the acknowledgement link of (alert id, person ("" for whoever follows it), the
#: copy's start in ns: the link's validity runs from it).
AckLinks = Callable[[int, str, int], str]


def copy_body(alert: StoredAlert, esc: Escalation, copy: Copy, ends_at: int,
              links: AckLinks | None = None) -> dict[str, Any]:  # fmt: skip
    """The copy as Alertmanager's API v2 takes it. Annotations carry the bridge's alert id
    and the level, for templates, and (with `links`) the link that acknowledges the alert:
    for its person when it pages one, else for whoever follows it."""
    annotations = {
        **alert.annotations,
        "alertbridge_id": str(alert.id),
        "escalation": f"level {copy.level} of {esc.policy.name}",
    }
    if links is not None:
        person = copy.people[0] if len(copy.people) == 1 else ""
        annotations[ACK_URL] = links(alert.id, person, copy.starts_at)
    return {
        "labels": copy_labels(alert, esc, copy),
        "annotations": annotations,
        "startsAt": format_micros(copy.starts_at),
        "endsAt": format_micros(ends_at),
        "generatorURL": alert.generator_url,
    }


class EngineStore(Reads, FeedCursors, Actions, Escalations, RuleVersions, Protocol):
    """What the engine does with the store: follows the feed (its own cursor), reads
    alerts, withdraws acknowledgements that time out, keeps the escalations, and reads the
    rule set in force (a rule's `escalation` names its alerts' policy)."""


class OverrideStore(Reads, Escalations, Protocol):
    """An operator's change to an alert's escalations: the alert read, its escalations
    read and saved."""


class Escalator:
    """Runs the escalations of one store.

    `tick()` does the due work once (tests call it with a virtual clock); `run_forever()`
    follows the feed and ticks whenever something is due.
    """

    def __init__(
        self,
        store: EngineStore,
        settings: EscalationSettings,
        poster: Poster,
        *,
        clock: Callable[[], int] = time.time_ns,
        poll: float = 1.0,
        retry: float = 5.0,
        links: AckLinks | None = None,
    ) -> None:
        self.store = store
        #: Acknowledgement links in the copies (None: server.public_url is not set).
        self.links = links
        self.settings = settings
        self.poster = poster
        self.clock = clock
        self.poll = poll
        self.retry = retry
        # Burst of new alerts: started in batches every COALESCE seconds, not one by one.
        self.consumer = FeedConsumer(store, CONSUMER, self.handle, poll=poll, retry=retry,
                                     coalesce=COALESCE)  # fmt: skip
        self.wake = asyncio.Event()
        #: Steps taken since start, by (policy, level): alertbridge_escalations_total.
        self.steps_taken: dict[tuple[str, str], int] = {}
        self.post_failures = 0  # posts no Alertmanager took (each retried at the next tick)
        self.limiter = Limiter({r.receiver: r for r in settings.rate_limits})
        self.rules_version = 0  # of the rule set whose policies are in self.settings

    # --- the feed -----------------------------------------------------------------------

    async def _follow_rules(self) -> None:
        """The policies rules name, from the rule set in force (changed over the API since
        this process started: bridge.generate.managed), before new episodes choose theirs."""
        latest = await self.store.rule_version()
        if latest is None or latest.version == self.rules_version:
            return
        named = {r.name: r.escalation for r in latest.rules() if r.escalation}
        self.settings = replace(self.settings, rule_policies=named)
        self.rules_version = latest.version

    async def handle(self, events: Sequence[Event]) -> None:
        """The feed consumer's handler: new and reopened episodes start their policies (one
        write for the batch), other changes are applied to the alert's escalations."""
        wanted = [e for e in events if e.kind in _HANDLED]
        if not wanted:
            return
        starting = [e for e in wanted if e.kind in ("fired", "reopened")]
        if starting:
            await self._follow_rules()
            ids = list(dict.fromkeys(e.alert_id for e in starting))
            alerts = {a.id: a for a in await self.store.get_alerts(ids)}
            fresh: list[Escalation] = []
            details: list[str] = []
            for event in starting:
                alert = alerts.get(event.alert_id)
                if alert is None:
                    continue  # pruned since
                for chosen in self.settings.select(alert.labels):
                    fresh.append(transitions.start(alert.id, chosen.policy, chosen.urgency,
                                                   event.at, event.id))  # fmt: skip
                    details.append(f"policy {chosen.policy.name} ({chosen.why}),"
                                   f" urgency {chosen.urgency}")  # fmt: skip
            await self.store.add_escalations(fresh, details)
        for event in wanted:
            if event.kind != "fired":  # a fired event's escalations were just started
                await self._apply(event)
        self.wake.set()

    async def _apply(self, event: Event) -> None:
        for _ in range(10):  # a save that lost a race is done again from a new read
            moves = []
            for esc in await self.store.escalations(event.alert_id):
                if esc.event_id >= event.id:
                    continue  # applied already (the feed delivers at least once)
                move = _on_event(esc, event)
                moves.append(replace(move, escalation=replace(move.escalation,
                                                              event_id=event.id)))  # fmt: skip
            if await self._commit(moves) == len(moves):
                return

    # --- due work -------------------------------------------------------------------------

    async def tick(self, batch: int = 500, rounds: int = 100) -> int | None:
        """Take the due steps (`batch` escalations a round, at most `rounds` rounds), end or
        post again the copies that need it; when the next step is due (None: nothing is)."""
        now = self.clock()
        for _ in range(rounds):
            due = await self.store.due_escalations(now, batch)
            running = [e for e in due if e.state == "running"]
            moves = [transitions.advance(e, now, self.settings.oncall) for e in running]
            await self._commit(moves)
            for esc in due:
                if esc.state != "running":
                    with contextlib.suppress(Conflict, NotFound):
                        await self._due(esc, now)
            if len(due) < batch:
                break
        await self._copies(now)
        return await self.store.next_escalation_due()

    async def _due(self, esc: Escalation, now: int) -> None:
        if esc.state == "paused":  # the pause ran out: what it held is due at once
            resumed = transitions.resumed(esc, now)
            await self._commit([resumed])
            if resumed.escalation.state == "running":
                for saved in await self.store.escalations(esc.alert_id):
                    if saved.policy.name == esc.policy.name:
                        await self._commit([transitions.advance(saved, now, self.settings.oncall)])
        elif esc.state == "acknowledged":  # the acknowledgement timed out
            timeout = format_duration(esc.policy.ack_timeout)
            with contextlib.suppress(Conflict):  # no longer acknowledged: nothing to withdraw
                await self.store.unacknowledge(
                    esc.alert_id, ACTOR, f"acknowledgement timed out after {timeout}", now
                )
            # The unacknowledgement comes back through the feed and restarts escalation;
            # until then nothing is due here.
            await self.store.save_escalation(replace(esc, due_at=None), [], now)

    async def _post(self, bodies: list[dict[str, Any]]) -> bool:
        """Post copies to Alertmanager in chunks; whether every chunk was taken."""
        ok = True
        for start in range(0, len(bodies), POST_CHUNK):
            try:
                await self.poster.post_alerts(bodies[start : start + POST_CHUNK])
            except AlertmanagerError as exc:
                self.post_failures += 1
                log.warning("posting %d escalation copies: %s; retrying", len(bodies), exc)
                ok = False
        return ok

    async def _commit(self, moves: Sequence[Move]) -> int:
        """Post the moves' new copies (a move whose alert is gone posts nothing), then save
        the moves in one transaction; how many were saved. A move whose copies no
        Alertmanager took is not saved: its step stays due and is taken again, the same
        copies. A move that lost a race (an acknowledgement in between) is not saved, and
        its copies are ended unless the escalation still runs."""
        # Every change a transition makes comes with an event or a copy: the rest are no-ops.
        changed = [m for m in moves if m.new_copies or m.events]
        held_now: set[str] = set()
        if self.limiter.limits:
            changed = [self._limited(m, held_now) for m in changed]
        if not changed:
            return len(moves)
        posting = [m for m in changed if m.new_copies]
        alerts: dict[int, StoredAlert] = {}
        if posting:
            ids = list(dict.fromkeys(m.escalation.alert_id for m in posting))
            alerts = {a.id: a for a in await self.store.get_alerts(ids)}
            until = self.clock() + self.settings.hold_seconds * NS
            bodies = [copy_body(alerts[m.escalation.alert_id], m.escalation, c, until,
                                self.links)
                      for m in posting if m.escalation.alert_id in alerts
                      for c in m.new_copies]  # fmt: skip
            if not await self._post(bodies):  # (a move with copies has reposted_at: its step)
                changed = [m for m in changed if not m.new_copies]
        results = await self.store.save_escalations(
            [(m.escalation, m.events) for m in changed], self.clock()
        )
        if held_now:
            await self._summaries(held_now)
        saved = len(moves) - len(changed)
        for move, result in zip(changed, results, strict=True):
            if result is None:
                if move.new_copies and move.escalation.alert_id in alerts:
                    await self._end_if_over(alerts[move.escalation.alert_id], move)
                continue
            saved += 1
            for copy in move.new_copies:
                key = (move.escalation.policy.name, str(copy.level))
                self.steps_taken[key] = self.steps_taken.get(key, 0) + 1
        return saved

    def _limited(self, move: Move, held_now: set[str]) -> Move:
        """The move with each new copy marked with the receivers their limit holds back."""
        if not move.new_copies:
            return move
        now = self.clock()
        esc = move.escalation
        marked = []
        for copy in move.new_copies:
            held = tuple(r for r in copy.receivers if not self.limiter.take(r, now))
            for receiver in held:
                self.limiter.hold(receiver, esc.alert_id, now)
                held_now.add(receiver)
            marked.append(replace(copy, held=held) if held else copy)
        if marked == list(move.new_copies):
            return move
        kept = esc.copies[: len(esc.copies) - len(marked)]
        # advance() writes one "escalated" event per new copy, in the same order
        pending = iter(marked)
        events = []
        for kind, detail in move.events:
            if kind == "escalated":
                copy = next(pending)
                if copy.held:
                    detail += f" (rate limit: {', '.join(copy.held)} held back)"
            events.append((kind, detail))
        return Move(replace(esc, copies=kept + tuple(marked)), marked, events)

    async def _summaries(self, receivers: set[str]) -> None:
        """One summary alert per held-back receiver, routed to it alone: how many
        escalation notifications its limit held back, and of which alerts."""
        now = self.clock()
        until = now + self.settings.hold_seconds * NS
        bodies = []
        for receiver in sorted(receivers):
            limit = self.limiter.limits[receiver]
            ids = self.limiter.held.get(receiver, [])
            shown = ", ".join(str(i) for i in ids[:50]) + (" ..." if len(ids) > 50 else "")
            bodies.append({
                "labels": {"alertname": HELD_ALERT, LABEL_RECEIVER: receiver,
                           "severity": "critical"},
                "annotations": {
                    "summary": f"{len(ids)} escalation notifications to {receiver} held back"
                               f" (at most {limit.max} per {format_duration(limit.per)})",
                    "description": f"alertbridge alerts held back from {receiver}: {shown}",
                },
                "startsAt": format_micros(self.limiter.since[receiver]),
                "endsAt": format_micros(until),
            })  # fmt: skip
        await self._post(bodies)

    async def _end_if_over(self, alert: StoredAlert, move: Move) -> None:
        states = [e.state for e in await self.store.escalations(alert.id)
                  if e.policy.name == move.escalation.policy.name]  # fmt: skip
        if states != ["running"]:
            now = self.clock()
            bodies = [copy_body(alert, move.escalation, c, now, self.links)
                      for c in move.new_copies]  # fmt: skip
            await self._post(bodies)

    async def _copies(self, now: int, rounds: int = 100) -> None:
        """End the copies of acknowledged and stopped escalations; post the active ones
        again every repost interval (Alertmanager ends an alert not posted again by its
        endsAt: `hold_seconds` ahead, as Prometheus does with its resend delay)."""
        before = now - self.settings.repost_interval * NS
        for _ in range(rounds):
            work = await self.store.copy_work(before, POST_CHUNK)
            if not work:
                return
            alerts = {a.id: a for a in await self.store.get_alerts([e.alert_id for e in work])}
            bodies, done = [], []
            for esc in work:
                alert = alerts.get(esc.alert_id)
                if alert is None:
                    continue
                ending = esc.state in ("acknowledged", "stopped")
                until = now if ending else now + self.settings.hold_seconds * NS
                bodies += [copy_body(alert, esc, c, until, self.links) for c in esc.copies]
                done.append(replace(esc, copies=()) if ending else replace(esc, reposted_at=now))
            if not await self._post(bodies):
                return
            await self.store.save_escalations([(e, []) for e in done], now)
            if len(work) < POST_CHUNK:
                return

    # --- operators' overrides -------------------------------------------------------------

    async def override(
        self, alert_id: int, by: str, change: Callable[[Escalation, int], Move]
    ) -> list[Escalation]:
        """An operator's change (pause, resume, escalate now), then the work it made due."""
        result = await override(self.store, alert_id, by, change, self.clock())
        self.wake.set()
        await self.tick()
        return await self.store.escalations(alert_id) or result

    # --- running ----------------------------------------------------------------------------

    async def run_forever(self, ready: Callable[[], Awaitable[None]] | None = None) -> None:
        """Follow the feed and take due steps, until cancelled."""
        feed = asyncio.create_task(self.consumer.run_forever())
        try:
            while True:
                try:
                    self.wake.clear()
                    next_due = await self.tick()
                    delay = self.poll
                    if next_due is not None:
                        delay = min(self.poll, max(0.0, (next_due - self.clock()) / NS))
                    delay = max(delay, MIN_TICK)
                    await wait_event(self.wake, delay)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log_failure(log, exc, "escalation tick failed; retrying in %gs", self.retry)
                    await asyncio.sleep(self.retry)
        finally:
            await stop_task(feed)


_HANDLED = frozenset({"fired", "reopened", "acknowledged", "unacknowledged", "resolved"})


def _on_event(esc: Escalation, event: Event) -> Move:
    if event.kind == "acknowledged":
        return transitions.acknowledged(esc, event.at)
    if event.kind == "unacknowledged":
        why = "acknowledgement withdrawn" + (f" by {event.actor}" if event.actor != ACTOR else
                                              " (timed out)")  # fmt: skip
        return transitions.restarted(esc, event.at, why + ": from the first step")
    if event.kind == "resolved":
        return transitions.stopped(esc, "resolved")
    if event.kind == "reopened":
        return transitions.restarted(esc, event.at, "episode reopened: from the first step")
    return Move(esc)  # fired: started by _start


async def override(
    store: OverrideStore,
    alert_id: int,
    by: str,
    change: Callable[[Escalation, int], Move],
    at: int,
) -> list[Escalation]:
    """Apply an operator's change to every escalation of an alert, audited as theirs (their
    name is the events' actor). The CLI on a local database calls it directly; a running
    server's engine then does what became due. NotFound when the alert does not exist or
    has no escalation; Conflict when the change applies to none of its escalations."""
    await store.get_alert(alert_id)
    for _ in range(10):
        escalations = await store.escalations(alert_id)
        if not escalations:
            raise NotFound(f"alert {alert_id} has no escalation")
        refused: list[Conflict] = []
        try:
            for esc in escalations:
                try:
                    move = change(esc, at)
                except Conflict as exc:  # not in a state it applies to: the others may be
                    refused.append(exc)
                    continue
                if move.escalation != esc or move.events:
                    await store.save_escalation(move.escalation, move.events, at, actor=by)
        except Conflict as exc:
            if "changed meanwhile" not in str(exc):
                raise
            continue
        if len(refused) == len(escalations):
            raise refused[0]
        return await store.escalations(alert_id)
    raise Conflict(f"the escalation of alert {alert_id} keeps changing; try again")


#: The operators' overrides, by name (API: POST .../escalate, .../escalation/pause|resume).
OVERRIDES = ("escalate", "pause", "resume")


def change_of(
    action: str, level: int | None = None, seconds: int | None = None
) -> Callable[[Escalation, int], Move]:
    """The change an override makes: escalate (to `level`, default the next), pause (for
    `seconds`, default until resumed), resume."""
    if action == "escalate":
        return lambda esc, at: transitions.escalated_now(esc, at, level)
    if action == "pause":
        return lambda esc, at: transitions.paused(esc, at, at + seconds * NS if seconds else None)
    if action == "resume":
        return lambda esc, at: transitions.resumed(esc, at)
    raise ValueError(f"unknown override {action!r}")


def override_input(body: Mapping[str, Any]) -> tuple[str, int | None, int | None]:
    """(by, level, seconds) from an override's request body; Unprocessable naming the
    field that is wrong."""
    by = body.get("by")
    if not isinstance(by, str) or not by.strip() or len(by) > MAX_TEXT:
        raise Unprocessable("by", f"must be a non-empty string of at most {MAX_TEXT} characters")
    raw_level = body.get("level")
    level = json_integer(raw_level)
    if raw_level is not None and (level is None or level < 0):
        raise Unprocessable("level", f"must be a level number (0, 1, ...), got {raw_level!r}")
    seconds = None
    if body.get("for") is not None:
        try:
            seconds = parse_duration(body["for"])
        except ValueError as exc:
            raise Unprocessable("for", str(exc)) from None
        if not 0 < seconds <= 366 * 86400:
            raise Unprocessable("for", "must be longer than 0s and at most a year")
    return by, level, seconds
