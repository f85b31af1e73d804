"""The free-text index (bridge.store.textindex) on every store: a search answers what a full
scan answers, from candidates the index gives (the path asserted: the candidates are exactly
the matching episodes, so an index that kept a deleted or changed text, or missed a new one,
fails); a store of the schema before the index gets it built by its migration; a PostgreSQL
user who may not create pg_trgm is told what to do."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.alerts import ReceivedAlert
from bridge.core.errors import StoreError
from bridge.core.times import NS
from bridge.store import AlertQuery, AlertStore, StoredAlert
from bridge.store.postgres import queries as pg_queries
from bridge.store.sqlite import queries as sqlite_queries
from bridge.store.sqlite.schema import MIGRATIONS, connect
from bridge.store.sqlite.store import SqliteStore
from bridge.store.textindex import MIN_CHARS, fts_phrase, like_pattern
from tests.stores import IMPLEMENTATIONS, T0, Sync

ALL = AlertQuery(limit=100_000)
#: ASCII (SQLite's LIKE folds the case of ASCII only), LIKE's wildcards and escape, FTS5's
#: quote: a search must find them as the characters they are.
ALPHABET = 'aAb _%\\"'
texts = st.text(alphabet=ALPHABET, max_size=10)
notes = texts.filter(str.strip)  # (a note is not blank)
stored = st.lists(
    # (summary, description, resolved, notes, summary of a later delivery or None)
    st.tuples(texts, texts, st.booleans(), st.lists(notes, max_size=2), st.none() | texts),
    min_size=1,
    max_size=10,
)


def alert(n: int, summary: str, description: str, resolved: bool) -> ReceivedAlert:
    return ReceivedAlert(
        fingerprint=f"{n:016x}",
        status="resolved" if resolved else "firing",
        starts_at=T0 + n * NS,
        ends_at=T0 + (n + 1) * NS if resolved else None,
        labels={"alertname": "r", "n": str(n)},
        annotations={"summary": summary, "description": description},
        generator_url="",
    )


def _candidates(store: AlertStore, text: str) -> Any:
    """The store's text_candidates (the index's answer before the listing's other filters)."""
    if isinstance(store, SqliteStore):
        return store._read(lambda c: sqlite_queries.text_candidates(c, text))
    from bridge.store.postgres.store import PostgresStore

    assert isinstance(store, PostgresStore)
    return store._read(lambda c: pg_queries.text_candidates(c, text))


def _indexed(store: AlertStore, text: str) -> Any:
    """The episodes the index itself names for a text (no note): SQLite's FTS5 phrase,
    PostgreSQL's trigram-indexed ILIKE."""
    if isinstance(store, SqliteStore):
        sql = "SELECT rowid FROM alert_text WHERE alert_text MATCH ? ORDER BY rowid"
        return store._read(lambda c: [r[0] for r in c.execute(sql, (fts_phrase(text),))])
    from bridge.store.postgres.store import PostgresStore

    assert isinstance(store, PostgresStore)

    async def read(c: Any) -> list[int]:
        sql = "SELECT alert_id FROM alert_texts WHERE text ILIKE $1 ORDER BY alert_id"
        return [r[0] for r in await c.fetch(sql, like_pattern(text))]

    return store._read(read)


