"""The PostgreSQL store's SQL beside its facade (bridge.store.postgres.store): an alert read
(locked for an action), an action's change applied (bridge.store.actions decides it), events
and people written, the alert list's filters, order and pages, and the facade's other reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.core.errors import NotFound
from bridge.core.matchers import Matcher
from bridge.core.rulebook import RuleVersion
from bridge.store.actions import Change
from bridge.store.labelindex import MAX_EPISODES, lookup, resolve
from bridge.store.postgres import schema
from bridge.store.records import (
    PAGE_CHARS,
    SYSTEM_ACTORS,
    AlertCounts,
    AlertDetail,
    AlertQuery,
    EpisodeKey,
    Event,
    StoredAlert,
)
from bridge.store.rows import COLUMNS, TABLES, row_to_alert, rule_version
from bridge.store.sql import RULE_VERSION_COLUMNS, fingerprints_sql, values_test
from bridge.store.textindex import (
    DENSE_HITS,
    DENSE_WINDOW,
    MIN_CHARS,
    like_pattern,
    verbatim_in_json,
)

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
        like = sql.arg(like_pattern(query.text))
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


async def label_candidates(conn: Conn, matchers: Sequence[Matcher]) -> list[int] | None:
    """The ids of the episodes whose labels can match, from the label index (none: an empty
    list), or None when they are more than labelindex.MAX_EPISODES or every series can match
    (the listing then reads in its own order)."""
    values: dict[Matcher, list[tuple[int, str]]] = {}
    for m in matchers:
        how, what = lookup(m)
        if how == "scan":
            test = values_test(m, bool(what), "$2", "value ~ {}")
            pattern = m.value if m.op in ("=", "!=") else f"^(?:{m.value})$"
            rows = await conn.fetch(
                f"SELECT id, value FROM label_values WHERE left(name, {schema.NAME_PREFIX})"  # noqa: S608
                f" = left($1, {schema.NAME_PREFIX}) AND name = $1 AND {test}",
                m.name, pattern,
            )  # fmt: skip
        else:
            rows = await conn.fetch(
                "SELECT id, value FROM label_values WHERE key = ANY($1::text[])", what
            )
        values[m] = [(r[0], r[1]) for r in rows]
    resolved = resolve(matchers, values)
    if resolved.nothing:
        return []
    sql = Sql()
    series = fingerprints_sql(
        resolved, lambda group: f"SELECT unnest({sql.arg(list(group))}::bigint[])"
    )
    if series is None:
        return None
    # Counted first from the index of (fingerprint, starts_at) alone (an index-only scan: the
    # ids are in the table, and reading 20,001 rows of it for a dense matcher took tens of
    # milliseconds), then the ids when few enough; as one array (asyncpg decodes 20,000
    # records in tens of milliseconds).
    limit = sql.arg(MAX_EPISODES + 1)
    text = (
        f"WITH f AS MATERIALIZED ({series}),"  # noqa: S608 - built of constants, values bound
        f" n AS (SELECT count(*) AS n FROM (SELECT FROM alerts"
        f" WHERE fingerprint IN (SELECT fingerprint FROM f) LIMIT {limit}) AS c)"
        f" SELECT n.n, CASE WHEN n.n <= {sql.arg(MAX_EPISODES)} THEN (SELECT array_agg(id)"
        " FROM alerts WHERE fingerprint IN (SELECT fingerprint FROM f)) END FROM n"
    )
    count, found = await conn.fetchrow(text, *sql.args)
    return None if count > MAX_EPISODES else list(found or [])


async def text_candidates(conn: Conn, text: str) -> list[int] | None:
    """The ids of the episodes whose summary, description or a note can hold `text`, from
    the free-text index (bridge.store.textindex), or None when they are more than
    MAX_EPISODES or the text is shorter than a trigram. UNION ALL, not UNION: a UNION
    reads every match before its first row (a hash of them), UNION ALL stops at the LIMIT."""
    if len(text) < MIN_CHARS:
        return None
    like = like_pattern(text)
    newest = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM (SELECT annotations FROM alerts ORDER BY id DESC"
        " LIMIT $2) AS a WHERE (annotations::jsonb ->> 'summary') ILIKE $1"
        " OR (annotations::jsonb ->> 'description') ILIKE $1 LIMIT $3) AS d",
        like, DENSE_WINDOW, DENSE_HITS,
    )  # fmt: skip
    if newest >= DENSE_HITS:  # dense: read in order (textindex.DENSE_HITS)
        return None
    # The resolved episodes from the index, the firing ones (not in it) tested here: by
    # their raw JSON when the text is written verbatim there, else by the two texts.
    firing = (
        "annotations ILIKE $1" if verbatim_in_json(text)
        else "((annotations::jsonb ->> 'summary') ILIKE $1"
             " OR (annotations::jsonb ->> 'description') ILIKE $1)"
    )  # fmt: skip
    found = await conn.fetchval(
        "SELECT array_agg(id) FROM (SELECT alert_id AS id FROM alert_texts WHERE text ILIKE $1"  # noqa: S608
        f" UNION ALL SELECT id FROM alerts WHERE status = 'firing' AND {firing}"
        " UNION ALL SELECT alert_id FROM events WHERE kind = 'note' AND detail ILIKE $1"
        " LIMIT $2) AS c",
        like, MAX_EPISODES + 1,
    )  # fmt: skip
    ids = set(found or ())
    return None if len(found or ()) > MAX_EPISODES else sorted(ids)


async def candidates(conn: Conn, query: AlertQuery) -> list[int] | None:
    """The episodes the query's matchers and text can match, from the indexes (both: those
    both name), or None when neither narrows it to MAX_EPISODES or fewer."""
    found = await label_candidates(conn, query.matchers) if query.matchers else None
    if query.text and found != []:
        texts = await text_candidates(conn, query.text)
        if texts is not None:
            found = texts if found is None else sorted(set(found).intersection(texts))
    return found


async def select(conn: Conn, query: AlertQuery, max_chars: int | None) -> tuple[list[Row], bool]:
    base = filters(query)
    # Matchers or a text the indexes cannot narrow to a few episodes: the listing walks the
    # alerts newest first, testing each row, until the page is full (matching ones are common).
    # PostgreSQL estimates a JSON test at 0.5 % of the rows, so two of them at a handful, and
    # then plans a parallel sequential scan of the table and a sort (1.25 s at 1,000,000
    # alerts, for a page the walk fills after ~1,000 rows): sequential scans are off for it
    # (10 ms; 2 ms without parallel workers).
    walk = False
    if query.matchers or query.text:
        found = await candidates(conn, query)
        if found is not None:
            if not found:  # no stored episode can match: nothing to read
                return [], False
            base.where.append(f"id = ANY({base.arg(found)}::bigint[])")
        walk = found is None
    if query.sort != "attention":
        sql = base.copy()
        if query.status:
            sql.where.append(f"status = {sql.arg(query.status)}")
        if query.before_id is not None:
            sql.where.append(f"id < {sql.arg(query.before_id)}")
        rows, full, _ = await fetch(conn, sql, "id DESC", query.limit, max_chars, None, walk)
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
                                     f"{_RESOLVED_RANK}, {_SEVERITY_RANK}", walk)  # fmt: skip
        return out + more, full
    return out, False


#: For this transaction: no sequential scan, no parallel plan.
_WALK = (
    "SELECT set_config('enable_seqscan', 'off', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)"
)


async def fetch(conn: Conn, sql: Sql, order: str, limit: int, max_chars: int | None,
                 ranks: str | None, walk: bool = False) -> tuple[list[Row], bool, int]:  # fmt: skip
    """The rows of `sql` in `order`, up to `limit` or `max_chars` of text. walk: read in the
    order's index, never a sequential scan (see select)."""
    extra = f", {ranks}" if ranks else ""
    text = f"SELECT {COLUMNS}{extra} FROM alerts"  # noqa: S608 - fixed fragments, values bound
    if sql.where:
        text += " WHERE " + " AND ".join(sql.where)
    text += f" ORDER BY {order} LIMIT {sql.arg(limit)}"
    out: list[Row] = []
    chars = 0
    count = COLUMNS.count(",") + 1
    async with conn.transaction():
        if walk:  # (one walk: parallel workers take longer to start than it to read a page)
            await conn.execute(_WALK)
        async for row in conn.cursor(text, *sql.args):
            alert = row_to_alert(list(row.values())[:count])
            cursor = f"a{row[count]}.{row[count + 1]}.{alert.id}" if ranks else str(alert.id)
            out.append((alert, cursor))
            chars += len(row["labels"]) + len(row["annotations"]) + len(row["generator_url"])
            chars += len(row["ack_comment"] or "")
            if max_chars is not None and chars >= max_chars:
                return out, True, chars
    return out, False, chars


