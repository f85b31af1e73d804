"""The migration that makes an episode's start exact to the millisecond (SQLite 11,
PostgreSQL 6) merges the rows stored twice for one episode, keeping both trails."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.core.times import NS
from bridge.store import AlertQuery
from bridge.store.postgres import schema as pg_schema
from bridge.store.postgres.store import PostgresStore
from bridge.store.sqlite import schema as sqlite_schema
from bridge.store.sqlite.store import SqliteStore
from tests.pg import Cluster
from tests.stores import T0

MS = 1_000_000
#: Alert 1: the webhook's row (startsAt to the nanosecond), acknowledged, then resolved by
#: the reconciler because Alertmanager listed the episode under another start; alert 2: the
#: reconciler's row of the same episode (to the millisecond), firing; alert 3: alone, its
#: start to the nanosecond.
_COLUMNS = (
    "fingerprint, starts_at, ends_at, status, alertname, severity, labels, annotations,"
    " generator_url, source, first_received_at, last_received_at, receive_count, acked_at,"
    " acked_by, ack_comment, silence_id, silence_state, updated_at, resolution"
)
OLD_ROWS = f"""
INSERT INTO alerts ({_COLUMNS}) VALUES
 ('aaaaaaaaaaaaaaaa', {T0 + 894_696_746}, {T0 + 5 * NS}, 'resolved', 'x', 'warning',
  '{{"alertname":"x"}}', '{{}}', '', 'alertmanager', {T0}, {T0}, 1, {T0 + NS}, 'alice',
  'on it', 'sil-1', 'expired', {T0 + 5 * NS}, 'inferred'),
 ('aaaaaaaaaaaaaaaa', {T0 + 894 * MS}, NULL, 'firing', 'x', 'warning', '{{"alertname":"x"}}',
  '{{}}', '', 'alertmanager', {T0 + 2 * NS}, {T0 + 9 * NS}, 3, NULL, NULL, NULL, NULL, NULL,
  {T0 + 2 * NS}, NULL),
 ('bbbbbbbbbbbbbbbb', {T0 + 5}, NULL, 'firing', 'y', 'critical', '{{"alertname":"y"}}', '{{}}',
  '', 'alertmanager', {T0}, {T0}, 1, NULL, NULL, NULL, NULL, NULL, {T0}, NULL);
INSERT INTO events (alert_id, at, kind, actor, detail) VALUES
 (1, {T0}, 'fired', 'alertmanager', ''), (1, {T0 + NS}, 'acknowledged', 'alice', 'on it'),
 (2, {T0 + 2 * NS}, 'fired', 'reconciler', ''), (1, {T0 + 5 * NS}, 'resolved', 'reconciler', '');
"""


def _sqlite_v10(path: Path) -> None:
    conn = sqlite_schema.connect(path)
    for number, script in enumerate(sqlite_schema.MIGRATIONS[:10], start=1):
        conn.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
    conn.executescript(
        f"BEGIN; {OLD_ROWS}; INSERT INTO alert_counts (state, severity, count)"
        f" SELECT {sqlite_schema._state_of('')}, severity, count(*) FROM alerts GROUP BY 1, 2;"
        " COMMIT;"
    )
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def old_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[SqliteStore | PostgresStore]:
    """A store at the schema before the migration, holding OLD_ROWS."""
    if request.param == "sqlite":
        _sqlite_v10(tmp_path / "old.db")
        yield SqliteStore(tmp_path / "old.db")
        return
    pg: Cluster = request.getfixturevalue("pg_cluster")
    url = pg.new_database()
    name = url.rsplit("/", 1)[1]
    versions = ", ".join(f"({n})" for n in range(1, 6))
    pg.psql(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT now());"
        + "".join(pg_schema.MIGRATIONS[:5])
        + f"INSERT INTO schema_migrations (version) VALUES {versions};"
        + OLD_ROWS,
        name,
    )
    yield PostgresStore(url, password_file=pg.password_file)


async def test_twins_are_merged_into_the_first_with_both_trails(
    old_store: SqliteStore | PostgresStore,
) -> None:
    """One row per episode after the migration: the first's, firing again (its twin was, and
    its own resolution was the reconciler's guess), still acknowledged (its silence to be
    made again), with the twin's receipts and events and a "merged" event; a lone row's
    start is split; the counts follow."""
    await old_store.start()
    try:
        alerts = {a.id: a for a in await old_store.list_alerts(AlertQuery(limit=100))}
        assert sorted(alerts) == [1, 3]
        one, three = alerts[1], alerts[3]
        assert (one.starts_at, one.starts_ns, one.start) == (
            T0 + 894 * MS, 696_746, T0 + 894_696_746)  # fmt: skip
        assert (one.status, one.resolution, one.ends_at) == ("firing", None, None)
        assert (one.acked_by, one.silence_state) == ("alice", "pending")
        assert (one.receive_count, one.first_received_at, one.last_received_at) == (
            4, T0, T0 + 9 * NS)  # fmt: skip
        trail = [(e.kind, e.actor) for e in await old_store.events(1)]
        assert trail == [("fired", "alertmanager"), ("acknowledged", "alice"),
                         ("fired", "reconciler"), ("resolved", "reconciler"),
                         ("merged", "alertbridge")]  # fmt: skip
        assert "alert 2 was this episode" in (await old_store.events(1))[-1].detail
        assert (three.starts_at, three.starts_ns) == (T0, 5)
        counts = (await old_store.counts()).by_state
        assert counts.get(("firing", "critical"), 0) == 1
        assert counts.get(("acknowledged", "warning"), 0) == 1
        assert counts.get(("resolved", "warning"), 0) == 0
    finally:
        await old_store.close()


def test_the_sqlite_migration_is_one_transaction(tmp_path: Path) -> None:
    """A migration that fails leaves the schema and the rows as they were."""
    _sqlite_v10(tmp_path / "old.db")
    conn = sqlite_schema.connect(tmp_path / "old.db")
    conn.execute("CREATE TEMP TABLE twins (x)")  # the migration's own table: it fails
    with pytest.raises(sqlite3.OperationalError):
        sqlite_schema.migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone() == (10,)
    assert conn.execute("SELECT count(*) FROM alerts").fetchone() == (3,)
