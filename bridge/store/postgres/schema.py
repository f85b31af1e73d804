"""The PostgreSQL schema: numbered migrations recorded in `schema_migrations`, applied under
a transaction-level advisory lock, so that replicas starting together migrate once: the
second waits for the first's COMMIT, then finds nothing left to do."""

from __future__ import annotations

from typing import Any

import asyncpg

from bridge.core.errors import StoreError
from bridge.store.sql import EPISODE_TWINS, LABEL_INDEX, LABEL_INDEX_BUILD, RULE_VERSIONS

#: The advisory lock key of migrations (any constant of our own: "alertbridge" in hex, cut).
MIGRATION_LOCK = 0x616C657274627269
#: The advisory lock key that orders the feed: held from an event's insert to COMMIT, so that
#: events get their ids in commit order across replicas (a watcher that read up to id N never
#: sees a smaller id commit later).
FEED_LOCK = 0x616C657274666565
#: The advisory lock key of the label index (bridge.store.labelindex): ingestion holds it
#: shared while it adds to the index, retention exclusive while it takes out of it what no
#: episode uses any more (so that it never takes a series or value an episode being inserted
#: is about to use).
INDEX_LOCK = 0x616C657274696478

#: SQL: the text an episode is found by in the free-text index (migration 10), its summary
#: and its description (a row of alert_texts holds it; a search tests `text ILIKE pattern`).
TEXT_OF = (
    "coalesce(annotations::jsonb ->> 'summary', '') || E'\\n'"
    " || coalesce(annotations::jsonb ->> 'description', '')"
)
_TEXT_OF_N = TEXT_OF.replace("annotations", "n.annotations")  # (of a transition table's row)
#: The migration that creates the pg_trgm extension (what an operator may have to do first).
TEXT_MIGRATION = 10

#: The label index's SQL (bridge.store.sql.LABEL_INDEX) in PostgreSQL's words.
_INDEX_DIALECT = {
    "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "without_rowid": "",
    "name_index": "USING hash (name)",  # (migration 8's: 9 replaces it)
    "each": "jsonb_each_text(t.labels::jsonb)",
    "len": "length",
}