# --- the facade's reads ---------------------------------------------------------------------


async def get_alerts(conn: Conn, ids: Sequence[int]) -> list[StoredAlert]:
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM alerts WHERE id = ANY($1::bigint[])",  # noqa: S608
                            list(ids))  # fmt: skip
    found = {a.id: a for a in map(row_to_alert, rows)}
    return [found[i] for i in ids if i in found]


async def alert_detail(conn: Conn, alert_id: int) -> AlertDetail:
    """The alert and its trail, the trail cut at PAGE_CHARS of text."""
    alert = await get(conn, alert_id)
    budget, trail, truncated = PAGE_CHARS, [], False
    async with conn.transaction():
        async for row in conn.cursor(EVENT + " WHERE alert_id = $1 ORDER BY id", alert_id):
            if budget <= 0:
                truncated = True
                break
            trail.append(Event(*row))
            budget -= len(row[4]) + len(row[5]) + 64
    return AlertDetail(alert, trail, truncated)


async def events(conn: Conn, alert_id: int) -> list[Event]:
    return [Event(*r) for r in await conn.fetch(EVENT + " WHERE alert_id = $1 ORDER BY id",
                                                alert_id)]  # fmt: skip


async def events_after(conn: Conn, after_id: int, limit: int) -> list[Event]:
    rows = await conn.fetch(EVENT + " WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit)
    return [Event(*r) for r in rows]


async def counts(conn: Conn) -> AlertCounts:
    # The firing ones by their index; the resolved (nearly all) by the counts the triggers
    # keep (schema migration 5): no scan of every alert at every scrape.
    firing = await conn.fetch(
        "SELECT CASE WHEN acked_at IS NULL THEN 'firing' ELSE 'acknowledged' END,"
        " severity, CASE am_state WHEN 'suppressed' THEN 'suppressed' ELSE 'active'"
        " END, count(*) FROM alerts WHERE status = 'firing' GROUP BY 1, 2, 3"
    )
    resolved = await conn.fetch(
        "SELECT severity, sum(count) FROM resolved_counts GROUP BY severity HAVING sum(count) > 0"
    )
    by_state: dict[tuple[str, str], int] = {("resolved", v): int(n) for v, n in resolved}
    for state, severity, _, n in firing:
        by_state[(state, severity)] = by_state.get((state, severity), 0) + n
    return AlertCounts(by_state, {(s, v, m): n for s, v, m, n in firing})


async def where(conn: Conn, condition: str, *args: object) -> list[StoredAlert]:
    """The alerts meeting a constant SQL condition (firing of a source, silence work)."""
    sql = f"SELECT {COLUMNS} FROM alerts WHERE {condition}"  # noqa: S608 - constant text
    return [row_to_alert(r) for r in await conn.fetch(sql, *args)]


async def by_key(conn: Conn, keys: Sequence[EpisodeKey], column: str) -> dict[EpisodeKey, Any]:
    rows = await conn.fetch(
        f"SELECT a.fingerprint, a.starts_at, a.{column} FROM alerts a"  # noqa: S608
        " JOIN unnest($1::text[], $2::bigint[]) AS k(fp, st)"
        " ON a.fingerprint = k.fp AND a.starts_at = k.st",
        [k[0] for k in keys], [k[1] for k in keys],
    )  # fmt: skip
    return {(fp, st): value for fp, st, value in rows}


async def rule_versions(conn: Conn, version: int | None, limit: int) -> list[RuleVersion]:
    sql = f"SELECT {RULE_VERSION_COLUMNS} FROM rule_versions"  # noqa: S608 - constant text
    if version is not None:
        rows = await conn.fetch(sql + " WHERE version = $1", version)
    else:
        rows = await conn.fetch(sql + " ORDER BY version DESC LIMIT $1", limit)
    return [rule_version(r) for r in rows]


async def dump(conn: Conn, table: str, after: tuple[Any, ...] | None,
               limit: int) -> list[tuple[Any, ...]]:  # fmt: skip
    columns, key = TABLES[table]
    sql = f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608 - names from TABLES
    args: list[Any] = list(after or ())
    if after is not None:
        marks = ", ".join(f"${n + 1}" for n in range(len(key)))
        sql += f" WHERE ({', '.join(key)}) > ({marks})"
    sql += f" ORDER BY {', '.join(key)} LIMIT {int(limit)}"
    return [tuple(r) for r in await conn.fetch(sql, *args)]


async def count(conn: Conn, what: str, since: int | None, until: int | None) -> int:
    table, column = {"alerts": ("alerts", "starts_at"), "events": ("events", "at")}[what]
    sql = (f"SELECT count(*) FROM {table} WHERE ($1::bigint IS NULL OR {column} >= $1)"  # noqa: S608
           f" AND ($2::bigint IS NULL OR {column} < $2)")  # fmt: skip
    return int(await conn.fetchval(sql, since, until))
