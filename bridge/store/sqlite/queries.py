"""Reads: every query of the SQLite store, one implementation each."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from bridge.core.errors import NotFound
from bridge.core.matchers import Matcher
from bridge.core.rulebook import RuleVersion
from bridge.store.labelindex import MAX_EPISODES, lookup, resolve
from bridge.store.records import (
    DEFAULT_RETENTION_DAYS,
    PAGE_CHARS,
    AlertCounts,
    AlertDetail,
    AlertQuery,
    EpisodeKey,
    Event,
    FeedEntry,
    Page,
    StoredAlert,
)
from bridge.store.rows import (
    ANNOTATIONS as _ANNOTATIONS,
)
from bridge.store.rows import COLUMN_COUNT as _COLUMN_COUNT
from bridge.store.rows import COLUMNS, TABLES, row_to_alert, rule_version
from bridge.store.rows import COMMENT as _COMMENT
from bridge.store.rows import LABELS as _LABELS
from bridge.store.rows import URL as _URL
from bridge.store.sql import RULE_VERSION_COLUMNS, candidates_sql, values_test
from bridge.store.sqlite.schema import ATTENTION_RANK, SEVERITY_RANK
from bridge.store.textindex import (
    DENSE_HITS,
    DENSE_WINDOW,
    MIN_CHARS,
    RARE,
    fts_phrase,
    like_pattern,
    trigrams,
    verbatim_in_json,
)

_EVENT_ACTOR, _EVENT_DETAIL = 4, 5  # of _EVENT_SELECT


def get_alert(conn: sqlite3.Connection, alert_id: int) -> StoredAlert:
    sql = f"SELECT {COLUMNS} FROM alerts WHERE id = ?"  # noqa: S608 - a constant column list
    row = conn.execute(sql, (alert_id,)).fetchone()
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    return row_to_alert(row)


def silence_work(conn: sqlite3.Connection) -> list[StoredAlert]:
    """Alerts whose silence needs an action: pending, expiring, or active and still firing."""
    sql = (
        f"SELECT {COLUMNS} FROM alerts"  # noqa: S608 - a constant column list
        " WHERE silence_state IN ('pending', 'expiring', 'active')"
    )
    return [row_to_alert(r) for r in conn.execute(sql)]


def firing(conn: sqlite3.Connection, source: str) -> list[StoredAlert]:
    """Stored firing episodes of one source (the reconciler compares Alertmanager's, the
    embedded evaluator takes its own up again at start)."""
    sql = f"SELECT {COLUMNS} FROM alerts WHERE status = 'firing' AND source = ?"  # noqa: S608
    return [row_to_alert(r) for r in conn.execute(sql, (source,))]


def episode_ids(conn: sqlite3.Connection, keys: Sequence[EpisodeKey]) -> dict[EpisodeKey, int]:
    """The ids of the stored episodes among `keys` (fingerprint, starts_at)."""
    rows = conn.execute(
        "SELECT a.fingerprint, a.starts_at, a.id FROM json_each(?) AS j JOIN alerts AS a"
        " ON a.fingerprint = j.value ->> 0 AND a.starts_at = j.value ->> 1",
        (orjson.dumps(list(keys)).decode(),),
    )
    return {(fp, starts): alert_id for fp, starts, alert_id in rows}


def episode_states(
    conn: sqlite3.Connection, keys: Sequence[EpisodeKey]
) -> dict[EpisodeKey, str | None]:
    """The resolution (None while firing) of the stored episodes among `keys`."""
    rows = conn.execute(
        "SELECT a.fingerprint, a.starts_at, a.resolution FROM json_each(?) AS j JOIN alerts"
        " AS a ON a.fingerprint = j.value ->> 0 AND a.starts_at = j.value ->> 1",
        (orjson.dumps(list(keys)).decode(),),
    )
    return {(fp, starts): resolution for fp, starts, resolution in rows}


def get_retention(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'retention_days'").fetchone()
    return int(row[0]) if row else DEFAULT_RETENTION_DAYS


#: SQL: how much a firing alert needs attention, 0 most, and its severity's rank, 0 critical.
_RANK = ATTENTION_RANK
_SEVERITY_RANK = SEVERITY_RANK
_RESOLVED_RANK = 3


def list_page(conn: sqlite3.Connection, query: AlertQuery, max_chars: int | None = None) -> Page:
    """Up to query.limit alerts, fewer when their text passes `max_chars` (default PAGE_CHARS;
    at least one alert a page)."""
    rows, full = _select_alerts(conn, query, PAGE_CHARS if max_chars is None else max_chars)
    more = full or len(rows) == query.limit
    return Page([alert for alert, _ in rows], rows[-1][1] if rows and more else None)


def list_alerts(conn: sqlite3.Connection, query: AlertQuery) -> list[StoredAlert]:
    """Alerts matching the query, in its order."""
    return [alert for alert, _ in _select_alerts(conn, query, None)[0]]


def _filters(query: AlertQuery) -> tuple[list[str], list[object]]:
    """WHERE terms and their values for the query's filters (not its status or cursor)."""
    where: list[str] = []
    args: list[object] = []
    if query.severities:
        where.append(f"severity IN ({','.join('?' * len(query.severities))})")
        args.extend(query.severities)
    if query.rule:
        where.append("alertname = ?")
        args.append(query.rule)
    if query.since is not None:
        where.append("starts_at >= ?")
        args.append(query.since)
    if query.until is not None:
        where.append("starts_at < ?")
        args.append(query.until)
    if query.acknowledged is not None:
        where.append("acked_at IS NOT NULL" if query.acknowledged else "acked_at IS NULL")
    if query.am_state == "suppressed":
        where.append("status = 'firing' AND am_state = 'suppressed'")
    elif query.am_state == "active":
        where.append("status = 'firing' AND coalesce(am_state, '') != 'suppressed'")
    if query.text:
        # Case-insensitive (ASCII) substring of the summary, the description or a note.
        like = like_pattern(query.text)
        where.append(
            "(json_extract(annotations, '$.summary') LIKE ? ESCAPE '\\'"
            " OR json_extract(annotations, '$.description') LIKE ? ESCAPE '\\'"
            " OR EXISTS (SELECT 1 FROM events n WHERE n.alert_id = alerts.id"
            " AND n.kind = 'note' AND n.detail LIKE ? ESCAPE '\\'))"
        )
        args.extend([like, like, like])
    for m in query.matchers:
        # The name is any UTF-8 (Alertmanager 0.27): bound, never in the SQL text. SQLite's
        # JSON paths have no escape for a quote: a name holding one is looked up by key.
        if '"' in m.name:
            value = "coalesce((SELECT j.value FROM json_each(labels) AS j WHERE j.key = ?), '')"
            name = m.name
        else:
            value, name = "coalesce(json_extract(labels, ?), '')", f'$."{m.name}"'
        if m.op in ("=", "!="):
            where.append(f"{value} {m.op} ?")
            args.extend([name, m.value])
        else:
            where.append(f"{'NOT ' if m.op == '!~' else ''}regexp(?, {value})")
            args.extend([m.value, name])
    return where, args


