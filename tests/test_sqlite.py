"""The SQLite implementation's own behaviour (what the contract, tests/test_store_contract.py,
does not pin): its schema and migrations, its ways of ingesting (run together, multi-row
inserts, consecutive ids), stored label encoding, and the read budget."""

from __future__ import annotations

import functools
import random
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.alerts import ReceivedAlert
from bridge.core.errors import QueryTimeout, StoreError
from bridge.core.model import dumps_map
from bridge.core.times import NS
from bridge.store import IngestResult
from bridge.store.sqlite import escalations
from bridge.store.sqlite.database import Database
from bridge.store.sqlite.ingest import INSERT_ROWS, IngestJob
from bridge.store.sqlite.queries import counts, get_events
from bridge.store.sqlite.schema import MIGRATIONS
from tests.stores import T0, ingest, received
from tests.stores import alert_rows as rows
from tests.test_store_contract import Receipt, deliveries


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Database]:
    s = Database(tmp_path / "alerts.db")
    yield s
    s.close()


def kinds(store: Database, alert_id: int) -> list[str]:
    return [e.kind for e in store.read(lambda c: get_events(c, alert_id))]


def test_schema_pragmas(store: Database) -> None:
    """WAL, synchronous=FULL, and user_version = number of migrations."""
    conn = store.new_connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer alertbridge is not touched."""
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer than this alertbridge"):
        Database(path)


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    """Opening an existing database applies no migration again."""
    first = Database(tmp_path / "a.db")
    first.run(ingest([received()], T0))
    first.close()
    second = Database(tmp_path / "a.db")
    assert len(rows(second)) == 1
    second.close()


def _everything(store: Database) -> list[list[tuple[object, ...]]]:
    """Every stored row of the alert tables, ids included; each alert's events in order (the
    interleaving of different alerts' events is not part of the contract)."""
    queries = (
        "SELECT * FROM alerts ORDER BY id",
        "SELECT alert_id, at, kind, actor, detail FROM events ORDER BY alert_id, id",
        "SELECT * FROM alert_counts ORDER BY 1, 2",
    )
    return store.read(lambda c: [c.execute(sql).fetchall() for sql in queries])


def _sorted(result: IngestResult) -> IngestResult:
    """The ids as sets: the order of one job's ids is not part of the contract."""
    return IngestResult(sorted(result.fired), sorted(result.resolved), result.repeats)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(deliveries(), min_size=1, max_size=3),
    st.randoms(use_true_random=False),
    st.lists(st.integers(1, 4), min_size=1, max_size=8),
    st.sampled_from([None, "reconciler"]),
)
def test_jobs_run_together_as_if_one_after_another(
    alerts: list[list[Receipt]], rng: random.Random, sizes: list[int], actor: str | None
) -> None:
    """The writer runs queued ingest jobs as one (IngestJob.run_together): same rows (ids,
    times, receive counts), events, counts and per-job results as running each in turn, whatever
    the mix of new episodes, repeats, resolutions and receipts of one episode in several jobs."""
    received_alerts = []
    for number, receipts in enumerate(alerts):
        for index, status, end in receipts:
            starts = T0 + index * 1000 * NS
            fingerprint = f"{number + 1:016x}"
            received_alerts.append(received(status, starts, starts + end * NS, fingerprint))
    rng.shuffle(received_alerts)
    chunks, position = [], 0
    for size in sizes * len(received_alerts):
        if position >= len(received_alerts):
            break
        chunks.append(received_alerts[position : position + size])
        position += size
    jobs = [ingest(chunk, T0 + i * NS, actor=actor) for i, chunk in enumerate(chunks)]
    with tempfile.TemporaryDirectory(prefix="together-") as tmp:
        one_by_one, together = Database(Path(tmp) / "a.db"), Database(Path(tmp) / "b.db")
        try:
            expected = [one_by_one.run(job) for job in jobs]
            got = together.run(lambda c: IngestJob.run_together(c, jobs))
            assert [_sorted(r) for r in got] == [_sorted(r) for r in expected]
            # A receipt is a new episode (fired, or first seen resolved), a resolution or a repeat.
            assert sum(len(r.fired) + len(r.resolved) + r.repeats for r in got) == len(
                received_alerts
            )
            assert _everything(together) == _everything(one_by_one)
            received_at: dict[tuple[object, ...], list[int]] = {}
            for i, chunk in enumerate(chunks):
                for a in chunk:
                    received_at.setdefault((a.fingerprint, a.starts_at), []).append(T0 + i * NS)
            stored = together.read(
                lambda c: c.execute(
                    "SELECT fingerprint, starts_at, first_received_at, last_received_at FROM alerts"
                ).fetchall()
            )
            assert {(fp, s): [first, last] for fp, s, first, last in stored} == {
                key: [times[0], times[-1]] for key, times in received_at.items()
            }
        finally:
            one_by_one.close()
            together.close()


