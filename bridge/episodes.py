"""Ingesting received alerts into episodes by Alertmanager's delivery rules (FACTS.md, HA).

- an episode is (fingerprint, startsAt); an exact repeat only bumps receive_count;
- a "firing" never re-opens a resolved episode (a real re-fire has a new startsAt);
- a "resolved" touches only its own startsAt's episode; the earliest endsAt wins;
so the final state does not depend on arrival order. New episodes of a notification are
inserted with one executemany after one lookup; known ones are applied row by row.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson

from bridge.store import Job, dumps_map
from bridge.webhook import ReceivedAlert


def local_fingerprint(labels: Mapping[str, str]) -> str:
    """16 hex digits identifying a label set, for alerts the embedded evaluator raises."""
    return hashlib.sha256(dumps_map(labels).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What a batch of received alerts changed."""

    fired: list[int] = field(default_factory=list)  # new firing episodes
    resolved: list[int] = field(default_factory=list)  # episodes that became resolved
    repeats: int = 0  # receipts that changed nothing but the receive count


_INSERT = (
    "INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity, labels,"
    " annotations, generator_url, source, first_received_at, last_received_at, receive_count,"
    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)"
)


#: Up to this many alerts a notification is applied row by row (fewer statements than a batch).
SMALL_BATCH = 2


def _record_new(
    alert_id: int,
    a: ReceivedAlert,
    received_at: int,
    source: str,
    events: list[tuple[int, int, str, str, str]],
    result: IngestResult,
) -> None:
    if a.status == "firing":
        events.append((alert_id, received_at, "fired", source, ""))
        result.fired.append(alert_id)
    else:
        events.append((alert_id, received_at, "resolved", source, "first seen resolved"))
        result.resolved.append(alert_id)


def _ingest_each(
    conn: sqlite3.Connection,
    alerts: Sequence[ReceivedAlert],
    received_at: int,
    source: str,
    events: list[tuple[int, int, str, str, str]],
    result: IngestResult,
) -> int:
    """Row by row: try the insert; a conflict means the episode is known."""
    repeats = 0
    for a in alerts:
        row = conn.execute(
            _INSERT + " ON CONFLICT (fingerprint, starts_at) DO NOTHING RETURNING id",
            (a.fingerprint, a.starts_at, a.ends_at, a.status, a.alertname, a.severity,
             dumps_map(a.labels), dumps_map(a.annotations), a.generator_url, source, received_at,
             received_at, received_at),
        ).fetchone()  # fmt: skip
        if row is not None:
            _record_new(row[0], a, received_at, source, events, result)
        elif _apply_known(conn, a, received_at, source, events, result):
            repeats += 1
    return repeats


def _existing(conn: sqlite3.Connection, alerts: Sequence[ReceivedAlert]) -> set[tuple[str, int]]:
    """Which (fingerprint, startsAt) episodes are stored already: one statement for the lot."""
    if not alerts:
        return set()
    keys = orjson.dumps([[a.fingerprint, a.starts_at] for a in alerts]).decode()
    rows = conn.execute(
        "SELECT a.fingerprint, a.starts_at FROM json_each(?) AS j JOIN alerts AS a"
        " ON a.fingerprint = j.value ->> 0 AND a.starts_at = j.value ->> 1",
        (keys,),
    )
    return {(fingerprint, starts) for fingerprint, starts in rows}


def _insert_new(
    conn: sqlite3.Connection, new: list[ReceivedAlert], received_at: int, source: str
) -> list[int]:
    """Insert episodes known to be new with one executemany; returns their ids in order."""
    if not new:
        return []
    conn.executemany(
        _INSERT,
        [
            (a.fingerprint, a.starts_at, a.ends_at, a.status, a.alertname, a.severity,
             dumps_map(a.labels), dumps_map(a.annotations), a.generator_url, source, received_at,
             received_at, received_at)
            for a in new
        ],
    )  # fmt: skip
    last: int = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
    first = last - len(new) + 1
    # SQLite gives each new row max(rowid) + 1, so one statement's rows are consecutive;
    # check the first, and fall back to looking every id up if that ever did not hold.
    row = conn.execute("SELECT fingerprint, starts_at FROM alerts WHERE id = ?", (first,))
    if row.fetchone() == (new[0].fingerprint, new[0].starts_at):
        return list(range(first, last + 1))
    return [
        conn.execute(
            "SELECT id FROM alerts WHERE fingerprint = ? AND starts_at = ?",
            (a.fingerprint, a.starts_at),
        ).fetchone()[0]
        for a in new
    ]