def _holds(a: StoredAlert, notes: list[str], text: str) -> bool:
    """What the search means: an ASCII case-insensitive substring of the summary, the
    description or a note."""
    found = [a.annotations.get("summary", ""), a.annotations.get("description", ""), *notes]
    return any(text.lower() in t.lower() for t in found)


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@settings(max_examples=30, deadline=None)
@given(rows=stored, prune=st.booleans(), data=st.data())
def test_a_search_equals_a_full_scan(
    name: str,
    rows: list[tuple[str, str, bool, list[str], str | None]],
    prune: bool,
    data: st.DataObject,
) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="text-") as tmp,
        Sync(IMPLEMENTATIONS[name](Path(tmp))) as sync,
    ):
        sync.ingest([alert(n, s, d, r) for n, (s, d, r, _, _) in enumerate(rows)], T0)
        # A later delivery of a firing episode with another summary (its $value changed):
        # the index forgets the old text (the update trigger, or PostgreSQL's new version).
        sync.ingest([alert(n, later, d, False) for n, (_, d, r, _, later) in enumerate(rows)
                     if later is not None and not r], T0 + NS)  # fmt: skip
        by_fingerprint = {a.fingerprint: a.id for a in sync.list_alerts(ALL)}
        notes: dict[int, list[str]] = {}
        for n, (_, _, _, written, _) in enumerate(rows):
            for note in written:
                alert_id = by_fingerprint[f"{n:016x}"]
                sync.add_note(alert_id, "ana", note, T0 + 2 * NS)
                notes.setdefault(alert_id, []).append(note)
        if prune:  # the resolved go, their texts and notes with them
            sync.set_retention_days(1)
            sync.prune(T0 + 400 * 86400 * NS)
        everything = sync.list_alerts(ALL)
        # Searched: a piece of any text ever stored (one changed or deleted since included),
        # or a few characters.
        pieces = [t for s, d, _, written, later in rows for t in (s, d, *written, later or "")]
        text = data.draw(
            st.text(alphabet=ALPHABET, min_size=1, max_size=4)
            | st.sampled_from([p for p in pieces if p] or ["a"]).flatmap(
                lambda p: st.tuples(st.integers(0, len(p) - 1), st.integers(1, 5)).map(
                    lambda ij: p[ij[0] : ij[0] + ij[1]]
                )
            )
        )
        expected = [a.id for a in everything if _holds(a, notes.get(a.id, []), text)]
        assert [a.id for a in sync.list_alerts(AlertQuery(text=text, limit=100_000))] == expected
        for sort in ("newest", "attention"):
            page = sync.list_page(AlertQuery(text=text, limit=100_000, sort=sort))
            assert sorted(a.id for a in page.alerts) == sorted(expected)
        # The path: the candidates hold every matching episode (None for a text shorter
        # than a trigram); and what the index holds is exactly the texts stored now (ASCII:
        # trigrams fold as LIKE does), for this text and every text ever stored (an index
        # that kept a changed or deleted one would still name its episode).
        for searched in {text, *pieces}:
            holding = [a.id for a in everything
                       if _holds(a, notes.get(a.id, []), searched)]  # fmt: skip
            found = sync(_candidates(sync.store, searched))
            if len(searched) < MIN_CHARS:
                assert found is None
                continue
            assert set(holding) <= set(found), searched
            with mock.patch.object(sqlite_queries, "RARE", 0):  # no trigram rare: the phrase
                assert set(holding) <= set(sync(_candidates(sync.store, searched))), searched
            indexed = [a.id for a in everything
                       if a.status == "resolved" and _holds(a, [], searched)]  # fmt: skip
            assert sync(_indexed(sync.store, searched)) == sorted(indexed), searched


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_past_max_episodes_the_listing_reads_in_order(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text more episodes hold than MAX_EPISODES is no candidate list (the listing reads
    newest first, testing each); a text found nowhere is the empty page without a read; a
    text and matchers together: the episodes both indexes name."""
    from bridge.core.matchers import Matcher

    with Sync(IMPLEMENTATIONS[name](tmp_path)) as sync:
        sync.ingest([alert(n, f"disk full on web-{n}", "", True) for n in range(5)], T0)
        monkeypatch.setattr(sqlite_queries, "MAX_EPISODES", 3)
        monkeypatch.setattr(pg_queries, "MAX_EPISODES", 3)
        assert sync(_candidates(sync.store, "disk full")) is None
        assert sync(_candidates(sync.store, "web-3")) == [4]
        assert sync(_candidates(sync.store, "nowhere")) == []
        query = AlertQuery(text="DISK", limit=2)
        assert [a.labels["n"] for a in sync.list_alerts(query)] == ["4", "3"]
        both = AlertQuery(text="disk full", matchers=(Matcher.parse('n=~"1|2"'),))
        assert [a.labels["n"] for a in sync.list_alerts(both)] == ["2", "1"]
        one = AlertQuery(text="web-1", matchers=(Matcher.parse('n=~"1|2"'),))
        assert [a.labels["n"] for a in sync.list_alerts(one)] == ["1"]


def test_the_sqlite_migration_builds_the_index_of_a_store_of_the_schema_before(
    tmp_path: Path,
) -> None:
    """A database at migration 13 (no text index) with resolved alerts in it: opened, it is
    migrated, its alerts are found through the index it built; a later change of one's text
    (the update trigger), its deletion (the delete trigger), a reopening and a resolution
    leave in the index exactly the resolved episodes' texts of now."""
    path = tmp_path / "alerts.db"
    conn = connect(path)
    for number, text in enumerate(MIGRATIONS[:13], start=1):
        conn.executescript(f"BEGIN;\n{text.replace('{twins}', '')}\n"
                           f"PRAGMA user_version = {number};\nCOMMIT;")  # fmt: skip
    columns = ("fingerprint, starts_at, status, alertname, severity, labels, annotations,"
               " generator_url, source, first_received_at, last_received_at, receive_count,"
               " updated_at")  # fmt: skip
    for n, held in enumerate(['{"summary":"Disk full"}', '{"description":"CPU hot"}', "{}"]):
        conn.execute(f"INSERT INTO alerts ({columns}) VALUES (?, 0, 'resolved', 'r', '', '{{}}',"
                     " ?, '', 'alertmanager', 0, 0, 1, 0)", (f"f{n}", held))  # fmt: skip
    conn.close()
    with Sync(SqliteStore(path)) as sync:
        assert sync(_candidates(sync.store, "disk")) == [1]
        assert sync(_candidates(sync.store, "cpu h")) == [2]
        assert [a.id for a in sync.list_alerts(AlertQuery(text="hot"))] == [2]
    conn = connect(path)

    def rowids(phrase: str) -> list[int]:
        sql = "SELECT rowid FROM alert_text WHERE alert_text MATCH ? ORDER BY rowid"
        return [r[0] for r in conn.execute(sql, (f'"{phrase}"',))]

    # (A resolved row's texts change with its status set, as ingest's resolve sets it.)
    fine = '{"summary":"Disk fine"}'
    conn.execute("UPDATE alerts SET status = 'resolved', annotations = ? WHERE id = 1", (fine,))
    conn.execute("DELETE FROM alerts WHERE id = 2")
    assert (rowids("full"), rowids("fine"), rowids("cpu")) == ([], [1], [])
    # Reopened (firing): out of the index, its texts changed meanwhile; resolved: back in.
    conn.execute("UPDATE alerts SET status = 'firing' WHERE id = 1")
    conn.execute("""UPDATE alerts SET annotations = '{"summary":"Disk 1"}' WHERE id = 1""")
    assert rowids("disk") == []
    conn.execute("""UPDATE alerts SET status = 'resolved', annotations = '{"summary":"Disk 2"}'"""
                 " WHERE id IN (1, 3)")  # fmt: skip
    assert (rowids("disk 2"), rowids("disk 1")) == ([1, 3], [])
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_postgresql_migration_builds_the_index_and_the_search_uses_it(tmp_path: Path) -> None:
    """A PostgreSQL database at its migration 9 with alerts: opened, migration 10 indexes the
    resolved ones (the firing found by their own text), and the search's query uses the GIN
    index (its plan, with sequential scans off); then the triggers keep it: a repeat of a
    firing episode writes nothing to it, a resolution its texts, a reopening takes them out,
    a deletion too."""
    import asyncpg

    from bridge.store.postgres.schema import MIGRATIONS as PG
    from bridge.store.postgres.store import PostgresStore
    from tests.pg import shared

    cluster = shared()
    url = cluster.new_database()
    (tmp_path / "postgresql-url").write_text(url)

    async def at_nine() -> None:
        conn = await asyncpg.connect(url, password=cluster.password_file.read_text().strip())
        try:
            await conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                               " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
            for number, text in enumerate(PG[:9], start=1):
                await conn.execute(text.replace("{twins}", ""))
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
            for n, (held, status) in enumerate([('{"summary":"Disk f\u00fcll"}', "resolved"),
                                                ('{"summary":"disk full"}', "firing"),
                                                ("{}", "resolved")]):  # fmt: skip
                await conn.execute(
                    "INSERT INTO alerts (fingerprint, starts_at, status, alertname, severity,"
                    " labels, annotations, generator_url, source, first_received_at,"
                    " last_received_at, receive_count, updated_at) VALUES ($1, 0, $3,"
                    " 'r', '', '{}', $2, '', 'alertmanager', 0, 0, 1, 0)",
                    f"f{n}", held, status,
                )  # fmt: skip
        finally:
            await conn.close()

    asyncio.run(at_nine())
    with Sync(IMPLEMENTATIONS["postgresql"](tmp_path)) as sync:
        assert sync(_candidates(sync.store, "DISK F\u00dcLL")) == [1]
        assert sync(_candidates(sync.store, "disk")) == [1, 2]
        assert sync(_indexed(sync.store, "disk")) == [1]
        assert [a.id for a in sync.list_alerts(AlertQuery(text="f\u00fcl"))] == [1]
        store = sync.store
        assert isinstance(store, PostgresStore)

        async def plan(c: Any) -> str:
            async with c.transaction():
                await c.execute("SET LOCAL enable_seqscan = off")
                rows = await c.fetch("EXPLAIN SELECT alert_id FROM alert_texts"
                                     " WHERE text ILIKE $1", "%disk%")  # fmt: skip
            return "\n".join(r[0] for r in rows)

        shown = sync(store._read(plan))
        assert "Bitmap Index Scan on alert_texts_trigrams" in shown, shown

        async def change(c: Any) -> None:
            texts = '{"summary": "cpu 7"}'
            await c.execute("UPDATE alerts SET annotations = $1 WHERE id = 2", texts)
            await c.execute("UPDATE alerts SET status = 'firing' WHERE id = 1")
            await c.execute("UPDATE alerts SET status = 'resolved' WHERE id = 2")
            await c.execute("DELETE FROM alerts WHERE id = 3")

        async def rows(c: Any) -> list[tuple[int, str]]:
            return [tuple(r) for r in await c.fetch("SELECT * FROM alert_texts ORDER BY 1")]

        assert sync(store._read(rows)) == [(1, "Disk f\u00fcll\n"), (3, "\n")]
        sync(store._write(change))
        assert sync(store._read(rows)) == [(2, "cpu 7\n")]


def test_postgresql_a_user_who_may_not_create_pg_trgm_is_told_what_to_do(tmp_path: Path) -> None:
    """A database user with the right to create tables but not extensions: the migration
    stops at pg_trgm with a message naming it and what to run, nothing of it is applied;
    once the database's owner has created the extension, the same user migrates."""
    import asyncpg

    from bridge.store.postgres import schema
    from tests.pg import USER, shared

    cluster = shared()
    url = cluster.new_database()
    database = url.rsplit("/", 1)[1]
    cluster.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'plain')"
                 " THEN CREATE ROLE plain LOGIN PASSWORD 'plain-pw'; END IF; END $$")  # fmt: skip
    cluster.psql("GRANT CREATE ON SCHEMA public TO plain", database)
    plain = url.replace(f"//{USER}@", "//plain@")

    async def migrate() -> int:
        conn = await asyncpg.connect(plain, password="plain-pw")
        try:
            return await schema.migrate(conn)
        finally:
            await conn.close()

    with pytest.raises(StoreError) as refused:
        asyncio.run(migrate())
    assert "CREATE EXTENSION pg_trgm" in str(refused.value)
    # One transaction: not even the table of versions is left.
    assert cluster.psql("SELECT to_regclass('alerts') IS NULL", database) == "t"
    cluster.psql("CREATE EXTENSION pg_trgm", database)
    assert asyncio.run(migrate()) == len(schema.MIGRATIONS)


