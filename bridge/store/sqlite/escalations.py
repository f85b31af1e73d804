"""Escalation state (migration 7): reads, and the writes as writer jobs. The transitions
themselves are the engine's (bridge.escalation.engine); a save names the version it read,
so that a save from a stale read fails instead of undoing a change made in between."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from bridge.core.errors import Conflict, NotFound
from bridge.store.records import Escalation
from bridge.store.rows import ESCALATION_ACTOR as ACTOR
from bridge.store.rows import ESCALATION_COLUMNS as _COLUMNS
from bridge.store.rows import escalation_copies as _copies
from bridge.store.rows import escalation_plan as _plan
from bridge.store.rows import escalation_row as _row
from bridge.store.sqlite.actions import add_event
from bridge.store.sqlite.database import Job


def of_alert(conn: sqlite3.Connection, alert_id: int) -> list[Escalation]:
    sql = f"SELECT {_COLUMNS} FROM escalations WHERE alert_id = ? ORDER BY policy"  # noqa: S608
    return [_row(r) for r in conn.execute(sql, (alert_id,))]


def due(conn: sqlite3.Connection, now: int, limit: int) -> list[Escalation]:
    sql = (
        f"SELECT {_COLUMNS} FROM escalations"  # noqa: S608 - a constant column list
        " WHERE due_at IS NOT NULL AND state IN ('running', 'paused', 'acknowledged')"
        " AND due_at <= ? ORDER BY due_at LIMIT ?"
    )
    return [_row(r) for r in conn.execute(sql, (now, limit))]


def next_due(conn: sqlite3.Connection) -> int | None:
    row = conn.execute(
        "SELECT min(due_at) FROM escalations"
        " WHERE due_at IS NOT NULL AND state IN ('running', 'paused', 'acknowledged')"
    ).fetchone()
    value: int | None = row[0]
    return value


def copy_work(conn: sqlite3.Connection, repost_before: int, limit: int) -> list[Escalation]:
    """Escalations whose copies must be ended (acknowledged, stopped) or posted again."""
    # Two queries, each on its partial index (an OR of both would scan every active copy).
    ending = (
        f"SELECT {_COLUMNS} FROM escalations WHERE copies != '[]'"  # noqa: S608
        " AND state IN ('acknowledged', 'stopped') LIMIT ?"
    )
    rows = [_row(r) for r in conn.execute(ending, (limit,))]
    # Never posted, then posted before the cutoff: each a range of the index (one OR of
    # both scanned the whole index every tick: 5 ms at 10,000 escalations).
    for posted in ("reposted_at IS NULL", "reposted_at < ?"):
        if len(rows) >= limit:
            break
        again = (
            f"SELECT {_COLUMNS} FROM escalations WHERE copies != '[]' AND {posted}"  # noqa: S608
            " AND state NOT IN ('acknowledged', 'stopped') ORDER BY reposted_at LIMIT ?"
        )
        bound = () if "NULL" in posted else (repost_before,)
        rows += [_row(r) for r in conn.execute(again, (*bound, limit - len(rows)))]
    return rows


def add(escalations: Sequence[Escalation], details: Sequence[str], at: int | None) -> Job[int]:
    """Job: insert the escalations not there yet, each with its event (at `at`, or at its
    own updated_at); how many were new (a repeated start adds nothing)."""

    def job(conn: sqlite3.Connection) -> int:
        added = 0
        for esc, detail in zip(escalations, details, strict=True):
            found = conn.execute("SELECT 1 FROM alerts WHERE id = ?", (esc.alert_id,)).fetchone()
            if found is None:
                raise NotFound(f"no alert with id {esc.alert_id}")
            when = esc.updated_at if at is None else at
            cursor = conn.execute(
                f"INSERT INTO escalations ({_COLUMNS}) VALUES"  # noqa: S608 - constant columns
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (alert_id, policy) DO NOTHING",
                (esc.alert_id, esc.policy.name, _plan(esc.policy),
                 esc.urgency, esc.state, esc.position, esc.repeats, esc.round, esc.due_at,
                 esc.level, _copies(esc), esc.reposted_at, esc.version, when, esc.paused_state,
                 esc.event_id, esc.forced),
            )  # fmt: skip
            if cursor.rowcount:
                added += 1
                add_event(conn, esc.alert_id, when, "escalation_started", ACTOR, detail)
        return added

    return job


def save(esc: Escalation, events: Sequence[tuple[str, str]], at: int, actor: str) -> Job[int]:
    """Job: store an escalation's new state if it is still at `esc.version` (Conflict if it
    changed since it was read, NotFound if gone), with its events; the new version."""

    def job(conn: sqlite3.Connection) -> int:
        return _save(conn, esc, events, at, actor)

    return job


def save_many(
    items: Sequence[tuple[Escalation, Sequence[tuple[str, str]]]], at: int, actor: str
) -> Job[list[int | None]]:
    """Job: save each escalation as `save` does, in one transaction; each one's new version,
    or None where it changed meanwhile or is gone (the others are saved all the same)."""

    def job(conn: sqlite3.Connection) -> list[int | None]:
        out: list[int | None] = []
        for esc, events in items:
            try:
                out.append(_save(conn, esc, events, at, actor))
            except (Conflict, NotFound):
                out.append(None)
        return out

    return job


def _save(
    conn: sqlite3.Connection,
    esc: Escalation,
    events: Sequence[tuple[str, str]],
    at: int,
    actor: str,
) -> int:
    cursor = conn.execute(
        "UPDATE escalations SET state = ?, position = ?, repeats = ?, round = ?,"
        " due_at = ?, level = ?, copies = ?, reposted_at = ?, version = version + 1,"
        " updated_at = ?, paused_state = ?, urgency = ?, event_id = ?, forced = ?"
        " WHERE alert_id = ? AND policy = ? AND version = ?",
        (esc.state, esc.position, esc.repeats, esc.round, esc.due_at, esc.level,
         _copies(esc), esc.reposted_at, at, esc.paused_state, esc.urgency, esc.event_id,
         esc.forced, esc.alert_id,
         esc.policy.name, esc.version),
    )  # fmt: skip
    if not cursor.rowcount:
        exists = conn.execute(
            "SELECT 1 FROM escalations WHERE alert_id = ? AND policy = ?",
            (esc.alert_id, esc.policy.name),
        ).fetchone()
        if exists is None:
            raise NotFound(f"alert {esc.alert_id} has no escalation {esc.policy.name}")
        raise Conflict(f"escalation {esc.policy.name} of alert {esc.alert_id} changed meanwhile")
    for kind, detail in events:
        add_event(conn, esc.alert_id, at, kind, actor, detail)
    return esc.version + 1
