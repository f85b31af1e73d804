"""Escalation state on PostgreSQL: the same rows and rules as SQLite's
(bridge.store.sqlite.escalations; the row and plan codecs are bridge.store.rows): a save names the
version it read, so that a save from a stale read, or from another replica's engine, is a
Conflict instead of undoing a change made in between."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.core.errors import Conflict, NotFound
from bridge.store.records import Escalation
from bridge.store.rows import ESCALATION_ACTOR as ACTOR
from bridge.store.rows import ESCALATION_COLUMNS as _COLUMNS
from bridge.store.rows import escalation_copies as _copies
from bridge.store.rows import escalation_plan as _plan
from bridge.store.rows import escalation_row as _row

Conn = Any
Event = Any  # async (conn, alert_id, at, kind, actor, detail) -> id


async def of_alert(conn: Conn, alert_id: int) -> list[Escalation]:
    sql = f"SELECT {_COLUMNS} FROM escalations WHERE alert_id = $1 ORDER BY policy"  # noqa: S608
    return [_row(r) for r in await conn.fetch(sql, alert_id)]


async def due(conn: Conn, now: int, limit: int) -> list[Escalation]:
    sql = (
        f"SELECT {_COLUMNS} FROM escalations"  # noqa: S608 - a constant column list
        " WHERE due_at IS NOT NULL AND state IN ('running', 'paused', 'acknowledged')"
        " AND due_at <= $1 ORDER BY due_at LIMIT $2"
    )
    return [_row(r) for r in await conn.fetch(sql, now, limit)]


async def next_due(conn: Conn) -> int | None:
    value: int | None = await conn.fetchval(
        "SELECT min(due_at) FROM escalations"
        " WHERE due_at IS NOT NULL AND state IN ('running', 'paused', 'acknowledged')"
    )
    return value


async def copy_work(conn: Conn, repost_before: int, limit: int) -> list[Escalation]:
    """Escalations whose copies must be ended (acknowledged, stopped) or posted again."""
    rows = [_row(r) for r in await conn.fetch(
        f"SELECT {_COLUMNS} FROM escalations WHERE copies != '[]'"  # noqa: S608
        " AND state IN ('acknowledged', 'stopped') LIMIT $1", limit)]  # fmt: skip
    for posted in ("reposted_at IS NULL", "reposted_at < $2"):
        if len(rows) >= limit:
            break
        again = (
            f"SELECT {_COLUMNS} FROM escalations WHERE copies != '[]' AND {posted}"  # noqa: S608
            " AND state NOT IN ('acknowledged', 'stopped') ORDER BY reposted_at LIMIT $1"
        )
        bound = () if "NULL" in posted else (repost_before,)
        rows += [_row(r) for r in await conn.fetch(again, limit - len(rows), *bound)]
    return rows


async def add(conn: Conn, escalations: Sequence[Escalation], details: Sequence[str],
              at: int | None, event: Event) -> int:  # fmt: skip
    added = 0
    for esc, detail in zip(escalations, details, strict=True):
        if await conn.fetchval("SELECT 1 FROM alerts WHERE id = $1", esc.alert_id) is None:
            raise NotFound(f"no alert with id {esc.alert_id}")
        when = esc.updated_at if at is None else at
        status = await conn.execute(
            f"INSERT INTO escalations ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"  # noqa: S608
            " $9, $10, $11, $12, $13, $14, $15, $16, $17) ON CONFLICT (alert_id, policy)"
            " DO NOTHING",
            esc.alert_id, esc.policy.name, _plan(esc.policy), esc.urgency, esc.state,
            esc.position, esc.repeats, esc.round, esc.due_at, esc.level, _copies(esc),
            esc.reposted_at, esc.version, when, esc.paused_state, esc.event_id, esc.forced,
        )  # fmt: skip
        if status.split()[-1] != "0":
            added += 1
            await event(conn, esc.alert_id, when, "escalation_started", ACTOR, detail)
    return added


async def save(conn: Conn, esc: Escalation, events: Sequence[tuple[str, str]], at: int,
               actor: str, event: Event) -> int:  # fmt: skip
    status = await conn.execute(
        "UPDATE escalations SET state = $1, position = $2, repeats = $3, round = $4,"
        " due_at = $5, level = $6, copies = $7, reposted_at = $8, version = version + 1,"
        " updated_at = $9, paused_state = $10, urgency = $11, event_id = $12, forced = $13"
        " WHERE alert_id = $14 AND policy = $15 AND version = $16",
        esc.state, esc.position, esc.repeats, esc.round, esc.due_at, esc.level, _copies(esc),
        esc.reposted_at, at, esc.paused_state, esc.urgency, esc.event_id, esc.forced,
        esc.alert_id, esc.policy.name, esc.version,
    )  # fmt: skip
    if status.split()[-1] == "0":
        exists = await conn.fetchval("SELECT 1 FROM escalations WHERE alert_id = $1 AND"
                                     " policy = $2", esc.alert_id, esc.policy.name)  # fmt: skip
        if exists is None:
            raise NotFound(f"alert {esc.alert_id} has no escalation {esc.policy.name}")
        raise Conflict(f"escalation {esc.policy.name} of alert {esc.alert_id} changed meanwhile")
    for kind, detail in events:
        await event(conn, esc.alert_id, at, kind, actor, detail)
    return esc.version + 1
