"""The records the store holds and answers with, and the questions it is asked: what every
implementation of the interface (bridge.store.interface) speaks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from bridge.core.matchers import Matcher
from bridge.core.policies import Policy
from bridge.core.times import format_time

#: Actors that are parts of the system, not people (exports keep them readable).
SYSTEM_ACTORS = frozenset(
    {
        "alertmanager",
        "grafana",
        "local",
        "reconciler",
        "alertbridge",
        "evaluator",
        "escalation",
        "heartbeat",
    }
)
#: Every kind of event an alert's trail holds (what the event stream's `kind` may name).
EVENT_KINDS = frozenset({
    "fired", "resolved", "reopened", "continued", "merged",
    "acknowledged", "unacknowledged", "note", "assigned", "silenced", "expired",
    "escalation_started", "escalated", "escalation_repeated", "escalation_exhausted",
    "escalation_skipped", "escalation_stopped", "escalation_restarted", "escalation_paused",
    "escalation_resumed", "escalation_override", "escalation_nobody_on_call",
})  # fmt: skip
DEFAULT_RETENTION_DAYS = 90
#: The keys a store keeps for the bridge (Exports.kept_key): the export's pseudonym key, the
#: key that signs links (calendar feeds, acknowledgement links).
KEPT_KEYS = frozenset({"export_key", "signing_key"})


def check_kept_key(name: str) -> None:
    if name not in KEPT_KEYS:
        raise ValueError(f"not a kept key: {name!r}")


#: The longest comment, note or name an action takes, in characters.
MAX_TEXT = 10_000
#: A page of listed alerts stops once its rows hold this many characters of text (labels,
#: annotations, URL, comment), so that a page's memory does not depend on what was stored.
PAGE_CHARS = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredAlert:
    """One alert episode as stored."""

    id: int
    fingerprint: str
    status: str
    alertname: str
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    generator_url: str
    source: str
    starts_at: int
    ends_at: int | None
    first_received_at: int
    last_received_at: int
    receive_count: int
    acked_at: int | None
    acked_by: str | None
    ack_comment: str | None
    assignee: str | None
    silence_id: str | None
    updated_at: int
    silence_state: str | None = None
    silenced_until: int | None = None
    resolution: str | None = None
    am_state: str | None = None
    am_silenced_by: tuple[str, ...] = ()
    am_inhibited_by: tuple[tuple[str, int | None], ...] = ()  # (fingerprint, alert id)
    enrichment: dict[str, str] = field(default_factory=dict)  # the enrichment map's fields
    #: startsAt below the millisecond, as the sender gave it (starts_at, the episode's key,
    #: is to the millisecond: bridge.core.alerts.EPISODE_PRECISION_NS)
    starts_ns: int = 0
    clipped: tuple[str, ...] = ()  # what was cut to the limits (bridge.ingest.webhook.clip)
    extra: dict[str, Any] = field(default_factory=dict)  # a Grafana alert's links and values

    @property
    def start(self) -> int:
        """startsAt as exactly as it was given (ns)."""
        return self.starts_at + self.starts_ns

    @property
    def acknowledged(self) -> bool:
        return self.acked_at is not None

    @property
    def state(self) -> str:
        """firing, acknowledged (firing and acked) or resolved."""
        if self.status == "resolved":
            return "resolved"
        return "acknowledged" if self.acknowledged else "firing"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "state": self.state,
            "alertname": self.alertname,
            "severity": self.severity,
            "labels": self.labels,
            "annotations": self.annotations,
            "generator_url": self.generator_url,
            "source": self.source,
            "starts_at": format_time(self.start),
            "ends_at": format_time(self.ends_at),
            "first_received_at": format_time(self.first_received_at),
            "last_received_at": format_time(self.last_received_at),
            "receive_count": self.receive_count,
            "acknowledged": self.acknowledged,
            "acked_at": format_time(self.acked_at),
            "acked_by": self.acked_by,
            "ack_comment": self.ack_comment,
            "assignee": self.assignee,
            "silence_id": self.silence_id,
            "silence_state": self.silence_state,
            "silenced_until": format_time(self.silenced_until),
            "resolution": self.resolution,
            "am_state": self.am_state,
            "am_silenced_by": list(self.am_silenced_by),
            "am_inhibited_by": [
                {"fingerprint": fp, "alert_id": alert_id} for fp, alert_id in self.am_inhibited_by
            ],
            "enrichment": self.enrichment,
            "clipped": list(self.clipped),
            "extra": self.extra,
        }


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of an alert's audit trail."""

    id: int
    alert_id: int
    at: int
    kind: str
    actor: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": format_time(self.at),
            "kind": self.kind,
            "actor": self.actor,
            "detail": self.detail,
        }


