"""Alert storage on SQLite: schema migrations, connections, stored rows and reads.

Every write is a *job*: a function of a connection run inside a transaction, either directly
(`Store.run`, for the CLI) or through the group-commit writer (`writer`). The jobs live in
`bridge.ingest.episodes` (ingesting notifications) and `actions` (acks, notes, silences,
retention), so the rules live in one place whoever writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from bridge.core.errors import NotFound, QueryTimeout, StoreError
from bridge.core.matchers import Matcher, regex_matches
from bridge.core.times import format_time

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]


def _state_of(row: str) -> str:
    """SQL: the state of an alerts row (`row` is "NEW.", "OLD." or "" for the table's own)."""
    return (
        f"CASE WHEN {row}status = 'resolved' THEN 'resolved'"
        f" WHEN {row}acked_at IS NOT NULL THEN 'acknowledged' ELSE 'firing' END"
    )


# Trigger bodies of migration 3: take the old row out of its count, add the new row to its own.
_UNCOUNT_OLD = (
    "UPDATE alert_counts SET count = count - 1"  # noqa: S608 - constants
    f" WHERE state = {_state_of('OLD.')} AND severity = OLD.severity;"
)
_COUNT_NEW = (
    "INSERT INTO alert_counts (state, severity, count)"  # noqa: S608 - constants
    f" VALUES ({_state_of('NEW.')}, NEW.severity, 1)"
    " ON CONFLICT (state, severity) DO UPDATE SET count = count + 1;"
)

MIGRATIONS: tuple[str, ...] = (
    # 1: alerts (one row per episode), events (the audit trail), meta (persisted settings)
    """
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        starts_at INTEGER NOT NULL,
        ends_at INTEGER,
        status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
        alertname TEXT NOT NULL,
        severity TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        generator_url TEXT NOT NULL,
        source TEXT NOT NULL,
        first_received_at INTEGER NOT NULL,
        last_received_at INTEGER NOT NULL,
        receive_count INTEGER NOT NULL,
        acked_at INTEGER,
        acked_by TEXT,
        ack_comment TEXT,
        assignee TEXT,
        silence_id TEXT,
        updated_at INTEGER NOT NULL,
        UNIQUE (fingerprint, starts_at)
    );
    CREATE INDEX alerts_status ON alerts (status, id);
    CREATE INDEX alerts_alertname ON alerts (alertname, id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_alert ON events (alert_id, id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: the Alertmanager silence behind an acknowledgement
    #    silence_state: NULL (none), pending (to create), active, expiring (to expire), expired
    """
    ALTER TABLE alerts ADD COLUMN silence_state TEXT;
    ALTER TABLE alerts ADD COLUMN silenced_until INTEGER;
    CREATE INDEX alerts_silence_state ON alerts (silence_state) WHERE silence_state IS NOT NULL;
    """,
    # 3: counts by (state, severity) kept by triggers in the writing transaction, so that
    #    metrics and status read a handful of rows instead of scanning every alert
    f"""
    CREATE TABLE alert_counts (
        state TEXT NOT NULL,
        severity TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (state, severity)
    ) WITHOUT ROWID;
    INSERT INTO alert_counts (state, severity, count)
        SELECT {_state_of("")}, severity, count(*) FROM alerts GROUP BY 1, 2;
    CREATE TRIGGER alerts_count_insert AFTER INSERT ON alerts BEGIN {_COUNT_NEW} END;
    CREATE TRIGGER alerts_count_delete AFTER DELETE ON alerts BEGIN {_UNCOUNT_OLD} END;
    CREATE TRIGGER alerts_count_update AFTER UPDATE OF status, acked_at, severity ON alerts
        BEGIN {_UNCOUNT_OLD} {_COUNT_NEW} END;
    """,  # noqa: S608 - constants
    # 4: inserts are counted by the ingest job, one upsert per state and severity, instead of
    #    by a trigger running once per inserted row
    """
    DROP TRIGGER alerts_count_insert;
    """,
    # 5: how an episode ended, and Alertmanager's view of a firing one.
    #    resolution: alertmanager (a resolved notification: final), local (the embedded
    #    evaluator: final), inferred (the reconciler: provisional), manual (an operator:
    #    provisional for Alertmanager's alerts), restart (the embedded evaluator found the
    #    condition gone at start). A provisional resolution is reopened by a later firing
    #    delivery of the same episode.
    #    am_state: active | suppressed | unprocessed at the last reconcile round that saw it;
    #    am_silenced_by: JSON list of silence ids; am_inhibited_by: JSON list of
    #    {"fingerprint", "alert_id"} of the inhibiting alerts.
    """
    ALTER TABLE alerts ADD COLUMN resolution TEXT;
    ALTER TABLE alerts ADD COLUMN am_state TEXT;
    ALTER TABLE alerts ADD COLUMN am_silenced_by TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE alerts ADD COLUMN am_inhibited_by TEXT NOT NULL DEFAULT '[]';
    UPDATE alerts SET resolution = CASE source WHEN 'local' THEN 'local' ELSE 'alertmanager' END
        WHERE status = 'resolved';
    UPDATE alerts SET resolution = 'inferred' WHERE status = 'resolved' AND id IN
        (SELECT alert_id FROM events WHERE kind = 'resolved' AND actor = 'reconciler');
    """,
    # 6: for exports, without reading every event: notes by alert (their counts; a partial
    #    index: the other events, most of them, cost nothing to insert), and the people named
    #    anywhere (actors who are not the system, assignees), whom anonymisation scrubs
    """
    CREATE INDEX events_notes ON events (alert_id, at) WHERE kind = 'note';
    CREATE TABLE people (name TEXT PRIMARY KEY) WITHOUT ROWID;
    INSERT OR IGNORE INTO people SELECT actor FROM events
        WHERE actor NOT IN ('alertbridge', 'alertmanager', 'evaluator', 'local', 'reconciler');
    INSERT OR IGNORE INTO people SELECT detail FROM events WHERE kind = 'assigned' AND detail != '';
    INSERT OR IGNORE INTO people SELECT assignee FROM alerts WHERE assignee IS NOT NULL;
    INSERT OR IGNORE INTO people SELECT acked_by FROM alerts WHERE acked_by IS NOT NULL;
    """,
)

#: Actors that are parts of the system, not people (exports keep them readable).
SYSTEM_ACTORS = frozenset({"alertmanager", "local", "reconciler", "alertbridge", "evaluator"})
DEFAULT_RETENTION_DAYS = 90
_PROGRESS_STEPS = 1000  # SQLite VM steps between checks of a read's budget
_READ_TURN = 0.001  # seconds a long read runs before it pauses as long (see _ReadBudget)
MAX_TEXT = 10_000


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
            "starts_at": format_time(self.starts_at),
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


COLUMNS = (
    "id, fingerprint, status, alertname, severity, labels, annotations, generator_url, source, "
    "starts_at, ends_at, first_received_at, last_received_at, receive_count, acked_at, acked_by, "
    "ack_comment, assignee, silence_id, updated_at, silence_state, silenced_until, resolution, "
    "am_state, am_silenced_by, am_inhibited_by"
)


_COLUMN_COUNT = COLUMNS.count(",") + 1


def row_to_alert(row: Sequence[Any]) -> StoredAlert:
    values = list(row)
    values[5] = orjson.loads(values[5])
    values[6] = orjson.loads(values[6])
    values[24] = tuple(orjson.loads(values[24]))
    values[25] = tuple((i["fingerprint"], i["alert_id"]) for i in orjson.loads(values[25]))
    return StoredAlert(*values)


def read_only_uri(path: str | Path) -> str:
    """The URI that opens a database for reading only. In a directory where SQLite cannot
    create the WAL's shared-memory file it can still read a database with no WAL content
    left (shut down cleanly), as immutable; one with WAL content there cannot be read."""
    name = str(path)
    uri = f"file:{urllib.parse.quote(os.path.abspath(name))}?mode=ro"
    shm, wal = Path(name + "-shm"), Path(name + "-wal")
    if shm.exists() or os.access(os.path.dirname(os.path.abspath(name)) or ".", os.W_OK):
        return uri
    if wal.exists() and wal.stat().st_size > 0:
        raise StoreError(
            f"cannot read {name}: its write-ahead log holds data and the directory is not"
            " writable (SQLite needs the -shm file there); stop the server or copy the files"
        )
    return uri + "&immutable=1"


def connect(
    path: str | Path, busy_timeout_ms: int = 5000, read_only: bool = False
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL;
    read_only: opened with mode=ro (nothing written, not even the journal mode)."""
    target, uri = (read_only_uri(path), True) if read_only else (str(path), False)
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, uri=uri)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if not read_only:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.create_function("regexp", 2, regex_matches, deterministic=True)
    return conn


def _check_version(conn: sqlite3.Connection, path: str) -> None:
    """A database opened read-only cannot be migrated: it must be at this schema already."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(f"database schema v{version} is newer than this alertbridge")
    if version < len(MIGRATIONS):
        raise StoreError(
            f"{path}: database schema v{version} is older than this alertbridge's"
            f" (v{len(MIGRATIONS)}) and cannot be upgraded read-only; open it once with write"
            " access (serve, or any alert command)"
        )


def migrate(conn: sqlite3.Connection) -> int:
    """Apply numbered migrations above PRAGMA user_version; returns the schema version."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            f"database schema v{version} is newer than this alertbridge (v{len(MIGRATIONS)})"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # One script per migration, in one transaction: a failure leaves the schema as it was.
        try:
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


# --- jobs: functions of a connection, run inside a transaction -----------------------------


def add_event(
    conn: sqlite3.Connection, alert_id: int, at: int, kind: str, actor: str, detail: str
) -> None:
    conn.execute(
        "INSERT INTO events (alert_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
        (alert_id, at, kind, actor, detail),
    )
    if actor not in SYSTEM_ACTORS:
        add_person(conn, actor)


def add_person(conn: sqlite3.Connection, name: str) -> None:
    """Remember someone named in the database (an actor, an assignee)."""
    conn.execute("INSERT OR IGNORE INTO people (name) VALUES (?)", (name,))


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


def firing_local(conn: sqlite3.Connection) -> list[StoredAlert]:
    """Stored firing episodes of the embedded evaluator (taken up again at start)."""
    sql = f"SELECT {COLUMNS} FROM alerts WHERE status = 'firing' AND source = 'local'"  # noqa: S608
    return [row_to_alert(r) for r in conn.execute(sql)]


def firing_from_alertmanager(conn: sqlite3.Connection) -> list[StoredAlert]:
    """Stored firing episodes that Alertmanager sent (reconciliation compares them)."""
    sql = (
        f"SELECT {COLUMNS} FROM alerts"  # noqa: S608 - a constant column list
        " WHERE status = 'firing' AND source = 'alertmanager'"
    )
    return [row_to_alert(r) for r in conn.execute(sql)]


def episode_ids(conn: sqlite3.Connection, episodes: Sequence[Any]) -> dict[tuple[str, int], int]:
    """The ids of the stored episodes among `episodes` (anything with fingerprint and
    starts_at), by (fingerprint, starts_at)."""
    keys = orjson.dumps([[e.fingerprint, e.starts_at] for e in episodes]).decode()
    rows = conn.execute(
        "SELECT a.fingerprint, a.starts_at, a.id FROM json_each(?) AS j JOIN alerts AS a"
        " ON a.fingerprint = j.value ->> 0 AND a.starts_at = j.value ->> 1",
        (keys,),
    )
    return {(fp, starts): alert_id for fp, starts, alert_id in rows}


def episode_states(
    conn: sqlite3.Connection, episodes: Sequence[Any]
) -> dict[tuple[str, int], str | None]:
    """The resolution (None while firing) of the stored episodes among `episodes`."""
    keys = orjson.dumps([[e.fingerprint, e.starts_at] for e in episodes]).decode()
    rows = conn.execute(
        "SELECT a.fingerprint, a.starts_at, a.resolution FROM json_each(?) AS j JOIN alerts"
        " AS a ON a.fingerprint = j.value ->> 0 AND a.starts_at = j.value ->> 1",
        (keys,),
    )
    return {(fp, starts): resolution for fp, starts, resolution in rows}


def get_retention(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'retention_days'").fetchone()
    return int(row[0]) if row else DEFAULT_RETENTION_DAYS


# --- reads ---------------------------------------------------------------------------------


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
    limit: int = 50
    before_id: int | None = None
    sort: str = "newest"
    after: tuple[int, int, int] | None = None


#: SQL: how much a firing alert needs attention, 0 most, and its severity's rank, 0 critical.
_RANK = "CASE WHEN acked_at IS NOT NULL THEN 2 WHEN am_state = 'suppressed' THEN 1 ELSE 0 END"
_SEVERITY_RANK = (
    "CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2"
    " WHEN 'info' THEN 3 ELSE 4 END"
)
_RESOLVED_RANK = 3


#: A page of listed alerts stops once its rows hold this many characters of text (labels,
#: annotations, URL, comment), so that a page's memory does not depend on what was stored.
PAGE_CHARS = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Page:
    """A page of alerts, newest first; `next_cursor` continues after it (None: the last)."""

    alerts: list[StoredAlert]
    next_cursor: str | None

    def to_json(self) -> dict[str, Any]:
        return {"alerts": [a.to_json() for a in self.alerts], "next_cursor": self.next_cursor}


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
    for m in query.matchers:
        # m.name matched [a-zA-Z_][a-zA-Z0-9_]* in Matcher.parse: safe inside the JSON path.
        value = f"coalesce(json_extract(labels, '$.\"{m.name}\"'), '')"
        if m.op in ("=", "!="):
            where.append(f"{value} {m.op} ?")
        else:
            where.append(f"{'NOT ' if m.op == '!~' else ''}regexp(?, {value})")
        args.append(m.value)
    return where, args


Row = tuple[StoredAlert, str]  # an alert and the cursor that continues after it


def _select_alerts(
    conn: sqlite3.Connection, query: AlertQuery, max_chars: int | None
) -> tuple[list[Row], bool]:
    """The alerts of a page with their cursors, and whether it stopped at max_chars."""
    where, args = _filters(query)
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
        chars += len(row[5]) + len(row[6]) + len(row[7]) + len(row[16] or "")
        if max_chars is not None and chars >= max_chars:
            return out, True, chars
    return out, False, chars


def get_events(conn: sqlite3.Connection, alert_id: int) -> list[Event]:
    rows = conn.execute(
        "SELECT id, alert_id, at, kind, actor, detail FROM events WHERE alert_id = ? ORDER BY id",
        (alert_id,),
    )
    return [Event(*r) for r in rows]


def alert_detail(
    conn: sqlite3.Connection, alert_id: int, max_chars: int | None = None
) -> dict[str, Any]:
    """One alert with its audit trail, oldest event first, as the API answers it. The trail
    stops once its text passes `max_chars` (default PAGE_CHARS), with `events_truncated`."""
    budget = PAGE_CHARS if max_chars is None else max_chars
    alert = get_alert(conn, alert_id)
    events: list[dict[str, Any]] = []
    truncated = False
    rows = conn.execute(
        "SELECT id, alert_id, at, kind, actor, detail FROM events WHERE alert_id = ? ORDER BY id",
        (alert_id,),
    )
    for row in rows:  # stepped one by one: a trail of any length takes bounded memory
        if budget <= 0:
            truncated = True
            break
        events.append(Event(*row).to_json())
        budget -= len(row[4]) + len(row[5]) + 64
    return {**alert.to_json(), "events": events, "events_truncated": truncated}


def firing_counts(conn: sqlite3.Connection) -> dict[tuple[str, str, str], int]:
    """(state, severity, am_state) -> number of firing alerts (firing or acknowledged), by
    whether Alertmanager mutes them (suppressed) or not (active; local alerts, and those no
    reconcile round has seen yet, count as active). Walks the firing rows only."""
    rows = conn.execute(
        "SELECT CASE WHEN acked_at IS NULL THEN 'firing' ELSE 'acknowledged' END, severity,"
        " CASE am_state WHEN 'suppressed' THEN 'suppressed' ELSE 'active' END, count(*)"
        " FROM alerts WHERE status = 'firing' GROUP BY 1, 2, 3"
    )
    return {(state, severity, am): count for state, severity, am, count in rows}


def state_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """(state, severity) -> number of stored alerts (kept by triggers: no table scan)."""
    rows = conn.execute("SELECT state, severity, count FROM alert_counts WHERE count > 0")
    return {(state, severity): count for state, severity, count in rows}


class _ReadBudget:
    """SQLite's progress handler for a read: aborts it past its deadline, and makes a long
    read take turns with the rest of the process.

    A read holding its thread for long (a regex matcher tested on every row of a big store)
    takes the GIL at every row and keeps a core busy; beside it the event loop, with the
    webhook on it, waits for both. So once a read has run for a millisecond it sleeps a
    millisecond, and so on: reads shorter than that never pause, a long one runs at half
    speed, and the webhook's p99 meanwhile stays near its idle figure (bench/hostile.py).
    """

    __slots__ = ("deadline", "exceeded", "turn_ends")

    def __init__(self, seconds: float) -> None:
        now = time.monotonic()
        self.deadline = now + seconds
        self.turn_ends = now + _READ_TURN
        self.exceeded = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if now > self.deadline:
            self.exceeded = True
            return True  # SQLite interrupts the statement
        if now > self.turn_ends:
            time.sleep(_READ_TURN)
            self.turn_ends = time.monotonic() + _READ_TURN
        return False


class Store:
    """An opened, migrated database: synchronous jobs and per-thread read connections.

    >>> import tempfile, os
    >>> store = Store(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> store.read(lambda c: list_alerts(c, AlertQuery()))
    []
    >>> store.close()
    """

    def __init__(
        self,
        path: str | Path,
        busy_timeout_ms: int = 5000,
        query_timeout: float | None = None,
        read_only: bool = False,
    ) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self.query_timeout = query_timeout
        self.read_only = read_only
        self.closed = False
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            conn = self._connection()
            if read_only:
                _check_version(conn, self.path)
            else:
                migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    @property
    def uri(self) -> str:
        """What another SQLite client (ADBC) opens to read this database as this store does."""
        return read_only_uri(self.path) if self.read_only else self.path

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.busy_timeout_ms, self.read_only)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def new_connection(self) -> sqlite3.Connection:
        """A connection of its own (the writer thread keeps one)."""
        conn = connect(self.path, self.busy_timeout_ms, self.read_only)
        with self._lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreError(f"storage failed: {exc}") from None

    def run(self, job: Job[T]) -> T:
        """Run a write job in its own transaction on this thread's connection."""
        conn = self._connection()
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = job(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read on this thread's connection (WAL: never blocked by the writer).

        With a `query_timeout` (the server's), a read running longer is aborted by SQLite's
        progress handler (QueryTimeout), and a long one takes turns with the event loop, so
        that no filter can hold a thread, or the GIL, for long. Without (the CLI, exports),
        reads run unhindered.
        """
        conn = self._connection()
        if self.query_timeout is None:
            with self._errors():
                return fn(conn)
        budget = _ReadBudget(self.query_timeout)
        conn.set_progress_handler(budget, _PROGRESS_STEPS)
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if budget.exceeded and "interrupt" in str(exc):
                raise QueryTimeout(self.query_timeout) from None
            raise StoreError(f"storage failed: {exc}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"storage failed: {exc}") from None
        finally:
            conn.set_progress_handler(None, 0)

    def check_writable(self) -> None:
        """Raise StoreError unless a write can be made (file, directory and journal writable)."""
        conn = self._connection()
        with self._errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("INSERT INTO meta (key, value) VALUES ('write-probe', '')")
            finally:
                conn.execute("ROLLBACK")

    def close(self) -> None:
        self.closed = True
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
