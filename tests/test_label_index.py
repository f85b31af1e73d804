"""The label index (bridge.store.labelindex) on every store: a listing with matchers answers
what a full scan answers, from candidates the index gives (the path asserted, not only the
answer); a store of the schema before the index gets it built by its migration; retention
leaves no series, value or posting that no episode uses."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.alerts import ReceivedAlert
from bridge.core.matchers import Matcher
from bridge.core.times import NS
from bridge.store import AlertQuery, AlertStore, labelindex
from bridge.store.labelindex import Resolved, literals, lookup, pair_key, resolve
from bridge.store.postgres import queries as pg_queries
from bridge.store.sqlite import queries as sqlite_queries
from bridge.store.sqlite.schema import MIGRATIONS, connect
from bridge.store.sqlite.store import SqliteStore
from tests.stores import IMPLEMENTATIONS, T0, Sync

ALL = AlertQuery(limit=100_000)
NAMES = ("team", "instance", "x")
VALUES = ("a", "b", "web-1", "web-2", "a|b", "")


def alert(fingerprint: str, labels: dict[str, str], resolved: bool, n: int) -> ReceivedAlert:
    labels = {"alertname": "r", **labels}
    return ReceivedAlert(
        fingerprint=fingerprint,
        status="resolved" if resolved else "firing",
        starts_at=T0 + n * NS,
        ends_at=T0 + (n + 1) * NS if resolved else None,
        labels=dict(sorted(labels.items())),
        annotations={},
        generator_url="",
    )


label_sets = st.dictionaries(st.sampled_from(NAMES), st.sampled_from(VALUES), max_size=3)
stored = st.lists(
    # (shared, labels, resolved): the fingerprint a hash of the labels (as Alertmanager's), or
    # when `shared` is 0 one fingerprint for any labels: two series under one fingerprint (two
    # senders' hashes), which the index must not miss.
    st.tuples(st.integers(0, 7), label_sets, st.booleans()),
    min_size=1,
    max_size=14,
)
matcher = st.builds(
    lambda name, op, value: Matcher.parse(f'{name}{op}"{value}"'),
    st.sampled_from(NAMES),
    st.sampled_from(["=", "!=", "=~", "!~"]),
    st.sampled_from([*VALUES, "web-.*", ".*", "a|", "(a|web-1)", "zzz", "b.*"]),
)


def _candidates(store: AlertStore, matchers: Sequence[Matcher]) -> Any:
    """The store's label_candidates (the index's answer before the listing's other filters)."""
    if isinstance(store, SqliteStore):
        return store._read(lambda c: sqlite_queries.label_candidates(c, matchers))
    from bridge.store.postgres.store import PostgresStore

    assert isinstance(store, PostgresStore)
    return store._read(lambda c: pg_queries.label_candidates(c, matchers))