@dataclass(slots=True)
class FeedEntry:
    """An event of the feed as live watchers get it (bridge.feed.hub): what their filters
    look at, and `data`, the JSON text of the event with a summary of its alert (the shape
    of `feed_data`), built by the store itself (in SQL for SQLite: no object per row)."""

    id: int
    alert_id: int
    kind: str
    status: str | None  # None: the alert is gone (pruned)
    severity: str | None
    alertname: str | None
    acknowledged: bool
    labels_json: str | None
    data: str
    _labels: dict[str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def labels(self) -> dict[str, str]:
        if self._labels is None:
            self._labels = orjson.loads(self.labels_json) if self.labels_json else {}
        return self._labels


def feed_data(event: Event, alert: StoredAlert | None) -> dict[str, Any]:
    """The stream's data for an event: the event, and a summary of its alert (None: gone).
    The reference for every store's FeedEntry.data."""
    summary = None if alert is None else {
        "id": alert.id, "alertname": alert.alertname, "severity": alert.severity,
        "status": alert.status, "state": alert.state, "labels": alert.labels,
        "summary": alert.annotations.get("summary", ""), "acked_by": alert.acked_by,
        "assignee": alert.assignee, "am_state": alert.am_state,
        "silence_state": alert.silence_state,
    }  # fmt: skip
    return {**event.to_json(), "alert_id": event.alert_id, "alert": summary}


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Filters for listing alerts, and their order with its cursor.

    sort "newest": highest id first, `before_id` the cursor. sort "attention": firing alerts
    first, those that need someone first (unacknowledged and active in Alertmanager, then
    suppressed by it, then acknowledged), by severity, newest first; then resolved ones,
    newest first. `after` is the cursor: the (rank, severity rank, id) of the last one seen.
    """

    status: str | None = None
    severities: tuple[str, ...] = ()
    rule: str | None = None
    matchers: tuple[Matcher, ...] = ()
    since: int | None = None  # starts_at >= since (ns)
    until: int | None = None  # starts_at < until (ns)
    acknowledged: bool | None = None
    am_state: str | None = None  # active | suppressed (firing alerts only)
    text: str | None = None  # in the summary, the description or a note (case-insensitive)
    limit: int = 50
    before_id: int | None = None
    sort: str = "newest"
    after: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """A page of alerts, newest first; `next_cursor` continues after it (None: the last)."""

    alerts: list[StoredAlert]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"alerts": [a.to_json() for a in self.alerts], "next_cursor": self.next_cursor}


@dataclass(frozen=True, slots=True)
class AlertDetail:
    """One alert with its audit trail, oldest event first; `events_truncated` when the trail
    was cut at the page budget (PAGE_CHARS)."""

    alert: StoredAlert
    events: list[Event]
    events_truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            **self.alert.to_json(),
            "events": [e.to_json() for e in self.events],
            "events_truncated": self.events_truncated,
        }


@dataclass(slots=True)
class IngestResult:
    """What a job's received alerts changed (filled in while they are applied)."""

    fired: list[int] = field(default_factory=list)  # new firing episodes
    resolved: list[int] = field(default_factory=list)  # episodes that became resolved
    repeats: int = 0  # receipts that changed nothing but the receive count (and a finality)
    reopened: list[int] = field(default_factory=list)  # provisional resolutions undone


#: An episode's key: (fingerprint, starts_at in ns).
EpisodeKey = tuple[str, int]

#: One alert's view in Alertmanager: (alert id, state, silence ids, inhibitors as
#: (fingerprint, alert id or None)).
AmView = tuple[int, str, list[str], list[tuple[str, int | None]]]


@dataclass(frozen=True, slots=True)
class AlertCounts:
    """How many alerts are stored: by (state, severity), every state; and the firing ones
    (firing or acknowledged) by (state, severity, am_state), am_state "suppressed" when
    Alertmanager mutes them, else "active"."""

    by_state: Mapping[tuple[str, str], int]
    firing: Mapping[tuple[str, str, str], int]


@dataclass(frozen=True, slots=True)
class SilenceChange:
    """What to record of an alert's Alertmanager silence (set_silence)."""

    state: str | None  # pending, active, expiring, expired; None: no silence wanted
    silence_id: str | None = None  # kept as it was when None
    until: int | None = None
    event: tuple[str, str, str] | None = None  # (kind, actor, detail) to add to the trail


#: An escalation's state (Escalation.state): running: a step is due at due_at; paused: until
#: due_at (None: until resumed); acknowledged: the ack times out at due_at (None: never);
#: exhausted: every step taken, the copies stay active until acknowledgement or resolution;
#: stopped: over.


@dataclass(frozen=True, slots=True)
class Copy:
    """A copy of an alert posted to Alertmanager for one level of its escalation: the
    alert's labels plus escalation_policy, escalation_level and escalation_round, from
    `starts_at` (the step's due time, so that posting it again is the same alert)."""

    level: int
    round: int  # the pass through the policy since the episode began, from 1
    starts_at: int
    receivers: tuple[str, ...]
    held: tuple[str, ...] = ()  # receivers its rate limit held back from it
    #: The people it pages (named by the step, or on call in its schedules when taken).
    people: tuple[str, ...] = ()
    #: Whether the policy's fallback receivers get it (a schedule had nobody on call).
    fallback: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "level": self.level,
            "round": self.round,
            "starts_at": self.starts_at,
            "receivers": list(self.receivers),
        }
        if self.held:
            out["held"] = list(self.held)
        if self.people:
            out["people"] = list(self.people)
        if self.fallback:
            out["fallback"] = True
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Copy:
        return cls(raw["level"], raw["round"], raw["starts_at"], tuple(raw["receivers"]),
                   tuple(raw.get("held", ())), tuple(raw.get("people", ())),
                   bool(raw.get("fallback", False)))  # fmt: skip


