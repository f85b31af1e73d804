"""Writes other than ingestion: operators' and the system's actions on stored alerts, and
the persisted settings. Each is a job, run in a transaction by the writer."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from bridge.core.errors import Unprocessable
from bridge.core.rulebook import RuleVersion
from bridge.core.times import NS
from bridge.store import actions
from bridge.store.actions import Change
from bridge.store.labelindex import NewSeries, gone_postings, series_of
from bridge.store.records import SYSTEM_ACTORS, AmView, Event, SilenceChange, StoredAlert
from bridge.store.rows import SAME_ROW, TABLES, rule_version_row, stale_rules, text_field
from bridge.store.sql import RULE_VERSION_COLUMNS
from bridge.store.sqlite.database import Job
from bridge.store.sqlite.ingest import index_series
from bridge.store.sqlite.queries import get_alert, get_retention, meta


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


_text = text_field


def apply(conn: sqlite3.Connection, alert_id: int, change: Change | None) -> StoredAlert:
    """Write what an action decided (bridge.store.actions) and add its event; the alert as it
    is then (as it was when the action changes nothing)."""
    if change is not None:
        sets = ", ".join(f"{column} = ?" for column in change.columns)  # names: actions.COLUMNS
        conn.execute(f"UPDATE alerts SET {sets} WHERE id = ?",  # noqa: S608
                     (*change.columns.values(), alert_id))  # fmt: skip
        if change.person:
            add_person(conn, change.person)
        add_event(conn, alert_id, change.at, *change.event)
    return get_alert(conn, alert_id)


def acknowledge(alert_id: int, actor: object, comment: object, at: int) -> Job[StoredAlert]:
    """Job: acknowledge a firing, unacknowledged alert."""
    by = _text(actor, "by", required=True)
    note = _text(comment, "comment", required=False)

    def job(conn: sqlite3.Connection) -> StoredAlert:
        alert = get_alert(conn, alert_id)
        managed = silences_managed(conn)
        return apply(conn, alert_id, actions.acknowledge(alert, by, note, at,
                                                         silences_managed=managed))  # fmt: skip

    return job


def unacknowledge(alert_id: int, actor: object, comment: object, at: int) -> Job[StoredAlert]:
    """Job: withdraw an acknowledgement."""
    by = _text(actor, "by", required=True)
    note = _text(comment, "comment", required=False)

    def job(conn: sqlite3.Connection) -> StoredAlert:
        alert = get_alert(conn, alert_id)
        return apply(conn, alert_id, actions.unacknowledge(alert, by, note, at))

    return job


def add_note(alert_id: int, actor: object, text: object, at: int, kind: str = "note") -> Job[Event]:
    """Job: add a note to an alert's trail."""
    by = _text(actor, "by", required=True)
    body = _text(text, "text", required=True)
    actions.note_kind(kind)

    def job(conn: sqlite3.Connection) -> Event:
        get_alert(conn, alert_id)
        add_event(conn, alert_id, at, kind, by, body)
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
        return apply(conn, alert_id, actions.assign(alert, by, who, at))

    return job


def set_silence(alert_id: int, at: int, change: SilenceChange) -> Job[StoredAlert]:
    """Job: record the silence state of an alert (and optionally an event)."""

    def job(conn: sqlite3.Connection) -> StoredAlert:
        get_alert(conn, alert_id)
        conn.execute(
            "UPDATE alerts SET silence_state = ?, silence_id = coalesce(?, silence_id),"
            " silenced_until = ?, updated_at = ? WHERE id = ?",
            (change.state, change.silence_id, change.until, at, alert_id),
        )
        if change.event is not None:
            add_event(conn, alert_id, at, *change.event)
        return get_alert(conn, alert_id)

    return job


def _resolve_system(alert_id: int, at: int, resolution: str, actor: str,
                    detail: str) -> Job[StoredAlert | None]:  # fmt: skip
    def job(conn: sqlite3.Connection) -> StoredAlert | None:
        alert = get_alert(conn, alert_id)
        change = actions.resolve_system(alert, at, resolution, actor, detail)
        return None if change is None else apply(conn, alert_id, change)

    return job


def resolve_inferred(alert_id: int, at: int, how: str) -> Job[StoredAlert | None]:
    """Job: mark a firing episode resolved because Alertmanager, which mutes it, no longer has
    it (provisional: a later firing delivery of the episode reopens it)."""
    return _resolve_system(alert_id, at, "inferred", "reconciler", how)