def _index_rows(sync: Sync) -> tuple[int, int, int]:
    """Rows in series, label_values and postings."""
    store = sync.store
    tables = ("series", "label_values", "postings")
    if isinstance(store, SqliteStore):

        def read(c: Any) -> list[int]:
            return [c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables]

        found = store.db.read(read)
    else:
        from bridge.store.postgres.store import PostgresStore

        assert isinstance(store, PostgresStore)

        async def counts(c: Any) -> list[int]:
            return [await c.fetchval(f"SELECT count(*) FROM {t}") for t in tables]

        found = sync(store._read(counts))
    return found[0], found[1], found[2]


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
@settings(max_examples=30, deadline=None)
@given(stored, st.lists(matcher, min_size=1, max_size=3), st.integers(1, 14), st.booleans())
def test_a_listing_with_matchers_equals_a_full_scan(
    name: str,
    rows: list[tuple[int, dict[str, str], bool]],
    matchers: list[Matcher],
    chunk: int,
    prune: bool,
) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="labels-") as tmp,
        Sync(IMPLEMENTATIONS[name](Path(tmp))) as sync,
    ):
        alerts = [alert(_fingerprint(shared, labels), labels, resolved, n)
                  for n, (shared, labels, resolved) in enumerate(rows)]  # fmt: skip
        for at in range(0, len(alerts), chunk):  # one by one, or in notifications
            sync.ingest(alerts[at : at + chunk], T0)
        if prune:  # the resolved go: their series with them, unless an episode is left
            sync.set_retention_days(1)
            sync.prune(T0 + 400 * 86400 * NS)
        everything = sync.list_alerts(ALL)
        expected = {a.id for a in everything if all(m.matches(a.labels) for m in matchers)}
        query = AlertQuery(matchers=tuple(matchers), limit=100_000)
        assert {a.id for a in sync.list_alerts(query)} == expected
        for sort in ("newest", "attention"):  # a page of 3, then the next: nothing missed
            seen: list[int] = []
            page = sync.list_page(AlertQuery(matchers=tuple(matchers), limit=3, sort=sort))
            for _ in range(20):
                seen += [a.id for a in page.alerts]
                if page.next_cursor is None:
                    break
                page = sync.list_page(_after(matchers, page.next_cursor, sort))
            assert sorted(seen) == sorted(expected)
        firing = AlertQuery(matchers=tuple(matchers), status="firing", limit=100_000)
        assert {a.id for a in sync.list_alerts(firing)} == {
            a.id for a in everything if a.id in expected and a.status == "firing"
        }
        # The path: the index gives a superset of the matching episodes (exactly them when
        # no fingerprint has two label sets), or says every series can match.
        candidates = sync(_candidates(sync.store, matchers))
        resolved = _resolved(matchers, everything)
        if resolved.nothing:
            assert candidates == []
        elif resolved.required or resolved.excluded:
            assert candidates is not None
            assert set(candidates) >= expected
            fingerprints: dict[str, set[str]] = {}
            for a in everything:
                fingerprints.setdefault(a.fingerprint, set()).add(str(sorted(a.labels.items())))
            if all(len(v) == 1 for v in fingerprints.values()):
                assert set(candidates) == expected
        else:
            assert candidates is None
        if not everything:
            assert _index_rows(sync) == (0, 0, 0)


def _fingerprint(shared: int, labels: dict[str, str]) -> str:
    return "shared" if shared == 0 else labelindex.md5_hex(str(sorted(labels.items())))


def _after(matchers: list[Matcher], cursor: str, sort: str) -> AlertQuery:
    from bridge.store.query import parse_alert_query

    params = {"filter": [str(m) for m in matchers], "cursor": [cursor], "limit": ["3"],
              "sort": [sort]}  # fmt: skip
    return parse_alert_query(params, T0)


def _resolved(matchers: list[Matcher], alerts: list[Any]) -> Resolved:
    """What resolve() makes of the matchers over the label values these alerts carry."""
    pairs = sorted({(k, v) for a in alerts for k, v in a.labels.items()})
    ids = {pair: n for n, pair in enumerate(pairs)}
    return resolve(matchers, {m: _as_a_store_reads(m, [(ids[(k, v)], v) for k, v in pairs
                                                        if k == m.name])
                              for m in matchers})  # fmt: skip


