"""The rules of the actions on a stored alert, in one place for both stores: given the alert
as it is, what an acknowledgement, its withdrawal, an assignment or a resolution changes (the
columns, the event for its trail), or why it may not (`Conflict`). Pure: each store reads the
alert in its transaction (locked on PostgreSQL), asks here, and applies the answer in its own
SQL (`bridge.store.sqlite.actions`, `bridge.store.postgres.store`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.core.errors import Conflict, Unprocessable
from bridge.store.records import StoredAlert

#: The columns an action may set (the stores build their UPDATE from these names only).
COLUMNS = frozenset({
    "acked_at", "acked_by", "ack_comment", "silence_state", "assignee", "status", "ends_at",
    "resolution", "updated_at",
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Change:
    """What an action does to one alert: the columns it sets (updated_at among them), the
    event it adds to the trail (kind, actor, detail) at `at`, and a person to remember (an
    assignee; actors are remembered with their events)."""

    at: int
    columns: Mapping[str, object]
    event: tuple[str, str, str]
    person: str | None = None

    def __post_init__(self) -> None:
        unknown = set(self.columns) - COLUMNS
        if unknown:  # a programming error: the stores put these names into SQL
            raise ValueError(f"not an action's column: {sorted(unknown)}")


def acknowledge(
    alert: StoredAlert, by: str, note: str, at: int, *, silences_managed: bool
) -> Change:
    """A firing, unacknowledged alert is acknowledged; an Alertmanager alert's silence is then
    pending (the reconciler creates it), or `none` when no Alertmanager is configured."""
    if alert.status == "resolved":
        raise Conflict(f"alert {alert.id} is resolved: only firing alerts can be acknowledged")
    if alert.acknowledged:
        raise Conflict(f"alert {alert.id} is already acknowledged by {alert.acked_by}")
    silence = alert.silence_state
    if alert.source == "alertmanager":
        silence = "pending" if silences_managed else "none"
    columns = {"acked_at": at, "acked_by": by, "ack_comment": note, "updated_at": at,
               "silence_state": silence}  # fmt: skip
    return Change(at, columns, ("acknowledged", by, note))


def unacknowledge(alert: StoredAlert, by: str, note: str, at: int) -> Change:
    """An acknowledgement is withdrawn: an active silence is to be expired, a pending one is
    no longer wanted."""
    if not alert.acknowledged:
        raise Conflict(f"alert {alert.id} is not acknowledged")
    state = alert.silence_state
    silence = {"active": "expiring", "pending": None}.get(state or "", state)
    columns = {"acked_at": None, "acked_by": None, "ack_comment": None, "updated_at": at,
               "silence_state": silence}  # fmt: skip
    return Change(at, columns, ("unacknowledged", by, note))


def assign(alert: StoredAlert, by: str, assignee: str | None, at: int) -> Change | None:
    """Set (or with None clear) the assignee; None: it is so already (nothing recorded)."""
    if alert.assignee == assignee:
        return None
    return Change(at, {"assignee": assignee, "updated_at": at},
                  ("assigned", by, assignee or ""), person=assignee or None)  # fmt: skip


def resolve(alert: StoredAlert, by: str, detail: str, at: int) -> Change:
    """An operator resolves a firing alert (Conflict when it is not firing)."""
    if alert.status != "firing":
        raise Conflict(f"alert {alert.id} is already resolved")
    return _resolved(alert, at, "manual", by, detail)


def resolve_system(
    alert: StoredAlert, at: int, resolution: str, actor: str, detail: str
) -> Change | None:
    """The system resolves a firing alert (`resolution`: inferred by the reconciler, restart
    by the evaluator); None when it is not firing any more: such resolutions race with
    deliveries and are then simply not needed."""
    if alert.status != "firing":
        return None
    return _resolved(alert, at, resolution, actor, detail)


def _resolved(alert: StoredAlert, at: int, resolution: str, actor: str, detail: str) -> Change:
    columns = {"status": "resolved", "ends_at": at, "resolution": resolution, "updated_at": at}
    return Change(at, columns, ("resolved", actor, detail))


#: The kinds of event `add_note` writes: an operator's note, a snooze the page made (a
#: silence in Alertmanager for a while), a silence the page expired.
NOTE_KINDS = ("note", "snoozed", "silence_expired")


def note_kind(kind: str) -> str:
    """`kind` if it is one of NOTE_KINDS; Unprocessable otherwise."""
    if kind not in NOTE_KINDS:
        raise Unprocessable("kind", f"must be one of {', '.join(NOTE_KINDS)}, got {kind!r}")
    return kind