def label_candidates(conn: sqlite3.Connection, matchers: Sequence[Matcher]) -> list[int] | None:
    """The ids of the episodes whose labels can match, from the label index (none: an empty
    list), or None when they are more than labelindex.MAX_EPISODES or every series can match
    (the listing then reads in its own order)."""
    values: dict[Matcher, list[tuple[int, str]]] = {}
    for m in matchers:
        how, what = lookup(m)
        if how == "scan":
            test = values_test(m, bool(what), "?", "regexp({}, value)")
            rows = conn.execute(
                f"SELECT id, value FROM label_values WHERE name = ? AND {test}",  # noqa: S608
                (m.name, m.value),
            )
        else:
            rows = conn.execute(
                "SELECT id, value FROM label_values WHERE key IN (SELECT value FROM json_each(?))",
                (orjson.dumps(what).decode(),),
            )
        values[m] = rows.fetchall()
    resolved = resolve(matchers, values)
    if resolved.nothing:
        return []
    args: list[object] = []

    def ids(group: Sequence[int]) -> str:
        args.append(orjson.dumps(group).decode())
        return "SELECT value FROM json_each(?)"

    sql = candidates_sql(resolved, ids)
    if sql is None:
        return None
    # One JSON array, not a row per id (20,000 rows cost Python a tuple each).
    text = f"SELECT json_group_array(id) FROM ({sql} LIMIT ?)"  # noqa: S608 - built of constants
    found: list[int] = orjson.loads(conn.execute(text, [*args, MAX_EPISODES + 1]).fetchone()[0])
    return None if len(found) > MAX_EPISODES else found


