"""The PostgreSQL store's SQL beside its facade (bridge.store.postgres.store): an alert read
(locked for an action), an action's change applied (bridge.store.actions decides it), events
and people written, and the alert list's filters, order and pages."""

from __future__ import annotations

from typing import Any

from bridge.core.errors import NotFound
from bridge.store.actions import Change
from bridge.store.postgres import schema
from bridge.store.records import SYSTEM_ACTORS, AlertQuery, StoredAlert
from bridge.store.rows import COLUMNS, row_to_alert

Conn = Any  # an asyncpg connection (asyncpg ships no type hints)
EVENT = "SELECT id, alert_id, at, kind, actor, detail FROM events"
_RANK = "CASE WHEN acked_at IS NOT NULL THEN 2 WHEN am_state = 'suppressed' THEN 1 ELSE 0 END"
_SEVERITY_RANK = ("CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning'"
                  " THEN 2 WHEN 'info' THEN 3 ELSE 4 END")  # fmt: skip
_RESOLVED_RANK = 3


async def get(conn: Conn, alert_id: int, lock: bool = False) -> StoredAlert:
    sql = f"SELECT {COLUMNS} FROM alerts WHERE id = $1" + (" FOR UPDATE" if lock else "")  # noqa: S608
    row = await conn.fetchrow(sql, alert_id)
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    return row_to_alert(row)


async def apply_change(conn: Conn, alert_id: int, change: Change | None) -> StoredAlert:
    """Write what an action decided (bridge.store.actions) and add its event; the alert as it
    is then (as it was when the action changes nothing)."""
    if change is not None:
        sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(change.columns, 1))
        await conn.execute(  # the names: actions.COLUMNS
            f"UPDATE alerts SET {sets} WHERE id = ${len(change.columns) + 1}",  # noqa: S608
            *change.columns.values(), alert_id,
        )  # fmt: skip
        if change.person:
            await person(conn, change.person)
        await event(conn, alert_id, change.at, *change.event)
    return await get(conn, alert_id)


async def person(conn: Conn, name: str) -> None:
    await conn.execute("INSERT INTO people (name) VALUES ($1) ON CONFLICT DO NOTHING", name)


