"""The PostgreSQL store's writes other than ingestion, as jobs the writer runs in its
transactions (bridge.store.postgres.database): operators' and the system's actions on stored
alerts (the rules in bridge.store.actions), settings kept, leases. As SQLite's
bridge.store.sqlite.actions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from bridge.core.errors import Conflict, NotFound
from bridge.core.rulebook import RuleVersion
from bridge.core.times import NS
from bridge.store import actions
from bridge.store.labelindex import NewSeries, gone_postings, series_of
from bridge.store.postgres import escalations, schema
from bridge.store.postgres import queries as q
from bridge.store.postgres.database import Conn, T
from bridge.store.postgres.ingest import index_series
from bridge.store.records import (
    DEFAULT_RETENTION_DAYS,
    AmView,
    Escalation,
    Event,
    SilenceChange,
    StoredAlert,
)
from bridge.store.rows import SAME_ROW, TABLES, rule_version_row, stale_rules
from bridge.store.rows import text_field as _text
from bridge.store.sql import RULE_VERSION_COLUMNS

#: A job the writer runs in a transaction (as SQLite's bridge.store.sqlite.database.Job).
Job = Callable[[Conn], Awaitable[T]]


def acknowledge(alert_id: int, by: object, comment: object, at: int) -> Job[StoredAlert]:
    who = _text(by, "by", required=True)
    note = _text(comment, "comment", required=False)

    async def job(conn: Conn) -> StoredAlert:
        alert = await q.get(conn, alert_id, lock=True)
        managed = await conn.fetchval("SELECT value FROM meta WHERE key = 'alertmanagers'")
        change = actions.acknowledge(alert, who, note, at, silences_managed=managed != "[]")
        return await q.apply_change(conn, alert_id, change)

    return job


def unacknowledge(alert_id: int, by: object, comment: object, at: int) -> Job[StoredAlert]:
    who = _text(by, "by", required=True)
    note = _text(comment, "comment", required=False)

    async def job(conn: Conn) -> StoredAlert:
        alert = await q.get(conn, alert_id, lock=True)
        return await q.apply_change(conn, alert_id, actions.unacknowledge(alert, who, note, at))

    return job


def add_note(alert_id: int, by: object, text: object, at: int, kind: str = "note") -> Job[Event]:
    who = _text(by, "by", required=True)
    body = _text(text, "text", required=True)
    actions.note_kind(kind)

    async def job(conn: Conn) -> Event:
        await q.get(conn, alert_id)
        event_id = await q.event(conn, alert_id, at, kind, who, body)
        return Event(event_id, alert_id, at, kind, who, body)

    return job


def assign(alert_id: int, by: object, assignee: object, at: int) -> Job[StoredAlert]:
    who = _text(by, "by", required=True)
    to = _text(assignee, "assignee", required=False) or None

    async def job(conn: Conn) -> StoredAlert:
        alert = await q.get(conn, alert_id, lock=True)
        return await q.apply_change(conn, alert_id, actions.assign(alert, who, to, at))

    return job


def resolve(alert_id: int, by: object, comment: object, at: int) -> Job[StoredAlert]:
    who = _text(by, "by", required=True)
    note = _text(comment, "comment", required=False)

    async def job(conn: Conn) -> StoredAlert:
        alert = await q.get(conn, alert_id, lock=True)
        change = actions.resolve(alert, who, note or "resolved by hand", at)
        return await q.apply_change(conn, alert_id, change)

    return job


def resolve_system(
    alert_id: int, at: int, resolution: str, actor: str, detail: str
) -> Job[StoredAlert | None]:
    async def job(conn: Conn) -> StoredAlert | None:
        alert = await q.get(conn, alert_id, lock=True)
        change = actions.resolve_system(alert, at, resolution, actor, detail)
        return None if change is None else await q.apply_change(conn, alert_id, change)

    return job


def continued(alert_id: int, at: int) -> Job[None]:
    async def job(conn: Conn) -> None:
        await q.event(conn, alert_id, at, "continued", "evaluator",
                     "the condition still held at restart")  # fmt: skip

    return job


def set_meta(key: str, value: str) -> Job[None]:
    async def job(conn: Conn) -> None:
        await conn.execute("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key)"
                           " DO UPDATE SET value = excluded.value", key, value)  # fmt: skip

    return job


def record_heartbeat(at: int) -> Job[None]:
    async def job(conn: Conn) -> None:
        await conn.execute(
            "INSERT INTO meta (key, value) VALUES ('heartbeat_at', $1) ON CONFLICT (key)"
            " DO UPDATE SET value = excluded.value"
            " WHERE meta.value::bigint < excluded.value::bigint", str(at),
        )  # fmt: skip

    return job


def lease(name: str, holder: str, until: int, at: int, replacing: str | None = None) -> Job[bool]:
    async def job(conn: Conn) -> bool:
        # One statement: a replica taking an expired lease and another renewing it
        # serialise on the row; the loser's WHERE no longer holds and it gets False.
        got = await conn.fetchval(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (name) DO UPDATE SET holder = $2, expires_at = $3"
            " WHERE leases.holder = $2 OR leases.expires_at <= $4 OR leases.holder = $5"
            " RETURNING holder",
            name, holder, until, at, replacing,
        )  # fmt: skip
        return bool(got == holder)

    return job


def release(name: str, holder: str) -> Job[None]:
    async def job(conn: Conn) -> None:
        await conn.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)

    return job


def set_silence(alert_id: int, at: int, change: SilenceChange) -> Job[StoredAlert]:
    async def job(conn: Conn) -> StoredAlert:
        await q.get(conn, alert_id, lock=True)
        await conn.execute(
            "UPDATE alerts SET silence_state = $1, silence_id = coalesce($2, silence_id),"
            " silenced_until = $3, updated_at = $4 WHERE id = $5",
            change.state, change.silence_id, change.until, at, alert_id,
        )  # fmt: skip
        if change.event is not None:
            await q.event(conn, alert_id, at, *change.event)
        return await q.get(conn, alert_id)

    return job


def prune(at: int, batch: int = 5000) -> Job[int]:
    async def job(conn: Conn) -> int:
        days = await conn.fetchval("SELECT value FROM meta WHERE key = 'retention_days'")
        cutoff = at - int(days or DEFAULT_RETENTION_DAYS) * 86400 * NS
        ids = [r[0] for r in await conn.fetch(
            "SELECT id FROM alerts WHERE status = 'resolved' AND ends_at < $1"
            " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED", cutoff, batch)]  # fmt: skip
        if ids:
            series = await conn.fetch(
                "SELECT DISTINCT fingerprint, labels FROM alerts WHERE id = ANY($1::bigint[])", ids
            )
            await conn.execute("DELETE FROM events WHERE alert_id = ANY($1::bigint[])", ids)
            await conn.execute("DELETE FROM alerts WHERE id = ANY($1::bigint[])", ids)
            await _unindex(conn, series)
        await conn.execute(schema.FOLD_COUNTS)
        return len(ids)

    return job


async def _unindex(conn: Conn, rows: Sequence[Any]) -> None:
    """Take out of the label index the series (fingerprint, labels) of which no episode is
    left, their postings, and the values no series carries any more: under the index lock
    held exclusively (ingestion holds it shared while it adds), to COMMIT."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", schema.INDEX_LOCK)
    orphans = await conn.fetch(
        "SELECT fp, labels FROM unnest($1::text[], $2::text[]) AS g(fp, labels) WHERE NOT EXISTS"
        " (SELECT 1 FROM alerts AS a WHERE a.fingerprint = g.fp AND a.labels = g.labels)",
        [r[0] for r in rows], [r[1] for r in rows],
    )  # fmt: skip
    if not orphans:
        return
    gone = series_of([(r[0], r[1]) for r in orphans])
    deleted = await conn.fetch(
        "DELETE FROM series WHERE key = ANY($1::text[]) RETURNING key, id", list(gone)
    )
    ids = {r[0]: r[1] for r in deleted}
    postings, values = gone_postings(gone, ids)
    await conn.execute(
        "DELETE FROM postings AS p USING unnest($1::text[], $2::bigint[]) AS g(key, series_id),"
        " label_values AS v WHERE v.key = g.key AND p.value_id = v.id"
        " AND p.series_id = g.series_id",
        [p[0] for p in postings], [p[1] for p in postings],
    )  # fmt: skip
    await conn.execute(
        "DELETE FROM label_values AS v WHERE v.key = ANY($1::text[])"
        " AND NOT EXISTS (SELECT 1 FROM postings AS p WHERE p.value_id = v.id)",
        values,
    )