def text_candidates(conn: sqlite3.Connection, text: str) -> list[int] | None:
    """The ids of the episodes whose summary, description or a note can hold `text`: the
    resolved from the free-text index (bridge.store.textindex: those holding its rare
    trigrams, or the whole text when none is rare), the firing tested one by one; or None
    when they are more than MAX_EPISODES or the text is shorter than a trigram."""
    if len(text) < MIN_CHARS:
        return None
    like = like_pattern(text)
    newest = conn.execute(
        "SELECT count(*) FROM (SELECT 1 FROM (SELECT annotations FROM alerts ORDER BY id DESC"
        " LIMIT ?2) WHERE json_extract(annotations, '$.summary') LIKE ?1 ESCAPE '\\'"
        " OR json_extract(annotations, '$.description') LIKE ?1 ESCAPE '\\' LIMIT ?3)",
        (like, DENSE_WINDOW, DENSE_HITS),
    ).fetchone()[0]
    if newest >= DENSE_HITS:  # dense: read in order
        return None
    probe = "SELECT count(*) FROM (SELECT 1 FROM alert_text WHERE alert_text MATCH ? LIMIT ?)"
    rare = [g for g in trigrams(text)
            if conn.execute(probe, (fts_phrase(g), RARE)).fetchone()[0] < RARE]  # fmt: skip
    search = " AND ".join(fts_phrase(g) for g in rare) if rare else fts_phrase(text)
    # UNION ALL, not UNION: a UNION reads every match first (to drop duplicates; 390 ms for
    # a text every alert holds at 1,000,000), UNION ALL stops at the LIMIT.
    # The resolved episodes from the index, the firing ones (not in it) tested here: by
    # their raw JSON when the text is written verbatim there (no parse of each row's JSON:
    # a third of the time), else by the two texts.
    firing = (
        "annotations LIKE ?2 ESCAPE '\\'" if verbatim_in_json(text)
        else "(json_extract(annotations, '$.summary') LIKE ?2 ESCAPE '\\'"
             " OR json_extract(annotations, '$.description') LIKE ?2 ESCAPE '\\')"
    )  # fmt: skip
    found: list[int] = orjson.loads(
        conn.execute(
            "SELECT json_group_array(id) FROM (SELECT rowid AS id FROM alert_text"  # noqa: S608
            f" WHERE alert_text MATCH ?1 UNION ALL SELECT id FROM alerts WHERE status = 'firing'"
            f" AND {firing} UNION ALL SELECT alert_id FROM events"
            " WHERE kind = 'note' AND detail LIKE ?2 ESCAPE '\\' LIMIT ?3)",
            (search, like, MAX_EPISODES + 1),
        ).fetchone()[0]
    )
    return None if len(found) > MAX_EPISODES else sorted(set(found))


def candidates(conn: sqlite3.Connection, query: AlertQuery) -> list[int] | None:
    """The episodes the query's matchers and text can match, from the indexes (both: those
    both name), or None when neither narrows it to MAX_EPISODES or fewer."""
    found = label_candidates(conn, query.matchers) if query.matchers else None
    if query.text and found != []:
        texts = text_candidates(conn, query.text)
        if texts is not None:
            found = texts if found is None else sorted(set(found).intersection(texts))
    return found


