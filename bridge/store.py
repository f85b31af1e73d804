"""Alert storage on SQLite: schema migrations, episodes keyed on (fingerprint, startsAt), events.

Every write is a *job*: a function of a connection run inside a transaction, either directly
(`Store.run`, for the CLI) or through the group-commit writer (`bridge.writer`), so the rules
below live in one place whoever writes. The HA rules (FACTS.md):
- an episode is (fingerprint, startsAt); an exact repeat only bumps receive_count;
- a "firing" never re-opens a resolved episode (a real re-fire has a new startsAt);
- a "resolved" touches only its own startsAt's episode; the earliest endsAt wins;
so the final state does not depend on arrival order.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import Conflict, NotFound, StoreError, Unprocessable
from bridge.matchers import Matcher
from bridge.webhook import ReceivedAlert

T = TypeVar("T")
Job = Callable[[sqlite3.Connection], T]

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
)

EVENT_KINDS = (
    "fired", "resolved", "acknowledged", "unacknowledged", "note", "assigned", "silenced",
    "expired",
)  # fmt: skip
DEFAULT_RETENTION_DAYS = 90
NS = 1_000_000_000
MAX_TEXT = 10_000


def now_ns() -> int:
    return time.time_ns()


def format_time(ns: int | None) -> str | None:
    """ns since the epoch -> RFC 3339 UTC with the fraction it needs (None stays None)."""
    if ns is None:
        return None
    seconds, frac = divmod(ns, NS)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _dumps(mapping: Mapping[str, str]) -> str:
    return _ENCODER.encode(dict(mapping))


def local_fingerprint(labels: Mapping[str, str]) -> str:
    """16 hex digits identifying a label set, for alerts the embedded evaluator raises."""
    return hashlib.sha256(_dumps(labels).encode()).hexdigest()[:16]


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


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What a batch of received alerts changed."""

    fired: list[int] = field(default_factory=list)  # new firing episodes
    resolved: list[int] = field(default_factory=list)  # episodes that became resolved
    repeats: int = 0  # receipts that changed nothing but the receive count


_COLUMNS = (
    "id, fingerprint, status, alertname, severity, labels, annotations, generator_url, source, "
    "starts_at, ends_at, first_received_at, last_received_at, receive_count, acked_at, acked_by, "
    "ack_comment, assignee, silence_id, updated_at, silence_state, silenced_until"
)


def _alert(row: Sequence[Any]) -> StoredAlert:
    values = list(row)
    values[5] = json.loads(values[5])
    values[6] = json.loads(values[6])
    return StoredAlert(*values)


def _regexp(pattern: str, value: str | None) -> bool:
    return re.fullmatch(pattern, value or "") is not None


def connect(path: str | Path, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, synchronous=FULL."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.create_function("regexp", 2, _regexp, deterministic=True)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply numbered migrations above PRAGMA user_version; returns the schema version."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            f"database schema v{version} is newer than this alertbridge (v{len(MIGRATIONS)})"
        )
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


# --- jobs: functions of a connection, run inside a transaction -----------------------------


def _event(
    conn: sqlite3.Connection, alert_id: int, at: int, kind: str, actor: str, detail: str
) -> None:
    conn.execute(
        "INSERT INTO events (alert_id, at, kind, actor, detail) VALUES (?, ?, ?, ?, ?)",
        (alert_id, at, kind, actor, detail),
    )


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
             _dumps(a.labels), _dumps(a.annotations), a.generator_url, source, received_at,
             received_at, received_at),
        ).fetchone()  # fmt: skip
        if row is not None:
            _record_new(row[0], a, received_at, source, events, result)
        elif _apply_known(conn, a, received_at, source, events, result):
            repeats += 1
    return repeats


def _existing(
    conn: sqlite3.Connection, alerts: Sequence[ReceivedAlert]
) -> dict[tuple[str, int], object]:
    """Which (fingerprint, startsAt) episodes are stored already: one statement for the lot."""
    if not alerts:
        return {}
    keys = json.dumps([[a.fingerprint, a.starts_at] for a in alerts])
    rows = conn.execute(
        "SELECT a.fingerprint, a.starts_at FROM json_each(?) AS j JOIN alerts AS a"
        " ON a.fingerprint = j.value ->> 0 AND a.starts_at = j.value ->> 1",
        (keys,),
    )
    return dict.fromkeys(rows)


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
             _dumps(a.labels), _dumps(a.annotations), a.generator_url, source, received_at,
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
            (a.ends_at, _dumps(a.annotations), received_at, received_at, alert_id),
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
            (_dumps(a.annotations), received_at, alert_id),
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
                existing[key] = None  # a repeat inside this same notification is "known"
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


def _get(conn: sqlite3.Connection, alert_id: int) -> StoredAlert:
    sql = f"SELECT {_COLUMNS} FROM alerts WHERE id = ?"  # noqa: S608 - a constant column list
    row = conn.execute(sql, (alert_id,)).fetchone()
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    return _alert(row)


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
        alert = _get(conn, alert_id)
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
        _event(conn, alert_id, at, "acknowledged", by, note)
        return _get(conn, alert_id)

    return job


def unacknowledge(alert_id: int, actor: object, comment: object, at: int) -> Job[StoredAlert]:
    """Job: withdraw an acknowledgement."""
    by = _text(actor, "by", required=True)
    note = _text(comment, "comment", required=False)

    def job(conn: sqlite3.Connection) -> StoredAlert:
        alert = _get(conn, alert_id)
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
        _event(conn, alert_id, at, "unacknowledged", by, note)
        return _get(conn, alert_id)

    return job