MIGRATIONS: tuple[str, ...] = (
    # 1: what SQLite's migrations 1-9 hold: one row per episode, the audit trail, settings,
    #    the people named; times in ns since the epoch (BIGINT), labels and annotations as
    #    the same JSON text SQLite stores (records are built by one function for both)
    """
    CREATE TABLE alerts (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        starts_at BIGINT NOT NULL,
        ends_at BIGINT,
        status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
        alertname TEXT NOT NULL,
        severity TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        generator_url TEXT NOT NULL,
        source TEXT NOT NULL,
        first_received_at BIGINT NOT NULL,
        last_received_at BIGINT NOT NULL,
        receive_count BIGINT NOT NULL,
        acked_at BIGINT,
        acked_by TEXT,
        ack_comment TEXT,
        assignee TEXT,
        silence_id TEXT,
        updated_at BIGINT NOT NULL,
        silence_state TEXT,
        silenced_until BIGINT,
        resolution TEXT,
        am_state TEXT,
        am_silenced_by TEXT NOT NULL DEFAULT '[]',
        am_inhibited_by TEXT NOT NULL DEFAULT '[]',
        enrichment TEXT NOT NULL DEFAULT '{}',
        UNIQUE (fingerprint, starts_at)
    );
    CREATE INDEX alerts_status ON alerts (status, id);
    CREATE INDEX alerts_alertname ON alerts (alertname, id);
    CREATE INDEX alerts_silence_state ON alerts (silence_state) WHERE silence_state IS NOT NULL;
    CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        alert_id BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        at BIGINT NOT NULL,
        kind TEXT NOT NULL,
        actor TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_alert ON events (alert_id, id);
    CREATE INDEX events_notes ON events (alert_id, at) WHERE kind = 'note';
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE people (name TEXT PRIMARY KEY);
    """,
    # 2: escalations (SQLite's migration 7): one row per (episode, policy), the policy copied
    #    as JSON when the episode began; the engine's due work found by the partial indexes
    """
    CREATE TABLE escalations (
        alert_id BIGINT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        policy TEXT NOT NULL,
        plan TEXT NOT NULL,
        urgency TEXT NOT NULL,
        state TEXT NOT NULL
            CHECK (state IN ('running', 'paused', 'acknowledged', 'exhausted', 'stopped')),
        paused_state TEXT,
        position INTEGER NOT NULL,
        repeats INTEGER NOT NULL,
        round INTEGER NOT NULL,
        due_at BIGINT,
        level INTEGER NOT NULL,
        copies TEXT NOT NULL,
        reposted_at BIGINT,
        version BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        event_id BIGINT NOT NULL,
        forced INTEGER,
        PRIMARY KEY (alert_id, policy)
    );
    CREATE INDEX escalations_due ON escalations (due_at)
        WHERE due_at IS NOT NULL AND state IN ('running', 'paused', 'acknowledged');
    CREATE INDEX escalations_copies ON escalations (reposted_at) WHERE copies != '[]';
    CREATE INDEX escalations_ending ON escalations (state)
        WHERE copies != '[]' AND state IN ('acknowledged', 'stopped');
    """,
    # 3: leases of background work (bridge.workers.leader): who does it, until when (ns)
    """
    CREATE TABLE leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at BIGINT NOT NULL);
    """,
    # 4: events keep their alert by the writers' locks, not a foreign key: the key's check is
    #    a trigger per row (a query locking the alert), 78 of the 190 ms a transaction of
    #    3,200 new alerts took. Every event is written holding its alert's row: ingestion locks
    #    or inserts the batch's episodes first; one event at a time (store._event) locks the
    #    alert FOR KEY SHARE in the INSERT itself, as the key's check did; retention locks the
    #    alerts it deletes (FOR UPDATE SKIP LOCKED) and deletes their events with them.
    """
    ALTER TABLE events DROP CONSTRAINT IF EXISTS events_alert_id_fkey;
    """,
    # 5: resolved alerts counted by triggers (store.counts: a scrape read every alert, 240 ms
    #    at 1,000,000), once per statement from its transition tables (a trigger per row
    #    would update one counts row thousands of times in a transaction, each update walking
    #    the row's growing chain of versions), into a row per (backend, severity): a
    #    connection only ever updates its own rows, so replicas' writers never wait on each
    #    other's counts (a row per severity would serialise them to COMMIT). Rows of backends
    #    gone are folded into slot 0 by the retention (store.prune); the firing alerts are
    #    few and counted by their index.
    """
    CREATE TABLE resolved_counts (
        slot INTEGER NOT NULL,
        severity TEXT NOT NULL,
        count BIGINT NOT NULL,
        PRIMARY KEY (slot, severity)
    );
    INSERT INTO resolved_counts (slot, severity, count)
        SELECT 0, severity, count(*) FROM alerts WHERE status = 'resolved' GROUP BY severity;
    CREATE FUNCTION alertbridge_count_resolved() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO resolved_counts AS c (slot, severity, count)
                SELECT pg_backend_pid(), severity, count(*) FROM new_rows
                WHERE status = 'resolved' GROUP BY severity
                ON CONFLICT (slot, severity) DO UPDATE SET count = c.count + EXCLUDED.count;
        ELSIF TG_OP = 'DELETE' THEN
            INSERT INTO resolved_counts AS c (slot, severity, count)
                SELECT pg_backend_pid(), severity, -count(*) FROM old_rows
                WHERE status = 'resolved' GROUP BY severity
                ON CONFLICT (slot, severity) DO UPDATE SET count = c.count + EXCLUDED.count;
        ELSE
            INSERT INTO resolved_counts AS c (slot, severity, count)
                SELECT pg_backend_pid(), severity, sum(d) FROM (
                    SELECT severity, 1 AS d FROM new_rows WHERE status = 'resolved'
                    UNION ALL
                    SELECT severity, -1 FROM old_rows WHERE status = 'resolved') AS x
                GROUP BY severity HAVING sum(d) <> 0
                ON CONFLICT (slot, severity) DO UPDATE SET count = c.count + EXCLUDED.count;
        END IF;
        RETURN NULL;
    END
    $$;
    CREATE TRIGGER alerts_resolved_insert AFTER INSERT ON alerts
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
        EXECUTE FUNCTION alertbridge_count_resolved();
    CREATE TRIGGER alerts_resolved_update AFTER UPDATE ON alerts
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
        EXECUTE FUNCTION alertbridge_count_resolved();
    CREATE TRIGGER alerts_resolved_delete AFTER DELETE ON alerts
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
        EXECUTE FUNCTION alertbridge_count_resolved();
    """,
    # 6: SQLite's migration 11: an episode's start to the millisecond, the rest in
    #    starts_ns; what was clipped; a Grafana alert's links and values; twins merged
    """
    ALTER TABLE alerts ADD COLUMN starts_ns BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE alerts ADD COLUMN clipped TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE alerts ADD COLUMN extra TEXT NOT NULL DEFAULT '{}';
    {twins}
    """,
    # 7: SQLite's migration 12: the rule set managed while running, a row per version
    RULE_VERSIONS,
    # 8: SQLite's migration 13: the label index, built from the alerts stored
    (LABEL_INDEX + LABEL_INDEX_BUILD).format(**_INDEX_DIALECT, after=0),
    # 9: label values by name in a B-tree of the name's first NAME_PREFIX characters (a name
    #    may be past a B-tree entry's 2,704 bytes; 256 characters of UTF-8 are 1,024 at
    #    most). The hash index of 8 keeps every value of one name in one bucket, whose chain
    #    of overflow pages an insert walks to its end: a new value cost 10 us with 2,000 values
    #    of that name, 133 us with 500,000, growing with the store (a B-tree: 10 us flat).
    """
    DROP INDEX label_values_name;
    CREATE INDEX label_values_name ON label_values (left(name, 256));
    """,
    # 10: SQLite's migration 14: the free-text index (bridge.store.textindex), the summary
    #     and description of every resolved episode in a table of their own with a GIN index
    #     of pg_trgm (an extension PostgreSQL ships, trusted: the database's owner may create
    #     it), kept by statement triggers from the transition tables migration 5's triggers
    #     already capture (set-based: a retention batch is one DELETE). Not an index on
    #     alerts: one over the annotations made every repeat that changes them ($value) a
    #     non-HOT update of every index of the table (100-alert repeats: 60 % of the rate).
    f"""
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE TABLE alert_texts (alert_id BIGINT PRIMARY KEY, text TEXT NOT NULL);
    INSERT INTO alert_texts SELECT id, {TEXT_OF} FROM alerts WHERE status = 'resolved';
    CREATE INDEX alert_texts_trigrams ON alert_texts USING gin (text gin_trgm_ops);
    CREATE FUNCTION alertbridge_index_text() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            INSERT INTO alert_texts SELECT id, {_TEXT_OF_N} FROM new_rows AS n
                WHERE status = 'resolved';
        ELSIF TG_OP = 'DELETE' THEN
            DELETE FROM alert_texts WHERE alert_id IN
                (SELECT id FROM old_rows WHERE status = 'resolved');
        ELSE
            DELETE FROM alert_texts WHERE alert_id IN (SELECT o.id FROM old_rows AS o
                JOIN new_rows AS n ON n.id = o.id WHERE o.status = 'resolved'
                AND (n.status <> 'resolved' OR n.annotations <> o.annotations));
            INSERT INTO alert_texts SELECT n.id, {_TEXT_OF_N} FROM new_rows AS n
                JOIN old_rows AS o ON o.id = n.id WHERE n.status = 'resolved'
                AND (o.status <> 'resolved' OR n.annotations <> o.annotations);
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER alerts_text_insert AFTER INSERT ON alerts
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
        EXECUTE FUNCTION alertbridge_index_text();
    CREATE TRIGGER alerts_text_update AFTER UPDATE ON alerts
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
        EXECUTE FUNCTION alertbridge_index_text();
    CREATE TRIGGER alerts_text_delete AFTER DELETE ON alerts
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
        EXECUTE FUNCTION alertbridge_index_text();
    """,  # noqa: S608 - constants
)