def _apply_known(
    conn: sqlite3.Connection,
    a: ReceivedAlert,
    received_at: int,
    source: str,
    events: list[tuple[int, int, str, str, str]],
    result: IngestResult,
) -> bool:
    """Apply a receipt of a stored episode by the HA rules; True when it changed only counts."""
    alert_id, status, ends_at = conn.execute(
        "SELECT id, status, ends_at FROM alerts WHERE fingerprint = ? AND starts_at = ?",
        (a.fingerprint, a.starts_at),
    ).fetchone()
    if a.status == "resolved" and status == "firing":
        conn.execute(
            "UPDATE alerts SET status = 'resolved', ends_at = ?, annotations = ?,"
            " receive_count = receive_count + 1, last_received_at = ?, updated_at = ?"
            " WHERE id = ?",
            (a.ends_at, dumps_map(a.annotations), received_at, received_at, alert_id),
        )
        events.append((alert_id, received_at, "resolved", source, ""))
        result.resolved.append(alert_id)
        return False
    if a.status == "resolved" and a.ends_at is not None and a.ends_at < ends_at:
        # Two replicas saw the end at slightly different times: keep the earliest.
        conn.execute(
            "UPDATE alerts SET ends_at = ?, receive_count = receive_count + 1,"
            " last_received_at = ? WHERE id = ?",
            (a.ends_at, received_at, alert_id),
        )
    elif a.status == "firing" and status == "firing":
        # Still firing: the annotations carry the current $value.
        conn.execute(
            "UPDATE alerts SET annotations = ?, receive_count = receive_count + 1,"
            " last_received_at = ? WHERE id = ?",
            (dumps_map(a.annotations), received_at, alert_id),
        )
    else:  # an exact repeat, or a stale firing of a resolved episode
        conn.execute(
            "UPDATE alerts SET receive_count = receive_count + 1, last_received_at = ?"
            " WHERE id = ?",
            (received_at, alert_id),
        )
    return True


def _write_events(
    conn: sqlite3.Connection, events: list[tuple[int, int, str, str, str]], actor: str | None
) -> None:
    if actor is not None:  # who learnt of it, when not the source itself (the reconciler)
        events = [(alert_id, at, kind, actor, detail) for alert_id, at, kind, _, detail in events]
    conn.executemany(
        "INSERT INTO events (alert_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)", events
    )


def ingest(
    alerts: Sequence[ReceivedAlert],
    received_at: int,
    source: str = "alertmanager",
    actor: str | None = None,
) -> Job[IngestResult]:
    """Job: apply received alerts by the HA rules; returns what changed."""

    def job(conn: sqlite3.Connection) -> IngestResult:
        result = IngestResult()
        events: list[tuple[int, int, str, str, str]] = []
        if len(alerts) <= SMALL_BATCH:
            repeats = _ingest_each(conn, alerts, received_at, source, events, result)
            _write_events(conn, events, actor)
            return IngestResult(result.fired, result.resolved, repeats)
        existing = _existing(conn, alerts)
        new: list[ReceivedAlert] = []
        known: list[ReceivedAlert] = []
        for a in alerts:
            key = (a.fingerprint, a.starts_at)
            if key in existing:
                known.append(a)
            else:
                existing.add(key)  # a repeat inside this same notification is "known"
                new.append(a)
        for alert_id, a in zip(_insert_new(conn, new, received_at, source), new, strict=True):
            _record_new(alert_id, a, received_at, source, events, result)
        repeats = 0
        for a in known:
            if _apply_known(conn, a, received_at, source, events, result):
                repeats += 1
        _write_events(conn, events, actor)
        return IngestResult(result.fired, result.resolved, repeats)

    return job