Row = tuple[StoredAlert, str]  # an alert and the cursor that continues after it


def _select_alerts(
    conn: sqlite3.Connection, query: AlertQuery, max_chars: int | None
) -> tuple[list[Row], bool]:
    """The alerts of a page with their cursors, and whether it stopped at max_chars."""
    where, args = _filters(query)
    found = candidates(conn, query) if query.matchers or query.text else None
    if found is not None:
        if not found:  # no stored episode can match: nothing to read
            return [], False
        where.append("id IN (SELECT value FROM json_each(?))")
        args.append(orjson.dumps(found).decode())
    if query.sort != "attention":
        if query.status:
            where.append("status = ?")
            args.append(query.status)
        if query.before_id is not None:
            where.append("id < ?")
            args.append(query.before_id)
        rows, full, _ = _fetch(conn, where, args, "id DESC", query.limit, max_chars, None)
        return rows, full
    rank, severity, last_id = query.after or (-1, -1, 0)
    out: list[Row] = []
    if query.status in (None, "firing") and rank < _RESOLVED_RANK:
        # Firing alerts are few (an index on status finds them): sorted by attention in SQL.
        firing = [*where, "status = 'firing'"]
        cursor_args = []
        if query.after is not None:
            firing.append(f"({_RANK}, {_SEVERITY_RANK}, -id) > (?, ?, ?)")
            cursor_args = [rank, severity, -last_id]
        out, full, used = _fetch(conn, firing, [*args, *cursor_args],
                                 f"{_RANK}, {_SEVERITY_RANK}, id DESC", query.limit, max_chars,
                                 f"{_RANK}, {_SEVERITY_RANK}")  # fmt: skip
        if full or len(out) == query.limit:
            return out, full
        max_chars = None if max_chars is None else max_chars - used
    if query.status in (None, "resolved") and query.am_state is None:
        resolved = [*where, "status = 'resolved'"]
        if rank == _RESOLVED_RANK:
            resolved.append("id < ?")
            args = [*args, last_id]
        more, full, _ = _fetch(conn, resolved, args, "id DESC", query.limit - len(out),
                               max_chars, f"{_RESOLVED_RANK}, {_SEVERITY_RANK}")  # fmt: skip
        return out + more, full
    return out, False


def _fetch(
    conn: sqlite3.Connection,
    where: list[str],
    args: list[object],
    order: str,
    limit: int,
    max_chars: int | None,
    ranks: str | None,
) -> tuple[list[Row], bool, int]:
    """Rows in `order`, each with its cursor (the id, or with `ranks` SQL the attention key);
    whether they stopped at max_chars; the characters of text they hold."""
    extra = f", {ranks}" if ranks else ""
    sql = f"SELECT {COLUMNS}{extra} FROM alerts"  # noqa: S608 - fixed fragments, values bound
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order} LIMIT ?"
    out: list[Row] = []
    chars = 0
    for row in conn.execute(sql, [*args, limit]):  # stepped one by one, not fetched at once
        alert = row_to_alert(row[:_COLUMN_COUNT])
        cursor = f"a{row[-2]}.{row[-1]}.{alert.id}" if ranks else str(alert.id)
        out.append((alert, cursor))
        chars += len(row[_LABELS]) + len(row[_ANNOTATIONS]) + len(row[_URL])
        chars += len(row[_COMMENT] or "")
        if max_chars is not None and chars >= max_chars:
            return out, True, chars
    return out, False, chars


_EVENT_SELECT = "SELECT id, alert_id, at, kind, actor, detail FROM events"


def get_events(conn: sqlite3.Connection, alert_id: int) -> list[Event]:
    rows = conn.execute(_EVENT_SELECT + " WHERE alert_id = ? ORDER BY id", (alert_id,))
    return [Event(*r) for r in rows]