def resolve(alert_id: int, actor: object, comment: object, at: int) -> Job[StoredAlert]:
    """Job: an operator resolves a firing alert. For Alertmanager's alerts this is provisional
    (a later firing delivery of the episode reopens it: the operator was wrong); the embedded
    evaluator's stay resolved (a new episode starts if the condition comes back)."""
    by = _text(actor, "by", required=True)
    note = _text(comment, "comment", required=False)

    def job(conn: sqlite3.Connection) -> StoredAlert:
        alert = get_alert(conn, alert_id)
        return apply(conn, alert_id, actions.resolve(alert, by, note or "resolved by hand", at))

    return job


def restart_resolve(alert_id: int, at: int) -> Job[StoredAlert | None]:
    """Job: the embedded evaluator, starting, found the condition of a firing alert of its
    previous run no longer held."""
    return _resolve_system(alert_id, at, "restart", "evaluator",
                           "condition no longer held at restart")  # fmt: skip


def continued(alert_id: int, at: int) -> Job[None]:
    """Job: the embedded evaluator, starting, took up a firing alert of its previous run."""

    def job(conn: sqlite3.Connection) -> None:
        add_event(
            conn, alert_id, at, "continued", "evaluator", "the condition still held at restart"
        )

    return job


def silences_managed(conn: sqlite3.Connection) -> bool:
    """Whether acks get silences: the server last started with an Alertmanager configured
    (or has never run on this database: then the reconciler may yet create them)."""
    return meta(conn, "alertmanagers") != "[]"


def record_alertmanagers(urls: Sequence[str]) -> Job[None]:
    """Job: note which Alertmanagers the server works with (acks consult it: silences_managed)."""

    def job(conn: sqlite3.Connection) -> None:
        _set_meta(conn, "alertmanagers", orjson.dumps(list(urls)).decode())

    return job


def set_am_states(views: Sequence[AmView]) -> Job[int]:
    """Job: store Alertmanager's view of firing alerts (a reconcile round's); rows changed."""

    def job(conn: sqlite3.Connection) -> int:
        params = [
            (state, orjson.dumps(silenced).decode(),
             orjson.dumps([{"fingerprint": f, "alert_id": i} for f, i in inhibited]).decode(),
             alert_id)
            for alert_id, state, silenced, inhibited in views
        ]  # fmt: skip
        cursor = conn.executemany(
            "UPDATE alerts SET am_state = ?, am_silenced_by = ?, am_inhibited_by = ?"
            " WHERE id = ? AND status = 'firing'",
            params,
        )
        return cursor.rowcount

    return job


def set_retention(days: int) -> Job[int]:
    """Job: persist the retention period in days."""
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise Unprocessable("days", f"must be a whole number of days >= 1, got {days!r}")

    def job(conn: sqlite3.Connection) -> int:
        _set_meta(conn, "retention_days", str(days))
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
            series = conn.execute(
                f"SELECT DISTINCT fingerprint, labels FROM alerts WHERE id IN ({marks})",  # noqa: S608
                ids,
            ).fetchall()
            conn.execute(f"DELETE FROM events WHERE alert_id IN ({marks})", ids)  # noqa: S608
            conn.execute(f"DELETE FROM alerts WHERE id IN ({marks})", ids)  # noqa: S608
            _unindex(conn, series)
        return len(ids)

    return job


def _unindex(conn: sqlite3.Connection, rows: list[tuple[str, str]]) -> None:
    """Take out of the label index the series (fingerprint, labels) of which no episode is
    left, their postings, and the label values no series carries any more."""
    orphans = conn.execute(
        "SELECT j.value ->> 0, j.value ->> 1 FROM json_each(?) AS j WHERE NOT EXISTS"
        " (SELECT 1 FROM alerts AS a WHERE a.fingerprint = j.value ->> 0"
        " AND a.labels = j.value ->> 1)",
        (orjson.dumps(rows).decode(),),
    ).fetchall()
    if not orphans:
        return
    gone = series_of(orphans)
    ids = dict(conn.execute(
        "DELETE FROM series WHERE key IN (SELECT value FROM json_each(?)) RETURNING key, id",
        (orjson.dumps(list(gone)).decode(),),
    ).fetchall())  # fmt: skip
    postings, values = gone_postings(gone, ids)
    conn.execute(
        "DELETE FROM postings WHERE (value_id, series_id) IN (SELECT v.id, j.value ->> 1"
        " FROM json_each(?) AS j JOIN label_values AS v ON v.key = j.value ->> 0)",
        (orjson.dumps(postings).decode(),),
    )
    conn.execute(
        "DELETE FROM label_values WHERE key IN (SELECT value FROM json_each(?))"
        " AND NOT EXISTS (SELECT 1 FROM postings AS p WHERE p.value_id = label_values.id)",
        (orjson.dumps(values).decode(),),
    )


