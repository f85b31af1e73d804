"""Operator and reconciler actions on stored alerts: jobs run in a transaction by the writer."""

from __future__ import annotations

import sqlite3

from bridge.errors import Conflict, Unprocessable
from bridge.store import (
    MAX_TEXT,
    NS,
    Event,
    Job,
    StoredAlert,
    add_event,
    get_alert,
    get_retention,
)


def _text(value: object, name: str, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise Unprocessable(name, "must be a non-empty string" if required else "must be a string")
    if len(value) > MAX_TEXT:
        raise Unprocessable(name, f"at most {MAX_TEXT} characters")
    return value


def acknowledge(alert_id: int, actor: object, comment: object, at: int) -> Job[StoredAlert]:
    """Job: acknowledge a firing, unacknowledged alert."""
    by = _text(actor, "by", required=True)
    note = _text(comment, "comment", required=False)

    def job(conn: sqlite3.Connection) -> StoredAlert:
        alert = get_alert(conn, alert_id)
        if alert.status == "resolved":
            raise Conflict(f"alert {alert_id} is resolved: only firing alerts can be acknowledged")
        if alert.acknowledged:
            raise Conflict(f"alert {alert_id} is already acknowledged by {alert.acked_by}")
        # An Alertmanager alert gets a silence; the reconciler creates it (see alertmanager.py).
        silence = "pending" if alert.source == "alertmanager" else alert.silence_state
        conn.execute(
            "UPDATE alerts SET acked_at = ?, acked_by = ?, ack_comment = ?, updated_at = ?,"
            " silence_state = ? WHERE id = ?",
            (at, by, note, at, silence, alert_id),
        )
        add_event(conn, alert_id, at, "acknowledged", by, note)
        return get_alert(conn, alert_id)

    return job


def unacknowledge(alert_id: int, actor: object, comment: object, at: int) -> Job[StoredAlert]:
    """Job: withdraw an acknowledgement."""
    by = _text(actor, "by", required=True)
    note = _text(comment, "comment", required=False)

    def job(conn: sqlite3.Connection) -> StoredAlert:
        alert = get_alert(conn, alert_id)
        if not alert.acknowledged:
            raise Conflict(f"alert {alert_id} is not acknowledged")
        silence = {"active": "expiring", "pending": None}.get(
            alert.silence_state or "", alert.silence_state
        )
        conn.execute(
            "UPDATE alerts SET acked_at = NULL, acked_by = NULL, ack_comment = NULL,"
            " updated_at = ?, silence_state = ? WHERE id = ?",
            (at, silence, alert_id),
        )
        add_event(conn, alert_id, at, "unacknowledged", by, note)
        return get_alert(conn, alert_id)

    return job


def add_note(alert_id: int, actor: object, text: object, at: int) -> Job[Event]:
    """Job: add a note to an alert's trail."""
    by = _text(actor, "by", required=True)
    body = _text(text, "text", required=True)

    def job(conn: sqlite3.Connection) -> Event:
        get_alert(conn, alert_id)
        add_event(conn, alert_id, at, "note", by, body)
        row = conn.execute(
            "SELECT id, alert_id, at, kind, actor, detail FROM events"
            " WHERE id = last_insert_rowid()"
        ).fetchone()
        return Event(*row)

    return job


def assign(alert_id: int, actor: object, assignee: object, at: int) -> Job[StoredAlert]:
    """Job: set (or with None/"" clear) an alert's assignee."""
    by = _text(actor, "by", required=True)
    who = _text(assignee, "assignee", required=False) or None

    def job(conn: sqlite3.Connection) -> StoredAlert:
        alert = get_alert(conn, alert_id)
        if alert.assignee == who:
            return alert
        conn.execute(
            "UPDATE alerts SET assignee = ?, updated_at = ? WHERE id = ?", (who, at, alert_id)
        )
        add_event(conn, alert_id, at, "assigned", by, who or "")
        return get_alert(conn, alert_id)

    return job


def set_silence(
    alert_id: int,
    state: str | None,
    at: int,
    silence_id: str | None = None,
    until: int | None = None,
    event: tuple[str, str, str] | None = None,
) -> Job[StoredAlert]:
    """Job: record the silence state of an alert (and optionally an event kind, actor, detail)."""

    def job(conn: sqlite3.Connection) -> StoredAlert:
        get_alert(conn, alert_id)
        conn.execute(
            "UPDATE alerts SET silence_state = ?, silence_id = coalesce(?, silence_id),"
            " silenced_until = ?, updated_at = ? WHERE id = ?",
            (state, silence_id, until, at, alert_id),
        )
        if event is not None:
            add_event(conn, alert_id, at, *event)
        return get_alert(conn, alert_id)

    return job


def resolve_learnt(alert_id: int, at: int, how: str) -> Job[StoredAlert | None]:
    """Job: mark a firing episode resolved because Alertmanager no longer has it."""

    def job(conn: sqlite3.Connection) -> StoredAlert | None:
        alert = get_alert(conn, alert_id)
        if alert.status != "firing":
            return None
        conn.execute(
            "UPDATE alerts SET status = 'resolved', ends_at = ?, updated_at = ? WHERE id = ?",
            (at, at, alert_id),
        )
        add_event(conn, alert_id, at, "resolved", "reconciler", how)
        return get_alert(conn, alert_id)

    return job


def set_retention(days: int) -> Job[int]:
    """Job: persist the retention period in days."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise Unprocessable("days", f"must be a whole number of days >= 1, got {days!r}")

    def job(conn: sqlite3.Connection) -> int:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('retention_days', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(days),),
        )
        return days

    return job


def prune(at: int, batch: int = 5000) -> Job[int]:
    """Job: delete one batch of resolved alerts (and their events) older than the retention."""

    def job(conn: sqlite3.Connection) -> int:
        cutoff = at - get_retention(conn) * 86400 * NS
        ids = [
            r[0]
            for r in conn.execute(
                # Old episodes have low ids: walking (status, id) finds them first.
                "SELECT id FROM alerts WHERE status = 'resolved' AND ends_at < ?"
                " ORDER BY id LIMIT ?",
                (cutoff, batch),
            )
        ]
        if ids:
            marks = ",".join("?" * len(ids))
            conn.execute(f"DELETE FROM events WHERE alert_id IN ({marks})", ids)  # noqa: S608
            conn.execute(f"DELETE FROM alerts WHERE id IN ({marks})", ids)  # noqa: S608
        return len(ids)

    return job