def test_the_sqlite_search_reads_notes_by_their_partial_index(tmp_path: Path) -> None:
    """The notes a search reads are found by the partial index of note events, not by a
    scan of every event."""
    with Sync(SqliteStore(tmp_path / "alerts.db")) as sync:
        sync.ingest([alert(1, "x", "", False)], T0)
        store = sync.store
        assert isinstance(store, SqliteStore)

        def plan(c: sqlite3.Connection) -> str:
            sql = ("EXPLAIN QUERY PLAN SELECT alert_id FROM events"
                   " WHERE kind = 'note' AND detail LIKE ? ESCAPE '\\'")  # fmt: skip
            return "\n".join(str(r[-1]) for r in c.execute(sql, ("%x%",)))

        assert "events_notes" in store.db.read(plan)


def test_sqlite_looks_a_search_up_by_its_rare_trigrams(tmp_path: Path) -> None:
    """A search with trigrams fewer than RARE episodes hold is looked up by those alone (an AND
    of them: a superset, judged by the listing); one with none by its whole phrase. The
    statements run say which."""
    with Sync(SqliteStore(tmp_path / "alerts.db")) as sync:
        sync.ingest([alert(n, f"disk full on web-{n % 2}", "", True) for n in range(6)], T0)
        store = sync.store
        assert isinstance(store, SqliteStore)

        def looked_up(conn: sqlite3.Connection) -> tuple[Any, list[str]]:
            traced: list[str] = []
            conn.set_trace_callback(traced.append)
            try:
                return sqlite_queries.text_candidates(conn, "web-1"), traced
            finally:
                conn.set_trace_callback(None)

        with mock.patch.object(sqlite_queries, "RARE", 4):  # web-1: 3 episodes, web: 6
            found, traced = store.db.read(looked_up)
        assert found == [2, 4, 6]
        assert any("""MATCH '"b-1"' UNION ALL""" in t for t in traced), traced
        found, traced = store.db.read(looked_up)  # RARE 256: every trigram is rare
        assert any("""MATCH '"web" AND "eb-" AND "b-1"'""" in t for t in traced), traced
        with mock.patch.object(sqlite_queries, "RARE", 0):
            found, traced = store.db.read(looked_up)
        assert found == [2, 4, 6]
        assert any("""MATCH '"web-1"'""" in t for t in traced), traced


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_a_text_the_newest_episodes_hold_densely_is_read_in_order(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text DENSE_HITS of the newest DENSE_WINDOW episodes hold is not looked up (the
    listing fills a page of it soon reading in order); a sparser one is, and a dense one is
    too when the window is too small to hold that many."""
    from bridge.store import textindex

    with Sync(IMPLEMENTATIONS[name](tmp_path)) as sync:
        sync.ingest([alert(n, f"disk full on web-{n}", "", True) for n in range(60)], T0)
        assert sync(_candidates(sync.store, "disk full")) is None
        assert sync(_candidates(sync.store, "web-5")) == [6, *range(51, 61)]
        page = sync.list_page(AlertQuery(text="disk full", limit=50))
        assert len(page.alerts) == 50
        for module in (sqlite_queries, pg_queries):
            monkeypatch.setattr(module, "DENSE_HITS", textindex.DENSE_WINDOW + 1)
        assert sync(_candidates(sync.store, "disk full")) == list(range(1, 61))