def alert_detail(
    conn: sqlite3.Connection, alert_id: int, max_chars: int | None = None
) -> AlertDetail:
    """One alert with its audit trail, oldest event first. The trail stops once its text
    passes `max_chars` (default PAGE_CHARS), with `events_truncated`."""
    budget = PAGE_CHARS if max_chars is None else max_chars
    alert = get_alert(conn, alert_id)
    events: list[Event] = []
    truncated = False
    rows = conn.execute(_EVENT_SELECT + " WHERE alert_id = ? ORDER BY id", (alert_id,))
    for row in rows:  # stepped one by one: a trail of any length takes bounded memory
        if budget <= 0:
            truncated = True
            break
        events.append(Event(*row))
        budget -= len(row[_EVENT_ACTOR]) + len(row[_EVENT_DETAIL]) + 64
    return AlertDetail(alert, events, truncated)


def events_after(conn: sqlite3.Connection, after_id: int, limit: int) -> list[Event]:
    """The feed: events with id > after_id in id order. SQLite's single writer gives ids in
    commit order, so an event a reader has seen is never followed by a smaller id."""
    rows = conn.execute(_EVENT_SELECT + " WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
    return [Event(*r) for r in rows]


def _rfc3339(column: str) -> str:
    """SQL for bridge.core.times.format_time of an ns column (not NULL, not negative)."""
    frac = f"{column} % 1000000000"
    return (f"strftime('%Y-%m-%dT%H:%M:%S', {column} / 1000000000, 'unixepoch')"
            f" || CASE WHEN {frac} = 0 THEN ''"
            f" ELSE '.' || rtrim(printf('%09d', {frac}), '0') END || 'Z'")  # fmt: skip


#: The feed for live watchers: each event with its alert's summary as JSON text built by
#: SQLite (records.feed_data is the shape), and what watchers filter on.
_FEED_SELECT = f"""
SELECT e.id, e.alert_id, e.kind, a.status, a.severity, a.alertname, a.acked_at IS NOT NULL,
       a.labels,
       json_object('id', e.id, 'at', {_rfc3339("e.at")}, 'kind', e.kind, 'actor', e.actor,
                   'detail', e.detail, 'alert_id', e.alert_id,
                   'alert', CASE WHEN a.id IS NULL THEN NULL ELSE json_object(
                       'id', a.id, 'alertname', a.alertname, 'severity', a.severity,
                       'status', a.status,
                       'state', CASE WHEN a.status = 'resolved' THEN 'resolved'
                                     WHEN a.acked_at IS NOT NULL THEN 'acknowledged'
                                     ELSE 'firing' END,
                       'labels', json(a.labels),
                       'summary', coalesce(json_extract(a.annotations, '$.summary'), ''),
                       'acked_by', a.acked_by, 'assignee', a.assignee,
                       'am_state', a.am_state, 'silence_state', a.silence_state) END)
FROM events e LEFT JOIN alerts a ON a.id = e.alert_id
WHERE e.id > ? ORDER BY e.id LIMIT ?
"""  # noqa: S608 - constant SQL


def feed_after(conn: sqlite3.Connection, after_id: int, limit: int) -> list[FeedEntry]:
    """events_after, as FeedEntry rows (one statement, the JSON made in C)."""
    return [FeedEntry(i, a, k, st, sev, name, bool(acked), labels, data)
            for i, a, k, st, sev, name, acked, labels, data
            in conn.execute(_FEED_SELECT, (after_id, limit))]  # fmt: skip


def last_event_id(conn: sqlite3.Connection) -> int:
    last: int | None = conn.execute("SELECT max(id) FROM events").fetchone()[0]
    return last or 0


def get_alerts(conn: sqlite3.Connection, ids: Sequence[int]) -> list[StoredAlert]:
    """The alerts of these ids that exist, in the order given."""
    sql = f"SELECT {COLUMNS} FROM alerts WHERE id IN (SELECT value FROM json_each(?))"  # noqa: S608
    found = {
        a.id: a for a in map(row_to_alert, conn.execute(sql, (orjson.dumps(list(ids)).decode(),)))
    }
    return [found[i] for i in ids if i in found]


def _firing_counts(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
    """(state, severity, am_state) -> number of firing alerts (firing or acknowledged), by
    whether Alertmanager mutes them (suppressed) or not (active; local alerts, and those no
    reconcile round has seen yet, count as active). Walks the firing rows only."""
    rows = conn.execute(
        "SELECT CASE WHEN acked_at IS NULL THEN 'firing' ELSE 'acknowledged' END, severity,"
        " CASE am_state WHEN 'suppressed' THEN 'suppressed' ELSE 'active' END, count(*)"
        " FROM alerts WHERE status = 'firing' GROUP BY 1, 2, 3"
    )
    return {(state, severity, am): count for state, severity, am, count in rows}


def _state_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """(state, severity) -> number of stored alerts (kept by triggers: no table scan)."""
    rows = conn.execute("SELECT state, severity, count FROM alert_counts WHERE count > 0")
    return {(state, severity): count for state, severity, count in rows}


def counts(conn: sqlite3.Connection) -> AlertCounts:
    return AlertCounts(_state_counts(conn), _firing_counts(conn))


def meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def alertmanagers(conn: sqlite3.Connection) -> list[str] | None:
    raw = meta(conn, "alertmanagers")
    return None if raw is None else list(orjson.loads(raw))


def cursor(conn: sqlite3.Connection, consumer: str) -> int | None:
    raw = meta(conn, f"cursor:{consumer}")
    return None if raw is None else int(raw)


def label_sets(conn: sqlite3.Connection) -> list[dict[str, str]]:
    """Every distinct label set stored (a few hundred where Alertmanager sends the alerts: an
    alert's episodes share one)."""
    return [orjson.loads(r[0]) for r in conn.execute("SELECT DISTINCT labels FROM alerts")]


def people(conn: sqlite3.Connection) -> frozenset[str]:
    """Everyone named in the database: actors who are not the system, assignees (kept in a
    table of their own as they act: no scan of the events)."""
    return frozenset(r[0] for r in conn.execute("SELECT name FROM people") if r[0])


def count(conn: sqlite3.Connection, what: str, since: int | None, until: int | None) -> int:
    """How many alerts (by starts_at) or events (by at) lie in [since, until)."""
    table, column = {"alerts": ("alerts", "starts_at"), "events": ("events", "at")}[what]
    where, args = [], []
    if since is not None:
        where.append(f"{column} >= ?")
        args.append(since)
    if until is not None:
        where.append(f"{column} < ?")
        args.append(until)
    sql = f"SELECT count(*) FROM {table}" + (f" WHERE {' AND '.join(where)}" if where else "")  # noqa: S608
    total: int = conn.execute(sql, args).fetchone()[0]
    return total


def dump(
    conn: sqlite3.Connection, table: str, after: tuple[Any, ...] | None, limit: int
) -> list[tuple[Any, ...]]:
    """Rows of a TABLES table after a key, in key order."""
    columns, key = TABLES[table]
    sql = f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608 - names from TABLES
    args: list[Any] = []
    if after is not None:
        sql += f" WHERE ({', '.join(key)}) > ({', '.join('?' * len(key))})"
        args += list(after)
    sql += f" ORDER BY {', '.join(key)} LIMIT ?"
    return [tuple(r) for r in conn.execute(sql, [*args, limit])]


def rule_versions(conn: sqlite3.Connection, version: int | None, limit: int) -> list[RuleVersion]:
    """Version `version` (None: the latest `limit`, newest first)."""
    sql = f"SELECT {RULE_VERSION_COLUMNS} FROM rule_versions"  # noqa: S608 - constant text
    if version is not None:
        rows = conn.execute(sql + " WHERE version = ?", (version,)).fetchall()
    else:
        rows = conn.execute(sql + " ORDER BY version DESC LIMIT ?", (limit,)).fetchall()
    return [rule_version(r) for r in rows]


def lease_holder(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])