async def event(conn: Conn, alert_id: int, at: int, kind: str, actor: str, detail: str) -> int:
    """One event (under the feed lock); its id. The alert is locked FOR KEY SHARE by the
    INSERT itself (what a foreign key's check would do: schema migration 4): an alert being
    deleted is waited for, then NotFound, and no event is left without its alert."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", schema.FEED_LOCK)
    event_id: int | None = await conn.fetchval(
        "INSERT INTO events (alert_id, at, kind, actor, detail)"
        " SELECT id, $2, $3, $4, $5 FROM alerts WHERE id = $1 FOR KEY SHARE RETURNING id",
        alert_id, at, kind, actor, detail,
    )  # fmt: skip
    if event_id is None:
        raise NotFound(f"no alert with id {alert_id}")
    if actor not in SYSTEM_ACTORS:
        await person(conn, actor)
    return event_id


class Sql:
    """A statement's WHERE terms with numbered parameters."""

    def __init__(self) -> None:
        self.where: list[str] = []
        self.args: list[object] = []

    def arg(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def copy(self) -> Sql:
        made = Sql()
        made.where, made.args = list(self.where), list(self.args)
        return made


def filters(query: AlertQuery) -> Sql:
    sql = Sql()
    if query.severities:
        sql.where.append(f"severity = ANY({sql.arg(list(query.severities))}::text[])")
    if query.rule:
        sql.where.append(f"alertname = {sql.arg(query.rule)}")
    if query.since is not None:
        sql.where.append(f"starts_at >= {sql.arg(query.since)}")
    if query.until is not None:
        sql.where.append(f"starts_at < {sql.arg(query.until)}")
    if query.acknowledged is not None:
        sql.where.append("acked_at IS NOT NULL" if query.acknowledged else "acked_at IS NULL")
    if query.am_state == "suppressed":
        sql.where.append("status = 'firing' AND am_state = 'suppressed'")
    elif query.am_state == "active":
        sql.where.append("status = 'firing' AND coalesce(am_state, '') != 'suppressed'")
    if query.text:
        escaped = query.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = sql.arg(f"%{escaped}%")
        sql.where.append(
            f"((annotations::jsonb ->> 'summary') ILIKE {like}"  # noqa: S608 - values bound
            f" OR (annotations::jsonb ->> 'description') ILIKE {like}"
            " OR EXISTS (SELECT 1 FROM events n WHERE n.alert_id = alerts.id"
            f" AND n.kind = 'note' AND n.detail ILIKE {like}))"
        )
    for m in query.matchers:
        value = f"coalesce(labels::jsonb ->> {sql.arg(m.name)}, '')"
        if m.op in ("=", "!="):
            sql.where.append(f"{value} {m.op} {sql.arg(m.value)}")
        else:  # anchored as Alertmanager's; PostgreSQL's regular expressions, not RE2
            pattern = sql.arg(f"^(?:{m.value})$")
            sql.where.append(f"{'NOT ' if m.op == '!~' else ''}({value} ~ {pattern})")
    return sql


Row = tuple[StoredAlert, str]


async def select(conn: Conn, query: AlertQuery, max_chars: int | None) -> tuple[list[Row], bool]:
    base = filters(query)
    if query.sort != "attention":
        sql = base.copy()
        if query.status:
            sql.where.append(f"status = {sql.arg(query.status)}")
        if query.before_id is not None:
            sql.where.append(f"id < {sql.arg(query.before_id)}")
        rows, full, _ = await fetch(conn, sql, "id DESC", query.limit, max_chars, None)
        return rows, full
    rank, severity, last_id = query.after or (-1, -1, 0)
    out: list[Row] = []
    if query.status in (None, "firing") and rank < _RESOLVED_RANK:
        sql = base.copy()
        sql.where.append("status = 'firing'")
        if query.after is not None:
            sql.where.append(f"({_RANK}, {_SEVERITY_RANK}, -id) > ({sql.arg(rank)},"
                             f" {sql.arg(severity)}, {sql.arg(-last_id)})")  # fmt: skip
        out, full, used = await fetch(conn, sql, f"{_RANK}, {_SEVERITY_RANK}, id DESC",
                                       query.limit, max_chars,
                                       f"{_RANK}, {_SEVERITY_RANK}")  # fmt: skip
        if full or len(out) == query.limit:
            return out, full
        max_chars = None if max_chars is None else max_chars - used
    if query.status in (None, "resolved") and query.am_state is None:
        sql = base.copy()
        sql.where.append("status = 'resolved'")
        if rank == _RESOLVED_RANK:
            sql.where.append(f"id < {sql.arg(last_id)}")
        more, full, _ = await fetch(conn, sql, "id DESC", query.limit - len(out), max_chars,
                                     f"{_RESOLVED_RANK}, {_SEVERITY_RANK}")  # fmt: skip
        return out + more, full
    return out, False


async def fetch(conn: Conn, sql: Sql, order: str, limit: int, max_chars: int | None,
                 ranks: str | None) -> tuple[list[Row], bool, int]:  # fmt: skip
    extra = f", {ranks}" if ranks else ""
    text = f"SELECT {COLUMNS}{extra} FROM alerts"  # noqa: S608 - fixed fragments, values bound
    if sql.where:
        text += " WHERE " + " AND ".join(sql.where)
    text += f" ORDER BY {order} LIMIT {sql.arg(limit)}"
    out: list[Row] = []
    chars = 0
    count = COLUMNS.count(",") + 1
    async with conn.transaction():
        async for row in conn.cursor(text, *sql.args):
            alert = row_to_alert(list(row.values())[:count])
            cursor = f"a{row[count]}.{row[count + 1]}.{alert.id}" if ranks else str(alert.id)
            out.append((alert, cursor))
            chars += len(row["labels"]) + len(row["annotations"]) + len(row["generator_url"])
            chars += len(row["ack_comment"] or "")
            if max_chars is not None and chars >= max_chars:
                return out, True, chars
    return out, False, chars