def kept_key(name: str, new: str) -> Job[str]:
    """Job: keep `new` under `name` unless a key is kept already; the key kept."""

    async def job(conn: Conn) -> str:
        await conn.execute("INSERT INTO meta (key, value) VALUES ($1, $2)"
                           " ON CONFLICT (key) DO NOTHING", name, new)  # fmt: skip
        return str(await conn.fetchval("SELECT value FROM meta WHERE key = $1", name))

    return job


def load(table: str, rows: Sequence[tuple[Any, ...]]) -> Job[tuple[int, int]]:
    """Job: insert a migration's page of rows (those already there skipped); (how many were
    new, how many of the page are there now)."""
    columns, key = TABLES[table]
    identity = table in ("alerts", "events")  # ids kept, then the sequence moved past them
    key = SAME_ROW.get(table, key)
    at = [columns.index(k) for k in key]
    keys = [[row[i] for row in rows] for i in at]
    types = ["bigint" if k in ("id", "alert_id", "starts_at") else "text" for k in key]
    unnest = ", ".join(f"${n + 1}::{t}[]" for n, t in enumerate(types))
    # The page's rows there as in the source, by key (an index read; a count of the whole
    # table before and after each page made a migration quadratic in its size).
    there = (f"SELECT count(*) FROM {table} JOIN unnest({unnest})"  # noqa: S608 - TABLES
             f" AS k({', '.join(key)}) USING ({', '.join(key)})")  # fmt: skip

    async def job(conn: Conn) -> tuple[int, int]:
        marks = ", ".join(f"${n + 1}" for n in range(len(columns)))
        before = await conn.fetchval(there, *keys)
        await conn.executemany(
            f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608 - TABLES names
            + (" OVERRIDING SYSTEM VALUE" if identity else "")
            + f" VALUES ({marks}) ON CONFLICT DO NOTHING",
            rows,
        )
        if table == "alerts":
            await index_series(conn, NewSeries.of_rows(rows, columns))
        if identity:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                f" (SELECT max(id) FROM {table}))"
            )
        present = await conn.fetchval(there, *keys)
        return int(present - before), int(present)

    return job


