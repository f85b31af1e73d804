"""The SQLite schema: numbered migrations (PRAGMA user_version), and connections to it."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from pathlib import Path

from bridge.core.errors import StoreError
from bridge.core.matchers import regex_matches
from bridge.store.labelindex import md5_hex
from bridge.store.sql import EPISODE_TWINS, LABEL_INDEX, LABEL_INDEX_BUILD, RULE_VERSIONS


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

#: The order of "what needs attention first" among firing alerts (bridge.store.sqlite.queries):
#: unacknowledged and active in Alertmanager, then muted by it, then acknowledged; then by
#: severity. Migration 9 indexes exactly these expressions.
ATTENTION_RANK = (
    "CASE WHEN acked_at IS NOT NULL THEN 2 WHEN am_state = 'suppressed' THEN 1 ELSE 0 END"
)
SEVERITY_RANK = (
    "CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning' THEN 2"
    " WHEN 'info' THEN 3 ELSE 4 END"
)


def _text_of(row: str) -> str:
    """SQL: the rowid and the texts an alerts row is found by in the free-text index (`row`
    is "NEW.", "OLD." or "" for the table's own). A contentless table forgets a row only when
    given the very texts it was given: both triggers compute them by this one expression."""
    return (
        f"{row}id, coalesce(json_extract({row}annotations, '$.summary'), ''),"
        f" coalesce(json_extract({row}annotations, '$.description'), '')"
    )


# Trigger bodies of migration 14: a resolved row's texts in, a resolved row's out.
_TEXT_NEW = (
    "INSERT INTO alert_text (rowid, summary, description)"
    f" SELECT {_text_of('NEW.')} WHERE NEW.status = 'resolved';"
)
_TEXT_OLD = (
    "INSERT INTO alert_text (alert_text, rowid, summary, description)"
    f" SELECT 'delete', {_text_of('OLD.')} WHERE OLD.status = 'resolved';"
)

#: The label index's SQL (bridge.store.sql.LABEL_INDEX) in SQLite's words.
_INDEX_DIALECT = {
    "serial": "INTEGER PRIMARY KEY",
    "without_rowid": " WITHOUT ROWID",
    "name_index": "(name)",
    "each": "json_each(t.labels)",
    "len": "length",
}

#: The time in ns, as SQLite computes it (to the millisecond).
_NOW = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) * 1000000"

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
    # 7: escalations (bridge.escalation): one row per (episode, policy), the policy copied
    #    as JSON when the episode began; the engine's due work found by the partial indexes
    """
    CREATE TABLE escalations (
        alert_id INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        policy TEXT NOT NULL,
        plan TEXT NOT NULL,
        urgency TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('running', 'paused', 'acknowledged', 'exhausted', 'stopped')),
        paused_state TEXT,
        position INTEGER NOT NULL,
        repeats INTEGER NOT NULL,
        round INTEGER NOT NULL,
        due_at INTEGER,
        level INTEGER NOT NULL,
        copies TEXT NOT NULL,
        reposted_at INTEGER,
        version INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        event_id INTEGER NOT NULL,
        forced INTEGER,
        PRIMARY KEY (alert_id, policy)
    ) WITHOUT ROWID;
    CREATE INDEX escalations_due ON escalations (due_at)
        WHERE due_at IS NOT NULL AND state IN ('running', 'paused', 'acknowledged');
    CREATE INDEX escalations_copies ON escalations (reposted_at) WHERE copies != '[]';
    CREATE INDEX escalations_ending ON escalations (state)
        WHERE copies != '[]' AND state IN ('acknowledged', 'stopped');
    """,
    # 8: the enrichment map's fields of an episode (bridge.core.enrichment), apart from its
    #    labels, which stay what Alertmanager sent
    """
    ALTER TABLE alerts ADD COLUMN enrichment TEXT NOT NULL DEFAULT '{}';
    """,
    # 9: firing alerts in attention order, so that the first page of a big store is read in
    #    order off an index, not sorted from every firing row (bench.page: 40 ms at 1M rows)
    f"""
    CREATE INDEX alerts_attention ON alerts ({ATTENTION_RANK}, {SEVERITY_RANK}, id DESC)
        WHERE status = 'firing';
    """,
    # 10: leases of background work (bridge.workers.leader): who does it, until when (ns)
    """
    CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at INTEGER NOT NULL)
        WITHOUT ROWID;
    """,
    # 11: an episode is (fingerprint, startsAt to the millisecond): Alertmanager's webhook
    #     carries the nanoseconds of a startsAt it set itself, its API only the milliseconds,
    #     and the two ways stored two rows of one episode. The rest below the millisecond is
    #     kept in starts_ns; what was clipped to the limits, and a Grafana alert's links and
    #     values, beside. Twins already stored are merged (EPISODE_TWINS).
    """
    ALTER TABLE alerts ADD COLUMN starts_ns INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE alerts ADD COLUMN clipped TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE alerts ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    {twins}
    """,
    # 12: the rule set managed while running (bridge.core.rulebook): one row per version
    RULE_VERSIONS,
    # 13: the label index (bridge.store.labelindex): series, label values and postings,
    #     built from the alerts stored (a matcher that matched nothing read every alert)
    (LABEL_INDEX + LABEL_INDEX_BUILD).format(**_INDEX_DIALECT, after=0),
    # 14: the free-text index (bridge.store.textindex): the summary and description of every
    #     resolved episode as trigrams, in a contentless FTS5 table (the text stays in alerts,
    #     the table holds only what finds it), kept by triggers in the writing transaction. A
    #     firing episode is not in it: its repeats change its texts ($value), and each change
    #     re-indexed cost 35-135 us (a search tests the firing episodes, few, directly).
    #     The update trigger is OF status: a statement that does not set the status (a
    #     firing repeat's) does not run it at all (a trigger with only a WHEN still ran once
    #     per row: 3.5 us a repeat). So a resolved row's texts change only with its status
    #     set in the same statement: ingest's resolve and reopen (a firing repeat changes
    #     a firing row's, which is not in the index).
    f"""
    CREATE VIRTUAL TABLE alert_text USING fts5
        (summary, description, content='', columnsize=0, tokenize='trigram');
    INSERT INTO alert_text (rowid, summary, description)
        SELECT {_text_of("")} FROM alerts WHERE status = 'resolved';
    CREATE TRIGGER alerts_text_insert AFTER INSERT ON alerts WHEN NEW.status = 'resolved'
        BEGIN {_TEXT_NEW} END;
    CREATE TRIGGER alerts_text_delete AFTER DELETE ON alerts WHEN OLD.status = 'resolved'
        BEGIN {_TEXT_OLD} END;
    CREATE TRIGGER alerts_text_update AFTER UPDATE OF status ON alerts
        WHEN (OLD.status = 'resolved' OR NEW.status = 'resolved')
        AND (OLD.status IS NOT NEW.status OR OLD.annotations IS NOT NEW.annotations)
        BEGIN {_TEXT_OLD} {_TEXT_NEW} END;
    """,  # noqa: S608 - constants
)


def build_label_index(conn: sqlite3.Connection, after: int) -> None:
    """Index the alerts with ids above `after` (rows inserted by other means than ingestion:
    a benchmark's), in the caller's transaction."""
    for statement in LABEL_INDEX_BUILD.format(**_INDEX_DIALECT, after=int(after)).split(";"):
        if statement.strip():
            conn.execute(statement)


_TWINS = EPISODE_TWINS.format(now=_NOW, least="min", greatest="max")


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
    conn.create_function("md5", 1, md5_hex, deterministic=True)
    return conn


def check_version(conn: sqlite3.Connection, path: str) -> None:
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
    conn.create_function("md5", 1, md5_hex, deterministic=True)  # (the label index's keys)
    for number, text in enumerate(MIGRATIONS[version:], start=version + 1):
        script = text.replace(
            "{twins}", EPISODE_TWINS.format(now=_NOW, least="min", greatest="max")
        )
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