def add_note(alert_id: int, actor: object, text: object, at: int) -> Job[Event]:
    """Job: add a note to an alert's trail."""
    by = _text(actor, "by", required=True)
    body = _text(text, "text", required=True)

    def job(conn: sqlite3.Connection) -> Event:
        _get(conn, alert_id)
        _event(conn, alert_id, at, "note", by, body)
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
        alert = _get(conn, alert_id)
        if alert.assignee == who:
            return alert
        conn.execute(
            "UPDATE alerts SET assignee = ?, updated_at = ? WHERE id = ?", (who, at, alert_id)
        )
        _event(conn, alert_id, at, "assigned", by, who or "")
        return _get(conn, alert_id)

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
        _get(conn, alert_id)
        conn.execute(
            "UPDATE alerts SET silence_state = ?, silence_id = coalesce(?, silence_id),"
            " silenced_until = ?, updated_at = ? WHERE id = ?",
            (state, silence_id, until, at, alert_id),
        )
        if event is not None:
            _event(conn, alert_id, at, *event)
        return _get(conn, alert_id)

    return job


def resolve_learnt(alert_id: int, at: int, how: str) -> Job[StoredAlert | None]:
    """Job: mark a firing episode resolved because Alertmanager no longer has it."""

    def job(conn: sqlite3.Connection) -> StoredAlert | None:
        alert = _get(conn, alert_id)
        if alert.status != "firing":
            return None
        conn.execute(
            "UPDATE alerts SET status = 'resolved', ends_at = ?, updated_at = ? WHERE id = ?",
            (at, at, alert_id),
        )
        _event(conn, alert_id, at, "resolved", "reconciler", how)
        return _get(conn, alert_id)

    return job


def silence_work(conn: sqlite3.Connection) -> list[StoredAlert]:
    """Alerts whose silence needs an action: pending, expiring, or active and still firing."""
    sql = (
        f"SELECT {_COLUMNS} FROM alerts"  # noqa: S608 - a constant column list
        " WHERE silence_state IN ('pending', 'expiring', 'active')"
    )
    return [_alert(r) for r in conn.execute(sql)]


def firing_from_alertmanager(conn: sqlite3.Connection) -> list[StoredAlert]:
    """Stored firing episodes that Alertmanager sent (reconciliation compares them)."""
    sql = (
        f"SELECT {_COLUMNS} FROM alerts"  # noqa: S608 - a constant column list
        " WHERE status = 'firing' AND source = 'alertmanager'"
    )
    return [_alert(r) for r in conn.execute(sql)]


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


def get_retention(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'retention_days'").fetchone()
    return int(row[0]) if row else DEFAULT_RETENTION_DAYS


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


# --- reads ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertQuery:
    """Filters for listing alerts, newest first, paginated by id cursor."""

    status: str | None = None
    severities: tuple[str, ...] = ()
    rule: str | None = None
    matchers: tuple[Matcher, ...] = ()
    since: int | None = None  # starts_at >= since (ns)
    until: int | None = None  # starts_at < until (ns)
    acknowledged: bool | None = None
    limit: int = 50
    before_id: int | None = None


def list_alerts(conn: sqlite3.Connection, query: AlertQuery) -> list[StoredAlert]:
    """Alerts matching the query, newest (highest id) first."""
    where: list[str] = []
    args: list[object] = []
    if query.status:
        where.append("status = ?")
        args.append(query.status)
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
    if query.before_id is not None:
        where.append("id < ?")
        args.append(query.before_id)
    for m in query.matchers:
        # m.name matched [a-zA-Z_][a-zA-Z0-9_]* in Matcher.parse: safe inside the JSON path.
        value = f"coalesce(json_extract(labels, '$.\"{m.name}\"'), '')"
        if m.op in ("=", "!="):
            where.append(f"{value} {m.op} ?")
        else:
            where.append(f"{'NOT ' if m.op == '!~' else ''}regexp(?, {value})")
        args.append(m.value)
    sql = f"SELECT {_COLUMNS} FROM alerts"  # noqa: S608 - fixed fragments only, values bound
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(query.limit)
    return [_alert(r) for r in conn.execute(sql, args)]


def get_alert(conn: sqlite3.Connection, alert_id: int) -> StoredAlert:
    return _get(conn, alert_id)


def get_events(conn: sqlite3.Connection, alert_id: int) -> list[Event]:
    rows = conn.execute(
        "SELECT id, alert_id, at, kind, actor, detail FROM events WHERE alert_id = ? ORDER BY id",
        (alert_id,),
    )
    return [Event(*r) for r in rows]


def state_counts(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
    """(state, severity) -> number of stored alerts."""
    rows = conn.execute(
        "SELECT CASE WHEN status = 'resolved' THEN 'resolved'"
        " WHEN acked_at IS NOT NULL THEN 'acknowledged' ELSE 'firing' END, severity, count(*)"
        " FROM alerts GROUP BY 1, 2"
    )
    return {(state, severity): count for state, severity, count in rows}


class Store:
    """An opened, migrated database: synchronous jobs and per-thread read connections.

    >>> import tempfile, os
    >>> store = Store(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> store.read(lambda c: list_alerts(c, AlertQuery()))
    []
    >>> store.close()
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        try:
            conn = self._connection()
            migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {self.path}: {exc}") from None

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.busy_timeout_ms)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def new_connection(self) -> sqlite3.Connection:
        """A connection of its own (the writer thread keeps one)."""
        conn = connect(self.path, self.busy_timeout_ms)
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
        """Run a read on this thread's connection (WAL: never blocked by the writer)."""
        with self._errors():
            return fn(self._connection())

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