def add_rule_version(version: RuleVersion) -> Job[None]:
    """Job: record the next version of the rule set; Conflict when another came first."""

    async def job(conn: Conn) -> None:
        await conn.execute("LOCK TABLE rule_versions IN EXCLUSIVE MODE")  # one at a time
        latest = await conn.fetchval("SELECT coalesce(max(version), 0) FROM rule_versions")
        if latest != version.version - 1:
            raise stale_rules(latest, version)
        await conn.execute(f"INSERT INTO rule_versions ({RULE_VERSION_COLUMNS})"  # noqa: S608
                           " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                           *rule_version_row(version))  # fmt: skip

    return job


def set_am_states(views: Sequence[AmView]) -> Job[int]:
    """Job: Alertmanager's view of firing alerts; how many rows changed."""

    async def job(conn: Conn) -> int:
        ordered = sorted(views)  # (rows locked in id order: no deadlock with a replica)
        status = await conn.execute(
            "UPDATE alerts a SET am_state = v.state, am_silenced_by = v.silenced,"
            " am_inhibited_by = v.inhibited"
            " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])"
            " AS v(id, state, silenced, inhibited)"
            " WHERE a.id = v.id AND a.status = 'firing'",
            [v[0] for v in ordered], [v[1] for v in ordered],
            [orjson.dumps(v[2]).decode() for v in ordered],
            [orjson.dumps([{"fingerprint": f, "alert_id": i} for f, i in v[3]]).decode()
             for v in ordered],
        )  # fmt: skip
        return int(status.split()[-1])

    return job


def set_enrichment(values: Mapping[int, Mapping[str, str]]) -> Job[int]:
    """Job: alerts' enrichment fields by id; how many of the ids exist."""

    async def job(conn: Conn) -> int:
        ids = sorted(values)
        status = await conn.execute(
            "UPDATE alerts a SET enrichment = v.fields"
            " FROM unnest($1::bigint[], $2::text[]) AS v(id, fields) WHERE a.id = v.id",
            ids, [orjson.dumps(dict(values[i])).decode() for i in ids],
        )  # fmt: skip
        return int(status.split()[-1])

    return job


def save_escalations(items: Sequence[tuple[Escalation, Sequence[tuple[str, str]]]], at: int,
                     actor: str) -> Job[list[int | None]]:  # fmt: skip
    """Job: save each escalation with its events; its new version, or None where a stale
    read (Conflict) or a pruned alert (NotFound) refused it."""

    async def job(conn: Conn) -> list[int | None]:
        out: list[int | None] = []
        for esc, events in items:
            try:
                out.append(await escalations.save(conn, esc, events, at, actor, q.event))
            except (Conflict, NotFound):
                out.append(None)
        return out

    return job