def _set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def set_enrichment(values: Mapping[int, Mapping[str, str]]) -> Job[int]:
    """Job: the enrichment fields of these alerts (replacing theirs); how many exist."""

    def job(conn: sqlite3.Connection) -> int:
        rows = [(orjson.dumps(dict(fields)).decode(), alert_id)
                for alert_id, fields in values.items()]  # fmt: skip
        cursor = conn.executemany("UPDATE alerts SET enrichment = ? WHERE id = ?", rows)
        return cursor.rowcount

    return job


def save_engine_counts(counts: Mapping[str, object]) -> Job[None]:
    """Job: the escalation engine's counters (JSON in meta)."""

    def job(conn: sqlite3.Connection) -> None:
        _set_meta(conn, "escalation_counts", orjson.dumps(dict(counts)).decode())

    return job


def record_heartbeat(at: int) -> Job[None]:
    """Job: the dead man's switch's heartbeat arrived at `at` (a later one wins)."""

    def job(conn: sqlite3.Connection) -> None:
        last = meta(conn, "heartbeat_at")
        if last is None or int(last) < at:
            _set_meta(conn, "heartbeat_at", str(at))

    return job


def save_cursor(consumer: str, event_id: int) -> Job[None]:
    """Job: remember the last event a consumer of the feed handled."""

    def job(conn: sqlite3.Connection) -> None:
        _set_meta(conn, f"cursor:{consumer}", str(int(event_id)))

    return job


def add_rule_version(version: RuleVersion) -> Job[None]:
    """Job: record a version of the rule set, if the latest is the one before it."""

    def job(conn: sqlite3.Connection) -> None:
        latest = conn.execute("SELECT coalesce(max(version), 0) FROM rule_versions").fetchone()[0]
        if latest != version.version - 1:
            raise stale_rules(latest, version)
        conn.execute(f"INSERT INTO rule_versions ({RULE_VERSION_COLUMNS})"  # noqa: S608
                     " VALUES (?, ?, ?, ?, ?, ?, ?)", rule_version_row(version))  # fmt: skip

    return job


def keep_key(name: str, new: str) -> Job[str]:
    """Job: keep `new` as key `name` (records.KEPT_KEYS) unless one is kept already; the
    kept one."""

    def job(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (name, new))
        return str(conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()[0])

    return job


def probe_write(conn: sqlite3.Connection) -> None:
    """Job: write and remove a row, changing nothing (readiness after a storage failure)."""
    conn.execute("INSERT INTO meta (key, value) VALUES ('write-probe', '') ON CONFLICT DO NOTHING")
    conn.execute("DELETE FROM meta WHERE key = 'write-probe'")


def lease(name: str, holder: str, until: int, at: int, replacing: str | None) -> Job[bool]:
    """Job: take or renew a lease (free, expired at `at`, the holder's own already, or
    `replacing`'s)."""

    def job(conn: sqlite3.Connection) -> bool:
        conn.execute(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)"
            " ON CONFLICT (name) DO UPDATE SET holder = ?2, expires_at = ?3"
            " WHERE leases.holder = ?2 OR leases.expires_at <= ?4 OR leases.holder = ?5",
            (name, holder, until, at, replacing),
        )
        row = conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
        return bool(row and row[0] == holder)

    return job


def release(name: str, holder: str) -> Job[None]:
    def job(conn: sqlite3.Connection) -> None:
        conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    return job


def load(table: str, rows: Sequence[tuple[Any, ...]]) -> Job[tuple[int, int]]:
    """Job: insert the rows not there yet (ids kept); (inserted, keys present now)."""
    columns, key = TABLES[table]
    key = SAME_ROW.get(table, key)

    def job(conn: sqlite3.Connection) -> tuple[int, int]:
        # The statement's own rows (sqlite3_changes()), not total_changes, which counts what
        # triggers write too (the free-text index's rows: 12 for 2 alerts).
        inserted = conn.executemany(
            f"INSERT OR IGNORE INTO {table} ({', '.join(columns)})"  # noqa: S608 - TABLES names
            f" VALUES ({', '.join('?' * len(columns))})",
            rows,
        ).rowcount
        if table == "alerts":
            index_series(conn, NewSeries.of_rows(rows, columns))
        at = [columns.index(k) for k in key]
        present = sum(
            conn.execute(
                f"SELECT count(*) FROM {table} WHERE "  # noqa: S608 - TABLES names
                + " AND ".join(f"{k} = ?" for k in key),
                [row[i] for i in at],
            ).fetchone()[0]
            for row in rows
        )
        return inserted, present

    return job