def kept_counts(store: Database) -> dict[tuple[str, str], int]:
    """What the triggers and the ingest job keep in alert_counts (zeros left out)."""
    return {k: v for k, v in store.read(counts).by_state.items() if v}


def brute_counts(store: Database) -> dict[tuple[str, str], int]:
    rows = store.read(
        lambda c: c.execute(
            "SELECT CASE WHEN status = 'resolved' THEN 'resolved' WHEN acked_at IS NOT NULL"
            " THEN 'acknowledged' ELSE 'firing' END, severity, count(*) FROM alerts GROUP BY 1, 2"
        ).fetchall()
    )
    return {(state, severity): count for state, severity, count in rows}


def test_upgrade_from_v3_keeps_counting_inserts(tmp_path: Path) -> None:
    """Migration 4 drops the insert trigger; the ingest job counts new rows instead."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        conn.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")
    conn.close()
    store = Database(path)  # migrates to the current version
    alerts = [
        received(),
        received(fingerprint="f" * 16, severity="critical"),
        received("resolved", ends=T0 + NS, fingerprint="e" * 16),
    ]
    store.run(ingest(alerts, T0))
    expected = {("firing", "warning"): 1, ("firing", "critical"): 1, ("resolved", "warning"): 1}
    assert kept_counts(store) == brute_counts(store) == expected
    sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name"
    triggers = store.read(lambda c: c.execute(sql).fetchall())
    assert triggers == [
        ("alerts_count_delete",), ("alerts_count_update",),
        ("alerts_text_delete",), ("alerts_text_insert",), ("alerts_text_update",),
    ]  # fmt: skip
    store.close()


def test_labels_are_stored_as_dumps_map_writes_them(store: Database) -> None:
    """Both insert paths store labels/annotations as sorted compact JSON, escapes included."""
    odd = {"alertname": "x", "z": 'quote " back \\ tab \t é ✓ \u0001', "a": "</script>"}
    alerts = [ReceivedAlert(f"{i:016x}", "firing", T0, None, odd, odd, "") for i in range(4)]
    store.run(ingest(alerts[:1], T0))  # the small path
    store.run(ingest(alerts[1:], T0))  # the batch path
    rows = store.read(lambda c: c.execute("SELECT labels, annotations FROM alerts").fetchall())
    assert rows == [(dumps_map(odd), dumps_map(odd))] * 4


def test_upgrade_from_v2_counts_existing_rows(tmp_path: Path) -> None:
    """Migration 3 counts the alerts a v2 database already holds."""
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")
    # rows as a v2 bridge wrote them (today's ingest job needs the v4 schema)
    conn.executemany(
        "INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity,"
        " labels, annotations, generator_url, source, first_received_at, last_received_at,"
        " receive_count, updated_at) VALUES (?, ?, ?, ?, 'high_cpu', 'warning', '{}', '{}', '',"
        " 'alertmanager', ?, ?, 1, ?)",
        [("0" * 16, T0, None, "firing", T0, T0, T0),
         ("f" * 16, T0, T0 + NS, "resolved", T0, T0, T0)],
    )  # fmt: skip
    conn.close()
    store = Database(path)
    assert kept_counts(store) == {("firing", "warning"): 1, ("resolved", "warning"): 1}
    store.close()


def test_failed_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails half-way is rolled back whole; the version stays."""
    monkeypatch.setattr(
        "bridge.store.sqlite.schema.MIGRATIONS",
        (*MIGRATIONS, "CREATE TABLE half (x); SELECT nosuch();"),
    )
    with pytest.raises(StoreError, match="no such function"):
        Database(tmp_path / "a.db")
    conn = sqlite3.connect(tmp_path / "a.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half" not in tables
    conn.close()


@pytest.mark.parametrize("actor", [None, "reconciler"])
def test_events_of_new_episodes_are_the_same_on_both_paths(
    store: Database, actor: str | None
) -> None:
    """fired / resolved ("first seen resolved") events with the source or the given actor,
    whether the notification takes the small path or the batch path."""
    firing = [received(fingerprint=f"{i:016x}") for i in range(1, 3)]
    resolved = [received("resolved", ends=T0 + NS, fingerprint=f"{i:016x}") for i in range(3, 5)]
    store.run(ingest([firing[0], resolved[0]], T0, actor=actor))  # the small path
    store.run(ingest([firing[1], resolved[1], received(fingerprint="f" * 16)], T0, actor=actor))
    who = actor or "alertmanager"
    events = []
    for alert_id in range(1, 6):
        stored = store.read(functools.partial(get_events, alert_id=alert_id))
        events += [(e.kind, e.actor, e.detail, e.at) for e in stored]
    assert events == [
        ("fired", who, "", T0),
        ("resolved", who, "first seen resolved", T0),
        ("fired", who, "", T0),
        ("resolved", who, "first seen resolved", T0),
        ("fired", who, "", T0),
    ]


def test_new_episodes_without_consecutive_ids_are_looked_up(store: Database) -> None:
    """Once the largest rowid is taken SQLite picks new ids at random: the batch path then looks
    each new episode's id up and writes its events itself, with the same results."""
    store.run(
        lambda c: c.execute(
            "INSERT INTO alerts (id, fingerprint, starts_at, status, alertname, severity, labels,"
            " annotations, generator_url, source, first_received_at, last_received_at,"
            " receive_count, updated_at) VALUES (9223372036854775807, 'ffffffffffffffff', ?,"
            " 'firing', 'high_cpu', 'warning', '{}', '{}', '', 'alertmanager', ?, ?, 1, ?)",
            (T0, T0, T0, T0),
        )
    )
    new = [received(fingerprint=f"{i:016x}") for i in range(1, 4)]
    new.append(received("resolved", ends=T0 + NS, fingerprint="e" * 16))
    result = store.run(ingest(new, T0 + NS))
    ids = {
        fp: alert_id
        for alert_id, fp in store.read(lambda c: c.execute("SELECT id, fingerprint FROM alerts"))
    }
    assert result.fired == [ids[a.fingerprint] for a in new[:3]]
    assert result.resolved == [ids["e" * 16]]
    new_ids = sorted(result.fired + result.resolved)
    assert new_ids != list(range(new_ids[0], new_ids[0] + len(new)))  # the case under test
    for a in new:
        events = store.read(functools.partial(get_events, alert_id=ids[a.fingerprint]))
        assert [(e.kind, e.at) for e in events] == [
            ("fired" if a.status == "firing" else "resolved", T0 + NS)
        ]


@pytest.mark.parametrize("count", [3, INSERT_ROWS - 1, INSERT_ROWS, 2 * INSERT_ROWS + 7])
def test_new_episodes_inserted_many_rows_a_statement(count: int) -> None:
    """The batch path inserts new episodes up to INSERT_ROWS rows a statement (in powers of
    two): whatever the count, the rows (ids in the notification's order, every column), events
    and counts are those of receiving the same alerts one per notification (the small path)."""
    alerts = [
        received(
            "resolved" if i % 3 == 0 else "firing",
            starts=T0 + i * NS,
            ends=T0 + (i + 60) * NS,
            fingerprint=f"{i + 1:016x}",
            instance=f"host{i}:9100",
        )
        for i in range(count)
    ]
    with tempfile.TemporaryDirectory(prefix="rows-") as tmp:
        one_by_one, at_once = Database(Path(tmp) / "a.db"), Database(Path(tmp) / "b.db")
        try:
            for a in alerts:
                one_by_one.run(ingest([a], T0))
            traced: list[str] = []
            job = ingest(alerts, T0)

            class Traced:
                """The connection, recording the SQL the job executes (SQLite's own trace
                would also repeat a statement for each trigger program it runs per row)."""

                def __init__(self, conn: sqlite3.Connection) -> None:
                    self.conn = conn

                def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
                    traced.append(sql)
                    return self.conn.execute(sql, *args)

                def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:
                    traced.append(sql)
                    return self.conn.executemany(sql, *args)

                def __getattr__(self, name: str) -> Any:
                    return getattr(self.conn, name)

            result = at_once.run(lambda conn: job(cast(sqlite3.Connection, Traced(conn))))
            assert sorted(result.fired + result.resolved) == list(range(1, count + 1))
            assert _everything(at_once) == _everything(one_by_one)
            # Not a statement per row: full statements, then the rest in powers of two.
            inserts = sum(1 for sql in traced if sql.startswith("INSERT INTO alerts "))
            assert inserts == count // INSERT_ROWS + (count % INSERT_ROWS).bit_count()
        finally:
            one_by_one.close()
            at_once.close()


def test_long_reads_take_turns_and_short_ones_do_not(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a read budget (the server's), a read running past a millisecond pauses as long,
    again and again (so the event loop gets the GIL and a core); a short read never pauses,
    nor does any read of a store without a budget (the CLI's, exports)."""
    from bridge.store.sqlite.database import _READ_TURN

    pauses: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        real_sleep(seconds)

    monkeypatch.setattr("bridge.store.sqlite.database.time.sleep", sleep)
    store.query_timeout = 60  # the server's stores have a budget; the CLI's never pause
    store.read(lambda c: c.execute("SELECT 1").fetchall())
    assert pauses == []
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000000)"
        " SELECT count(*) FROM n"
    )
    store.read(lambda c: c.execute(slow).fetchall())
    assert len(pauses) >= 2
    assert set(pauses) == {_READ_TURN}
    pauses.clear()
    store.query_timeout = None
    store.read(lambda c: c.execute(slow).fetchall())
    assert pauses == []


def test_a_read_over_its_budget_is_stopped(store: Database) -> None:
    """Past query_timeout SQLite interrupts the statement: QueryTimeout, and the connection
    serves the next read."""
    store.query_timeout = 0.05
    endless = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n"
    started = time.monotonic()
    with pytest.raises(QueryTimeout, match=r"longer than 0\.05s"):
        store.read(lambda c: c.execute(endless).fetchall())
    assert time.monotonic() - started < 5
    assert store.read(lambda c: c.execute("SELECT 2").fetchone()) == (2,)


def test_close_waits_for_a_read_under_way_and_later_reads_are_refused(tmp_path: Path) -> None:
    """Closing a connection under a running statement crashes the process (seen: a segfault
    when a server stopped while a background read ran): close() waits for the read."""
    db = Database(tmp_path / "a.db")
    started, release = threading.Event(), threading.Event()
    results: list[object] = []

    def slow(conn: sqlite3.Connection) -> int:
        started.set()
        assert release.wait(10)
        return int(conn.execute("SELECT count(*) FROM alerts").fetchone()[0])

    reader = threading.Thread(target=lambda: results.append(db.read(slow)))
    reader.start()
    assert started.wait(10)
    closing = threading.Thread(target=db.close)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive()  # waiting for the read, not closing under it
    release.set()
    reader.join(10)
    closing.join(10)
    assert results == [0]
    assert not closing.is_alive()
    with pytest.raises(StoreError, match="closed"):
        db.read(lambda c: c.execute("SELECT 1").fetchone())


@pytest.mark.parametrize(
    "read",
    [lambda c: escalations.due(c, T0, 500), lambda c: escalations.copy_work(c, T0, 500),
     escalations.next_due],
)  # fmt: skip
def test_the_engines_reads_each_tick_search_an_index_never_scan(
    store: Database, read: Callable[[sqlite3.Connection], object]
) -> None:
    """The engine reads its due work every 0.3 s: a read that scans every escalation costs
    5 ms a tick at 10,000 (copy_work did, with an OR of NULL and a range on one index)."""
    statements: list[str] = []

    def plans(conn: sqlite3.Connection) -> list[str]:
        conn.set_trace_callback(statements.append)
        try:
            read(conn)
        finally:
            conn.set_trace_callback(None)
        out = []
        for sql in statements:
            params = (0,) * sql.count("?")
            out += [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        return out

    found = store.read(plans)
    assert found, "no statement ran"
    assert all(p.startswith("SEARCH escalations USING") for p in found), found


@pytest.mark.parametrize("inline", [False, True])
async def test_inline_reads_run_on_the_callers_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inline: bool
) -> None:
    """A store opened with inline_reads (the stream worker's) runs each read on the thread
    that awaits it; by default a read goes to a worker thread, the event loop free meanwhile."""
    from bridge.store import open_store
    from bridge.store.sqlite import queries

    threads: list[int] = []
    real = queries.last_event_id

    def recording(conn: sqlite3.Connection) -> int:
        threads.append(threading.get_ident())
        return real(conn)

    monkeypatch.setattr(queries, "last_event_id", recording)
    Database(tmp_path / "a.db").close()  # (created and migrated: opened read-only below)
    store = open_store(tmp_path / "a.db", read_only=True, inline_reads=inline)
    try:
        assert await store.last_event_id() == 0
    finally:
        await store.close()
    assert (threads == [threading.get_ident()]) is inline
    assert len(threads) == 1