def _as_a_store_reads(m: Matcher, stored: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """The values of a matcher's label a store reads for it (labelindex.lookup): its literals,
    or those it accepts (or refuses) by the matcher itself."""
    how, what = lookup(m)
    if how == "keys":
        return [(i, v) for i, v in stored if pair_key(m.name, v) in what]  # type: ignore[operator]
    return [(i, v) for i, v in stored if m.matches({m.name: v}) == what]


def test_resolve_and_literals() -> None:
    """A matcher the empty string satisfies excludes the values it refuses; any other requires
    one it accepts; literal regexes are looked up by key, not by testing every value."""
    values = {"team": [(1, "a"), (2, "b")]}

    def of(*texts: str) -> Resolved:
        ms = [Matcher.parse(t) for t in texts]
        return resolve(ms, {m: _as_a_store_reads(m, values.get(m.name, [])) for m in ms})

    assert of('team="a"') == Resolved(((1,),), ())
    assert of('team!="a"') == Resolved((), (1,))
    assert of('team=~"a|b"', 'team!~"b"') == Resolved(((1, 2),), (2,))
    assert of('team="c"').nothing
    assert of('other="x"').nothing
    assert of('other!="x"') == Resolved((), ())  # every series: the listing reads in order
    assert of('team=~".*"') == Resolved((), ())
    assert literals(Matcher.parse('i=~"web-1|web-2"')) == frozenset({"web-1", "web-2"})
    for not_literal in ('i=~"web.1"', 'i=~"a|"', 'i=""', 'i!=""', 'i=~"x+"'):
        assert literals(Matcher.parse(not_literal)) is None, not_literal


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_retention_leaves_no_orphan_entries(name: str, tmp_path: Path) -> None:
    """A series goes with its last episode, a value with the last series carrying it."""
    with Sync(IMPLEMENTATIONS[name](tmp_path)) as sync:
        day = 86400 * NS
        sync.ingest([alert("1" * 16, {"team": "a", "x": "only-old"}, True, 0),
                     alert("2" * 16, {"team": "a"}, True, 1),
                     alert("2" * 16, {"team": "a"}, False, 2 * 86400 * 30)], T0)  # fmt: skip
        # series: 1/{team=a,x=only-old}, 2/{team=a}; values: alertname=r, team=a, x=only-old
        assert _index_rows(sync) == (2, 3, 5)
        sync.set_retention_days(1)
        assert sync.prune(T0 + 10 * day) == 2
        # Series 1 had no episode left; series 2 keeps its firing one.
        assert _index_rows(sync) == (1, 2, 2)
        assert sync.list_alerts(AlertQuery(matchers=(Matcher.parse('x="only-old"'),))) == []
        assert sync(_candidates(sync.store, [Matcher.parse('x="only-old"')])) == []
        assert [a.id for a in sync.list_alerts(AlertQuery(matchers=(Matcher.parse('team="a"'),)))
                ] == [3]  # fmt: skip
        sync.ingest([alert("2" * 16, {"team": "a"}, True, 2 * 86400 * 30)], T0)
        assert sync.prune(T0 + 400 * day) == 1
        assert _index_rows(sync) == (0, 0, 0)


@pytest.mark.parametrize("name", sorted(IMPLEMENTATIONS))
def test_a_notification_of_more_series_than_a_statement_binds(name: str, tmp_path: Path) -> None:
    """601 new series in one notification (SQLite binds INDEX_ROWS a statement, the last
    padded with copies of its last row), each with a value of its own and values shared; then
    the same label sets again as new episodes (every series known): each found by its own
    value, every value once, every posting once."""
    with Sync(IMPLEMENTATIONS[name](tmp_path)) as sync:
        count = 601  # postings: 1,803, the last 11 padded to 16
        first = [alert(f"{n:016x}", {"team": f"t{n % 3}", "x": f"v{n}"}, False, n)
                 for n in range(count)]  # fmt: skip
        sync.ingest(first, T0)
        # values: alertname=r, team=t0..t2, x=v0..v599; postings: 3 a series
        assert _index_rows(sync) == (count, 4 + count, 3 * count)
        sync.ingest([alert(a.fingerprint, dict(a.labels), False, count + n)
                     for n, a in enumerate(first)], T0)  # fmt: skip
        assert _index_rows(sync) == (count, 4 + count, 3 * count)
        for n in (0, 255, 256, 257, 511, 600):
            query = AlertQuery(matchers=(Matcher.parse(f'x="v{n}"'),))
            assert [a.starts_at for a in sync.list_alerts(query)] == [
                T0 + (count + n) * NS,
                T0 + n * NS,
            ]
        team = AlertQuery(matchers=(Matcher.parse('team="t1"'),), limit=100_000)
        assert len(sync.list_alerts(team)) == 2 * (count // 3)


def test_the_migration_builds_the_index_of_a_store_of_the_schema_before(tmp_path: Path) -> None:
    """A database at migration 12 (no index) with alerts in it: opened, it is migrated, and
    its alerts are found through the index it built."""
    path = tmp_path / "alerts.db"
    conn = connect(path)
    for number, text in enumerate(MIGRATIONS[:12], start=1):
        conn.executescript(f"BEGIN;\n{text.replace('{twins}', '')}\n"
                           f"PRAGMA user_version = {number};\nCOMMIT;")  # fmt: skip
    columns = ("fingerprint, starts_at, status, alertname, severity, labels, annotations,"
               " generator_url, source, first_received_at, last_received_at, receive_count,"
               " updated_at")  # fmt: skip
    for n, (fp, labels) in enumerate([("f1", '{"alertname":"r","team":"a"}'),
                                      ("f1", '{"alertname":"r","team":"a"}'),
                                      ("f2", '{"alertname":"r","team":"b"}')]):  # fmt: skip
        conn.execute(f"INSERT INTO alerts ({columns}) VALUES (?, ?, 'firing', 'r', '', ?,"
                     " '{}', '', 'alertmanager', 0, 0, 1, 0)", (fp, n, labels))  # fmt: skip
    conn.close()
    with Sync(SqliteStore(path)) as sync:
        team_a = [Matcher.parse('team="a"')]
        assert sync(_candidates(sync.store, team_a)) == [1, 2]
        assert sync(_candidates(sync.store, [Matcher.parse('team=~"c|d"')])) == []
        assert [a.id for a in sync.list_alerts(AlertQuery(matchers=tuple(team_a)))] == [2, 1]
        assert _index_rows(sync) == (2, 3, 4)
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_postgresql_finds_values_by_name_in_a_btree_whatever_the_name(tmp_path: Path) -> None:
    """A label name of 1,024 four-byte characters (past a B-tree entry) is stored, and a
    regex on it reads its values by name (migration 9's index of the name's first
    NAME_PREFIX characters, which the lookup's query uses: its plan, with sequential scans
    off, is that index)."""
    from bridge.store.postgres.schema import NAME_PREFIX
    from bridge.store.postgres.store import PostgresStore

    long = "\U0001f600" * 1024
    with Sync(IMPLEMENTATIONS["postgresql"](tmp_path)) as sync:
        sync.ingest([alert("f" * 16, {long: "v1", "team": "a"}, False, 0),
                     alert("e" * 16, {long: "v2"}, False, 1),
                     alert("d" * 16, {long[:-1]: "v3"}, False, 2)], T0)  # fmt: skip
        regex = Matcher(long, "=~", "v.")
        found = sync.list_alerts(AlertQuery(matchers=(regex,)))
        assert sorted(a.fingerprint for a in found) == ["e" * 16, "f" * 16]
        assert sorted(sync(_candidates(sync.store, [regex]))) == sorted(a.id for a in found)
        store = sync.store
        assert isinstance(store, PostgresStore)

        async def plan(c: Any) -> str:
            async with c.transaction():
                await c.execute("SET LOCAL enable_seqscan = off")
                rows = await c.fetch(
                    f"EXPLAIN SELECT id FROM label_values WHERE left(name, {NAME_PREFIX})"
                    f" = left($1, {NAME_PREFIX}) AND name = $1",
                    long,
                )
            return "\n".join(r[0] for r in rows)

        shown = sync(store._read(plan))
        assert "label_values_name" in shown, shown
        assert f'"left"(name, {NAME_PREFIX})' in shown.split("Index Cond:")[1], shown


def test_postgresql_walks_the_newest_first_when_the_index_cannot_narrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_EPISODES candidates the listing reads newest first, with sequential scans and
    parallel plans off for its transaction only (PostgreSQL misjudges JSON tests as rare and
    scanned the whole table); with the index's ids, or no matcher, the planner's own plan."""
    from bridge.store.postgres.store import PostgresStore

    walked: list[bool] = []
    real = pg_queries.fetch

    async def fetch(conn: Any, *args: Any) -> Any:
        walked.append(args[-1] if len(args) == 6 else False)
        return await real(conn, *args)

    monkeypatch.setattr(pg_queries, "fetch", fetch)
    with Sync(IMPLEMENTATIONS["postgresql"](tmp_path)) as sync:
        sync.ingest([alert(f"{n:016x}", {"team": "a", "x": str(n)}, False, n) for n in range(5)],
                    T0)  # fmt: skip
        team = AlertQuery(matchers=(Matcher.parse('team="a"'),))
        assert len(sync.list_alerts(team)) == 5
        assert len(sync.list_alerts(AlertQuery())) == 5
        monkeypatch.setattr(pg_queries, "MAX_EPISODES", 2)
        assert [a.labels["x"] for a in sync.list_alerts(team)] == ["4", "3", "2", "1", "0"]
        assert walked == [False, False, True]
        store = sync.store
        assert isinstance(store, PostgresStore)

        async def settings(c: Any) -> list[str]:
            async with c.transaction():
                await c.execute(pg_queries._WALK)
                inside = [await c.fetchval("SHOW enable_seqscan"),
                          await c.fetchval("SHOW max_parallel_workers_per_gather")]  # fmt: skip
            return [*inside, await c.fetchval("SHOW enable_seqscan")]

        assert sync(store._read(settings)) == ["off", "0", "on"]


def test_postgresql_migration_builds_the_index(tmp_path: Path) -> None:
    """The same on PostgreSQL: a database at its migration 7 with alerts, then opened."""
    import asyncpg

    from bridge.store.postgres.schema import MIGRATIONS as PG
    from tests.pg import shared

    cluster = shared()
    url = cluster.new_database()
    (tmp_path / "postgresql-url").write_text(url)

    async def at_seven() -> None:
        conn = await asyncpg.connect(url, password=cluster.password_file.read_text().strip())
        try:
            await conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
                               " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")  # fmt: skip
            for number, text in enumerate(PG[:7], start=1):
                await conn.execute(text.replace("{twins}", ""))
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
            old = [
                ("f1", '{"alertname":"r","team":"a"}'),
                ("f2", '{"alertname":"r","team":"\u00e4"}'),
            ]
            for n, (fp, labels) in enumerate(old):
                await conn.execute(
                    "INSERT INTO alerts (fingerprint, starts_at, status, alertname, severity,"
                    " labels, annotations, generator_url, source, first_received_at,"
                    " last_received_at, receive_count, updated_at) VALUES ($1, $2, 'firing',"
                    " 'r', '', $3, '{}', '', 'alertmanager', 0, 0, 1, 0)",
                    fp,
                    n,
                    labels,
                )
        finally:
            await conn.close()

    import asyncio

    asyncio.run(at_seven())
    with Sync(IMPLEMENTATIONS["postgresql"](tmp_path)) as sync:
        assert sync(_candidates(sync.store, [Matcher.parse('team="\u00e4"')])) == [2]
        assert sync(_candidates(sync.store, [Matcher.parse('team!~"a|\u00e4"')])) == []
        assert _index_rows(sync) == (2, 3, 4)
        # A new episode of a migrated series: its key as PostgreSQL's md5() made it.
        sync.ingest([alert("f2", {"team": "\u00e4"}, False, 5)], T0)
        assert _index_rows(sync) == (2, 3, 4)
        assert sync(_candidates(sync.store, [Matcher.parse('team="\u00e4"')])) == [2, 3]


def test_keys_are_what_sql_computes() -> None:
    """The keys Python computes for new rows are the ones the migrations' SQL computes."""
    conn = connect(":memory:")
    fp, labels = "f\u00e9", '{"n\u00e4me":"v\u00e4lue"}'
    sql = conn.execute("SELECT md5(length(?1) || ':' || ?1 || ?2)", (fp, labels)).fetchone()[0]
    assert sql == labelindex.series_key(fp, labels)
    name, value = "n\u00e4me", "v\u00e4lue"
    sql = conn.execute("SELECT md5(length(?1) || ':' || ?1 || ?2)", (name, value)).fetchone()[0]
    assert sql == labelindex.pair_key(name, value)