#: The characters of a label name in the index of label values by name (migration 9);
#: queries by name test `left(name, NAME_PREFIX) = left($n, NAME_PREFIX)` to use it.
NAME_PREFIX = 256


def label_index_build(after: int) -> str:
    """SQL: index the alerts with ids above `after` (rows inserted by other means than
    ingestion: a benchmark's)."""
    return LABEL_INDEX_BUILD.format(**_INDEX_DIALECT, after=int(after))


#: Fold the counts of backends gone into slot 0 (no live connection holds their rows: this
#: waits for nobody but a new backend that happens to reuse a pid).
FOLD_COUNTS = """
WITH gone AS (
    DELETE FROM resolved_counts
    WHERE slot <> 0 AND slot NOT IN (SELECT pid FROM pg_stat_activity)
    RETURNING severity, count
)
INSERT INTO resolved_counts AS c (slot, severity, count)
SELECT 0, severity, sum(count) FROM gone GROUP BY severity
ON CONFLICT (slot, severity) DO UPDATE SET count = c.count + EXCLUDED.count
"""


_TWINS = EPISODE_TWINS.format(
    now="(extract(epoch FROM clock_timestamp()) * 1000)::bigint * 1000000",
    least="least", greatest="greatest",
)  # fmt: skip


async def migrate(conn: Any) -> int:
    """Apply the migrations above the recorded version, in one transaction under the
    migration lock; returns the schema version. StoreError for a newer schema."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema v{version} is newer than this alertbridge (v{len(MIGRATIONS)})"
            )
        for number, text in enumerate(MIGRATIONS[version:], start=version + 1):
            try:
                await conn.execute(text.replace("{twins}", _TWINS))
            except asyncpg.InsufficientPrivilegeError as exc:
                if number != TEXT_MIGRATION:
                    raise
                raise StoreError(
                    f"schema migration {number} needs the pg_trgm extension, which this"
                    f" database's user may not create ({exc}); have its owner or a superuser"
                    " run CREATE EXTENSION pg_trgm; in it, then start again"
                ) from exc
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
    return len(MIGRATIONS)


async def check_version(conn: Any) -> None:
    """A store opened read-only is not migrated: the schema must be this one's already."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    version = await conn.fetchval("SELECT max(version) FROM schema_migrations") if exists else 0
    if (version or 0) != len(MIGRATIONS):
        raise StoreError(
            f"database schema v{version or 0} is not this alertbridge's (v{len(MIGRATIONS)}),"
            " and a read-only store cannot migrate it; start a writable one once"
        )