@dataclass(frozen=True, slots=True)
class Escalation:
    """One policy's escalation of one alert episode: the policy as it was when the episode
    began, where it stands, and the copies posted to Alertmanager that are still active.

    `position`: the next step; `repeats`: repeats from the start taken in this cycle (a
    cycle restarts after an unacknowledgement); `round`: passes through the policy since
    the episode began (a copy's round); `version`: bumped by every save (a save from a
    stale read is a Conflict)."""

    alert_id: int
    policy: Policy
    urgency: str
    state: str
    position: int
    repeats: int
    round: int
    due_at: int | None
    level: int  # the highest level reached, -1: none yet
    copies: tuple[Copy, ...]
    reposted_at: int | None
    version: int
    updated_at: int
    paused_state: str | None = None  # the state a pause interrupted
    event_id: int = 0  # the last event of the feed applied to it (replays are skipped)
    forced: int | None = None  # an operator's level: this step is taken whatever its window

    def to_json(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "policy": self.policy.name,
            "urgency": self.urgency,
            "state": self.state,
            "level": self.level,
            "levels": self.policy.levels,
            "next_step": self.position,
            "round": self.round,
            "due_at": format_time(self.due_at),
            "copies": [{**c.to_json(), "starts_at": format_time(c.starts_at)} for c in self.copies],
            "reposted_at": format_time(self.reposted_at),
            "updated_at": format_time(self.updated_at),
        }
