"""The PostgreSQL store as replicas use it, on the tests' own cluster (tests/pg.py): two
stores on one database receiving the same notifications store one row per episode with the
final states one SQLite store reaches; migrations from two replicas starting together run
once; the feed's ids come in commit order across replicas; PostgreSQL stopped is StoreError
(503 to Alertmanager) and its return is noticed without a restart; the password comes from a
file and is never in an error."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bridge.core.alerts import ReceivedAlert
from bridge.core.errors import NotFound, StoreError
from bridge.core.matchers import Matcher
from bridge.core.times import NS
from bridge.store import AlertQuery, AlertStore
from bridge.store.postgres import ingest, schema
from bridge.store.postgres import queries as pg_queries
from bridge.store.postgres.ingest import insert_events
from bridge.store.postgres.store import PostgresStore
from bridge.store.sqlite.store import SqliteStore
from bridge.workers.leader import Leader
from tests.pg import Cluster, cluster
from tests.stores import T0, received

ALL = AlertQuery(limit=100_000)


def replica(pg: Cluster, url: str) -> PostgresStore:
    return PostgresStore(url, password_file=pg.password_file)


async def until_waiting(store: PostgresStore, task: asyncio.Task[Any], waiting: str,
                        finished: str) -> None:  # fmt: skip
    """Until a backend waits as `waiting` (a pg_stat_activity condition) while `task` runs;
    `finished`: what it means when the task ends first (bounded: 10 s)."""
    for _ in range(500):
        assert not task.done(), finished
        if await store.pool.fetchval(f"SELECT count(*) FROM pg_stat_activity WHERE {waiting}"):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"neither waiting nor finished: {finished}")


def history(seed: int, episodes: int = 12, cycles: int = 3) -> list[list[ReceivedAlert]]:
    """Notifications as Alertmanager sends them: each fingerprint fires and resolves several
    times (a new episode each cycle), repeats in between, in one random order per seed,
    grouped a few alerts to a notification (each episode's receipts in order, as
    Alertmanager sends a group)."""
    rng = random.Random(seed)  # noqa: S311 - a test's reproducible order
    by_episode: dict[tuple[str, int], list[ReceivedAlert]] = {}
    for n in range(episodes):
        fingerprint = f"{n:016x}"
        for cycle in range(cycles):
            starts = T0 + cycle * 600 * NS
            ends = starts + 300 * NS
            firing = [received(starts=starts, fingerprint=fingerprint)] * rng.randint(1, 3)
            resolved = received("resolved", starts, ends, fingerprint)
            by_episode[(fingerprint, starts)] = [*firing, resolved]
    queues = list(by_episode.values())
    out: list[list[ReceivedAlert]] = []
    while queues:
        group = []
        for queue in rng.sample(queues, k=min(len(queues), rng.randint(1, 4))):
            group.append(queue.pop(0))
        queues = [q for q in queues if q]
        out.append(group)
    return out


async def final(store: AlertStore) -> tuple[list[tuple[object, ...]], list[list[str]]]:
    alerts = list(reversed(await store.list_alerts(ALL)))
    rows = [(a.fingerprint, a.starts_at, a.status, a.ends_at, a.resolution, a.receive_count)
            for a in alerts]  # fmt: skip
    trails = [[e.kind for e in await store.events(a.id)] for a in alerts]
    return sorted(rows), [trails[i] for i in sorted(range(len(rows)), key=lambda i: rows[i])]


@pytest.mark.parametrize("seed", range(3))
async def test_two_replicas_store_each_episode_once_as_sqlite_would(
    pg_cluster: Cluster, tmp_path: Path, seed: int
) -> None:
    """Both replicas get every notification (as two gossiping Alertmanagers send them), at
    the same time: one row per episode, and the rows and events one SQLite store has after
    receiving every notification twice."""
    notifications = history(seed)
    url = pg_cluster.new_database()
    a, b = replica(pg_cluster, url), replica(pg_cluster, url)
    await asyncio.gather(a.start(), b.start())
    try:

        async def deliver(store: PostgresStore) -> None:
            for n, alerts in enumerate(notifications):
                await store.ingest(alerts, T0 + n * NS)

        # Each replica sends its notifications over several connections at once, too.
        await asyncio.gather(deliver(a), deliver(b))
        got = await final(a)
        assert got == await final(b)
        counts = await a.counts()  # kept by triggers from both replicas' writes
        assert counts == await b.counts()
    finally:
        await asyncio.gather(a.close(), b.close())
    reference = SqliteStore(tmp_path / "alerts.db")
    await reference.start()
    try:
        for n, alerts in enumerate(notifications):
            await reference.ingest(alerts, T0 + n * NS)
            await reference.ingest(alerts, T0 + n * NS)
        expected = await final(reference)
        expected_counts = await reference.counts()
    finally:
        await reference.close()
    assert len({(fp, starts) for fp, starts, *_ in got[0]}) == len(got[0])  # one per episode
    assert got == expected
    assert (dict(counts.by_state), dict(counts.firing)) == (
        dict(expected_counts.by_state), dict(expected_counts.firing),
    )  # fmt: skip


async def test_resolved_counts_follow_every_change_and_fold_when_a_replica_is_gone(
    pg_cluster: Cluster,
) -> None:
    """counts() reads the resolved alerts from the rows the triggers keep (migration 5), one
    row per backend and severity: inserts, resolutions, reopenings, acks and retention keep
    them equal to a count of every alert; a replica's rows are folded into slot 0 once its
    connections are gone, the total unchanged."""
    url = pg_cluster.new_database()
    a, b = replica(pg_cluster, url), replica(pg_cluster, url)
    await asyncio.gather(a.start(), b.start())

    async def truth() -> dict[tuple[str, str], int]:
        rows = await a.pool.fetch(
            "SELECT CASE WHEN status = 'resolved' THEN 'resolved' WHEN acked_at IS NOT NULL"
            " THEN 'acknowledged' ELSE 'firing' END, severity, count(*) FROM alerts GROUP BY 1, 2"
        )
        return {(r[0], r[1]): r[2] for r in rows}

    try:
        ends = T0 + 60 * NS
        await a.ingest([received(fingerprint=f"{n:016x}") for n in range(6)], T0)
        await b.ingest([received("resolved", T0, ends, f"{n:016x}") for n in range(4)], T0)
        await b.ingest([received("resolved", T0, ends, f"{n:016x}") for n in (6, 7)], T0)
        assert (await a.counts()).by_state == await truth()
        alerts = {x.fingerprint: x.id for x in await a.list_alerts(ALL)}
        await a.acknowledge(alerts[f"{5:016x}"], "carol", "", T0 + 1)
        await b.resolve(alerts[f"{5:016x}"], "carol", "done", T0 + 2)
        assert dict((await b.counts()).by_state) == await truth()
        assert (await b.counts()).by_state[("resolved", "warning")] == 7
        await a.set_retention_days(1)
        removed = await a.prune(T0 + 30 * 86400 * NS)
        assert removed == 7
        assert dict((await a.counts()).by_state) == await truth() == {("firing", "warning"): 1}
        before = dict(await a.pool.fetch("SELECT slot, count FROM resolved_counts"))
        await b.ingest([received("resolved", T0, ends, "f" * 16)], T0 + 3)
        after = dict(await a.pool.fetch("SELECT slot, count FROM resolved_counts"))
        (writer,) = [slot for slot, n in after.items() if before.get(slot) != n]
        assert writer != 0  # b's backend has a row of its own
        await b.close()
        for _ in range(100):  # until PostgreSQL has seen b's connections go (bounded: 10 s)
            alive = await a.pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", writer
            )
            if not alive:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("b's backend did not end")
        await a.prune(T0)  # nothing to remove; folds the rows of backends gone
        folded = dict(await a.pool.fetch("SELECT slot, count FROM resolved_counts"))
        assert writer not in folded
        assert sum(folded.values()) == sum(after.values())
        assert dict((await a.counts()).by_state) == await truth() == {
            ("firing", "warning"): 1, ("resolved", "warning"): 1,
        }  # fmt: skip
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_replicas_starting_together_migrate_once(pg_cluster: Cluster) -> None:
    url = pg_cluster.new_database()
    stores = [replica(pg_cluster, url) for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        versions = pg_cluster.psql("SELECT version FROM schema_migrations ORDER BY version",
                                   url.rsplit("/", 1)[1])  # fmt: skip
        assert versions.split() == [str(n) for n in range(1, len(schema.MIGRATIONS) + 1)]
        await stores[0].ingest([received()], T0)
        assert [x.id for x in await stores[3].list_alerts(ALL)] == [1]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_an_event_id_is_readable_only_after_every_smaller_one(pg_cluster: Cluster) -> None:
    """A replica's transaction holds an event (id N) uncommitted; another replica's ingest
    waits for it rather than commit id N+1 first (a follower that read N+1 would never see
    N: sequences hand out ids in the order transactions ask, not the order they commit)."""
    url = pg_cluster.new_database()
    a, b = replica(pg_cluster, url), replica(pg_cluster, url)
    await asyncio.gather(a.start(), b.start())
    held = await asyncpg.connect(url, password=pg_cluster.password)
    try:
        await a.ingest([received()], T0)
        transaction = held.transaction()
        await transaction.start()
        await insert_events(held, [(1, T0, "note", "carol", "held open")])
        other = asyncio.create_task(b.ingest([received(fingerprint="f" * 16)], T0))
        await until_waiting(a, other, "wait_event = 'advisory'",
                            "b committed an event while a smaller id was uncommitted")  # fmt: skip
        assert [e.kind for e in await a.events_after(0)] == ["fired"]
        await transaction.commit()
        await asyncio.wait_for(other, 30)
        events = await a.events_after(0)
        assert [(e.alert_id, e.kind) for e in events] == [(1, "fired"), (1, "note"),
                                                          (2, "fired")]  # fmt: skip
        assert [e.id for e in events] == sorted(e.id for e in events)
    finally:
        await held.close()
        await asyncio.gather(a.close(), b.close())


async def test_retention_never_takes_a_series_an_uncommitted_episode_uses(
    pg_cluster: Cluster,
) -> None:
    """The label index on replicas: one replica's ingest holds a new episode of a series
    uncommitted (the index lock shared) while another prunes the series' only stored
    episode; the prune waits for the lock, then sees the new episode and keeps the series,
    whose label still finds it."""
    url = pg_cluster.new_database()
    a, b = replica(pg_cluster, url), replica(pg_cluster, url)
    await asyncio.gather(a.start(), b.start())
    held = await asyncpg.connect(url, password=pg_cluster.password)
    old = received("resolved", T0, T0 + NS, "a" * 16, team="kept")
    new = received(starts=T0 + 400 * 86400 * NS, fingerprint="a" * 16, team="kept")
    try:
        await a.ingest([old], T0)
        await b.set_retention_days(1)
        transaction = held.transaction()
        await transaction.start()
        await ingest.apply(held, [ingest.PgIngestJob([new], T0, "alertmanager", None)])
        pruning = asyncio.create_task(b.prune(T0 + 400 * 86400 * NS))
        await until_waiting(b, pruning, "wait_event = 'advisory'",
                            "the prune did not wait for the ingest holding the lock")  # fmt: skip
        await transaction.commit()
        assert await asyncio.wait_for(pruning, 30) == 1
        kept = AlertQuery(matchers=(Matcher.parse('team="kept"'),))
        assert [x.starts_at for x in await a.list_alerts(kept)] == [new.starts_at]
        assert await a.pool.fetchval("SELECT count(*) FROM series") == 1
    finally:
        await held.close()
        await asyncio.gather(a.close(), b.close())


async def test_label_values_another_replica_commits_meanwhile_still_get_postings(
    pg_cluster: Cluster,
) -> None:
    """One replica's ingest holds new label values uncommitted while another ingests a new
    series carrying them: the second waits on them, does not insert them, and cannot see them
    in its statement's snapshot; their postings come back from its insert and go in by a
    statement of their own, so that a matcher finds both series through the index."""
    url = pg_cluster.new_database()
    store = replica(pg_cluster, url)
    await store.start()
    held = await asyncpg.connect(url, password=pg_cluster.password)
    one = received(fingerprint="1" * 16, team="raced")
    two = received(fingerprint="2" * 16, team="raced", zone="z")
    try:
        transaction = held.transaction()
        await transaction.start()
        await ingest.apply(held, [ingest.PgIngestJob([one], T0, "alertmanager", None)])
        second = asyncio.create_task(store.ingest([two], T0))
        await until_waiting(store, second, "wait_event = 'transactionid'",
                            "the second ingest did not wait for the values held")  # fmt: skip
        await transaction.commit()
        (two_id,) = (await asyncio.wait_for(second, 30)).fired
        postings = await store.pool.fetchval(
            "SELECT count(*) FROM postings p JOIN series s ON s.id = p.series_id"
            " WHERE s.fingerprint = $1",
            two.fingerprint,
        )
        assert postings == len(two.labels)  # zone=z its own, the other four held by `one`
        raced = AlertQuery(matchers=(Matcher.parse('team="raced"'),))
        assert {x.fingerprint for x in await store.list_alerts(raced)} == {"1" * 16, "2" * 16}
        candidates = await store._read(
            lambda c: pg_queries.label_candidates(c, [Matcher.parse('instance="a:1"')])
        )
        assert candidates is not None
        assert two_id in candidates
    finally:
        await held.close()
        await store.close()


async def test_an_event_never_outlives_its_alert_without_a_foreign_key(
    pg_cluster: Cluster,
) -> None:
    """Events have no foreign key (migration 4: its per-row check halved ingestion of large
    notifications); the writers' locks keep the rule instead. A note on an alert that
    retention holds locked (FOR UPDATE, as prune does) waits; once the alert and its events
    are deleted and committed, the note is NotFound and no event is left without its alert.
    A note on an id that never existed: NotFound, nothing written."""
    url = pg_cluster.new_database()
    store = replica(pg_cluster, url)
    await store.start()
    held = await asyncpg.connect(url, password=pg_cluster.password)
    try:
        keys = await store.pool.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'events'::regclass"
            " AND contype = 'f'"
        )
        assert keys == 0
        (alert_id,) = (await store.ingest([received()], T0)).fired
        with pytest.raises(NotFound):
            await store.add_note(alert_id + 1, "carol", "nothing to note on", T0)
        transaction = held.transaction()
        await transaction.start()
        await held.execute("SELECT id FROM alerts WHERE id = $1 FOR UPDATE", alert_id)
        note = asyncio.create_task(store.add_note(alert_id, "carol", "late", T0 + 1))
        await until_waiting(store, note, "wait_event_type = 'Lock'",
                            "the note did not wait for the alert being deleted")  # fmt: skip
        await held.execute("DELETE FROM events WHERE alert_id = $1", alert_id)
        await held.execute("DELETE FROM alerts WHERE id = $1", alert_id)
        await transaction.commit()
        with pytest.raises(NotFound):
            await asyncio.wait_for(note, 30)
        orphans = await store.pool.fetchval(
            "SELECT count(*) FROM events e WHERE NOT EXISTS"
            " (SELECT 1 FROM alerts a WHERE a.id = e.alert_id)"
        )
        assert orphans == 0
    finally:
        await held.close()
        await store.close()


async def test_statements_are_planned_for_the_table_as_it_is(pg_cluster: Cluster) -> None:
    """Every session plans each statement for its parameters (PLAN_CACHE_MODE): a generic
    plan cached while `alerts` was empty hashed the whole table for every batch (halving
    ingestion on a new database) until autovacuum's first ANALYZE. Here the batch update of
    repeats, run more than the five times after which PostgreSQL would keep a generic plan,
    still probes the primary key once the table has grown, with no ANALYZE between."""
    url = pg_cluster.new_database()
    store = replica(pg_cluster, url)
    await store.start()
    args = "('{1}', '{firing}', '{1}', '{x}', '{x}', '{1}', '{1}', '{1}', '{x}', '{0}')"
    try:
        async with store.pool.acquire() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
            await conn.execute(
                "PREPARE repeats (bigint[], text[], bigint[], text[], text[], bigint[], bigint[],"
                f" bigint[], text[], bigint[]) AS {ingest._UPDATE}"
            )
            for _ in range(8):
                await conn.execute(f"EXECUTE repeats {args}")
            await conn.execute(
                "INSERT INTO alerts (fingerprint, starts_at, status, alertname, severity, labels,"
                " annotations, generator_url, source, first_received_at, last_received_at,"
                " receive_count, updated_at) SELECT md5(i::text), $1, 'firing', 'x', 'warning',"
                " '{}', '{}', '', 'alertmanager', 1, 1, 1, 1 FROM generate_series(1, 20000) i",
                T0,
            )
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE repeats {args}"))
        assert "Index Scan using alerts_pkey" in plan, plan
    finally:
        await store.close()


async def test_postgresql_down_is_a_store_error_and_its_return_is_noticed() -> None:
    """Stopped: ingest raises StoreError (the webhook's 503) and problem() says why; started
    again: the same store writes again without a restart of the bridge."""
    with cluster() as own:
        store = replica(own, own.new_database())
        await store.start()
        try:
            await store.ingest([received()], T0)
            own.pg_ctl("stop", "-m", "immediate", "-w")
            with pytest.raises(StoreError, match="PostgreSQL"):
                await store.ingest([received(fingerprint="1" * 16)], T0)
            problem = await store.problem()
            assert problem is not None
            assert "PostgreSQL" in problem
            own.start_again()
            # The pool's connections died with the server: each is found dead at its next
            # use and replaced; within the pool's size every call succeeds again.
            for _ in range(store.pool_size + 2):
                try:
                    await store.ingest([received(fingerprint="2" * 16)], T0)
                    break
                except StoreError:
                    continue
            else:
                raise AssertionError("the store did not recover")
            assert await store.problem() is None
            fingerprints = {x.fingerprint for x in await store.list_alerts(ALL)}
            assert fingerprints == {"0123456789abcdef", "2" * 16}  # nothing answered twice
        finally:
            await store.close()


async def test_a_wake_up_reaches_the_other_replica_and_survives_a_restart() -> None:
    """wake_others on one replica calls the other's on_wake callback (NOTIFY/LISTEN): the
    leader's reconciler hears of an ack made through a replica that does not lead. The
    listener says so once when it (re)connects, and after PostgreSQL restarts it listens
    again by itself; stopped, it hears nothing more."""
    with cluster() as own:
        url = own.new_database()
        a, b = replica(own, url), replica(own, url)
        await asyncio.gather(a.start(), b.start())
        heard: asyncio.Queue[None] = asyncio.Queue()
        stop = await a.on_wake(lambda: heard.put_nowait(None))
        try:
            await asyncio.wait_for(heard.get(), 10)  # listening
            await b.wake_others()
            await asyncio.wait_for(heard.get(), 10)
            await asyncio.gather(*(b.wake_others() for _ in range(5)))  # coalesced, all sent
            await asyncio.wait_for(heard.get(), 10)
            own.pg_ctl("stop", "-m", "immediate", "-w")
            await b.wake_others()  # PostgreSQL down: logged, not raised
            own.start_again()
            await asyncio.wait_for(heard.get(), 30)  # listening again
            while not heard.empty():
                heard.get_nowait()
            for _ in range(b.pool_size + 2):  # b's pool finds its dead connections first
                await b.wake_others()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard.get(), 2)
                    break
            else:
                raise AssertionError("no wake-up heard after the restart")
        finally:
            await stop()
        await b.wake_others()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(heard.get(), 0.5)
        await asyncio.gather(a.close(), b.close())


async def test_a_wrong_password_is_a_clear_error_without_the_password(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password-s3cr3t\n")
    store = PostgresStore(pg_cluster.new_database(), password_file=wrong)
    with pytest.raises(StoreError) as caught:
        await store.start()
    assert "password" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    missing = PostgresStore(pg_cluster.url(), password_file=tmp_path / "none")
    with pytest.raises(StoreError, match="password file"):
        await missing.start()


async def test_another_replica_takes_the_lease_when_its_holder_stops_renewing(
    pg_cluster: Cluster,
) -> None:
    """A holder that stops renewing (killed) loses the background work to another replica
    within a term and a third; one that stops cleanly hands it over at the next try."""
    url = pg_cluster.new_database()
    a, b = replica(pg_cluster, url), replica(pg_cluster, url)
    await asyncio.gather(a.start(), b.start())
    first, second = Leader(a, term=0.6, holder="a"), Leader(b, term=0.6, holder="b")
    try:
        assert await first.try_once()
        assert not await second.try_once()
        running = asyncio.create_task(second.run_forever())
        began = asyncio.get_running_loop().time()
        await asyncio.wait_for(second.gained.wait(), 5)  # a never renewed: as if killed
        taken = asyncio.get_running_loop().time() - began
        assert taken <= 0.6 + 0.2 + 0.5  # the term, a third of it, and some slack
        assert not await first.try_once()  # a, back, is refused
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        assert not second.held  # stopped cleanly: released
        assert await first.try_once()  # at once, not after a term
    finally:
        await asyncio.gather(a.close(), b.close())


async def test_a_deadlock_is_retried_and_an_sql_error_is_a_store_error(
    pg_cluster: Cluster,
) -> None:
    store = replica(pg_cluster, pg_cluster.new_database())
    await store.start()
    tries: list[int] = []

    async def flaky(conn: object) -> str:
        tries.append(1)
        if len(tries) < 3:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return "done"

    async def broken(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT no_such_column FROM alerts")

    try:
        assert await store._write(flaky) == "done"
        assert len(tries) == 3
        with pytest.raises(StoreError, match="PostgreSQL: column"):
            await store._write(broken)
        await store.ingest([received()], T0)  # the writer goes on
    finally:
        await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.ingest([received()], T0)
    assert await store.problem() == "storage is not open"


async def test_an_outage_is_logged_in_lines_not_tracebacks(
    pg_cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg's pool logs each failed reconnect with a traceback: once a store has started,
    such a record keeps the error's text on its line and loses the traceback."""
    import logging

    store = replica(pg_cluster, pg_cluster.new_database())
    await store.start()
    try:
        with caplog.at_level(logging.WARNING, "asyncpg.pool"):
            try:
                raise ConnectionRefusedError(111, "Connect call failed")
            except ConnectionRefusedError:
                logging.getLogger("asyncpg.pool").warning(
                    "Failed to restore the pool connection floor; retrying", exc_info=True
                )
        (record,) = caplog.records
        assert record.exc_info is None
        assert record.getMessage() == (
            "Failed to restore the pool connection floor; retrying: ConnectionRefusedError:"
            " [Errno 111] Connect call failed"
        )
    finally:
        await store.close()
