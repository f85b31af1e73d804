"""Group commit: shared transactions, per-job isolation, failure of a whole batch, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from bridge.core.errors import NotFound, StoreError
from bridge.core.times import NS
from bridge.store import IngestResult
from bridge.store.sqlite.actions import acknowledge
from bridge.store.sqlite.database import Database, Job
from bridge.store.sqlite.ingest import IngestJob
from bridge.store.sqlite.writer import WRITER_CACHE_KIB, Writer
from tests.stores import T0, ingest, received
from tests.stores import alert_rows as rows
from tests.support import until


async def test_concurrent_jobs_share_commits(tmp_path: Path) -> None:
    """200 concurrent ingests commit in far fewer transactions, all durable."""
    store = Database(tmp_path / "a.db")
    async with Writer(store) as writer:
        jobs = [writer.submit(ingest([received(fingerprint=f"{i:016x}")], T0)) for i in range(200)]
        results = await asyncio.gather(*jobs)
    assert [r.fired for r in results] == [[i + 1] for i in range(200)]
    assert writer.jobs == 200
    assert writer.batches < 200
    assert len(rows(store)) == 200
    store.close()


async def test_the_writer_keeps_a_page_cache_of_its_own(tmp_path: Path) -> None:
    """The writer's connection caches WRITER_CACHE_KIB of pages; the store's others keep
    SQLite's default (a reader per thread would multiply the memory)."""
    store = Database(tmp_path / "a.db")
    async with Writer(store) as writer:
        size = await writer.submit(lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0])
    assert size == -WRITER_CACHE_KIB
    assert store.new_connection().execute("PRAGMA cache_size").fetchone()[0] == -2000
    store.close()


async def test_failing_job_does_not_fail_its_batch(tmp_path: Path) -> None:
    """A job raising a domain error is rolled back alone; the rest of the batch commits."""
    store = Database(tmp_path / "a.db")
    async with Writer(store) as writer:
        good = writer.submit(ingest([received()], T0))
        bad = writer.submit(acknowledge(99, "a", "", T0))
        other = writer.submit(ingest([received(fingerprint="f" * 16)], T0))
        results = await asyncio.gather(good, bad, other, return_exceptions=True)
    assert isinstance(results[1], NotFound)
    assert len(rows(store)) == 2
    store.close()


async def test_locked_database_fails_the_batch_then_recovers(tmp_path: Path) -> None:
    """While another process holds the write lock jobs fail (StoreError); afterwards they work."""
    store = Database(tmp_path / "a.db", busy_timeout_ms=50)
    blocker = sqlite3.connect(tmp_path / "a.db", isolation_level=None)
    async with Writer(store) as writer:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match="database is locked"):
            await writer.submit(ingest([received()], T0))
        assert rows(store) == []
        blocker.execute("ROLLBACK")
        result = await writer.submit(ingest([received()], T0 + NS))
    assert result.fired == [1]
    blocker.close()
    store.close()


async def test_submit_after_stop_is_a_store_error(tmp_path: Path) -> None:
    """A stopped writer refuses work instead of hanging."""
    store = Database(tmp_path / "a.db")
    writer = Writer(store)
    with pytest.raises(StoreError, match="not running"):
        await writer.submit(ingest([received()], T0))
    store.close()


async def test_lone_failing_job_leaves_nothing_behind(tmp_path: Path) -> None:
    """A batch of one job that writes and then raises is rolled back; the writer carries on."""
    store = Database(tmp_path / "a.db")

    def half_then_fail(conn: sqlite3.Connection) -> None:
        ingest([received()], T0)(conn)
        raise NotFound("changed my mind")

    async with Writer(store) as writer:
        with pytest.raises(NotFound, match="changed my mind"):
            await writer.submit(half_then_fail)
        assert rows(store) == []
        result = await writer.submit(ingest([received(fingerprint="f" * 16)], T0))
    assert result.fired == [1]
    assert writer.batches == writer.jobs == 2
    store.close()


async def test_unisolated_job_that_raises_fails_alone(tmp_path: Path) -> None:
    """isolate=False skips the savepoint; a job that raises anyway makes the writer run the
    batch again job by job: that job fails alone with its own error, nothing of it is stored,
    and every other caller is answered as if it had been alone."""
    store = Database(tmp_path / "a.db")

    def half_then_fail(conn: sqlite3.Connection) -> None:
        ingest([received(fingerprint="e" * 16)], T0)(conn)
        raise RuntimeError("a bug")

    async with Writer(store) as writer:
        results = await _queued_behind_a_held_job(
            writer,
            [(ingest([received()], T0), False), (half_then_fail, False),
             (ingest([received(fingerprint="f" * 16)], T0), True)],
        )  # fmt: skip
        assert isinstance(results[1], RuntimeError), results
        assert [r.fired for r in (results[0], results[2])] == [[1], [2]]
        assert {r[0] for r in rows(store)} == {received().fingerprint, "f" * 16}
        assert writer.replays == 1
        after = await writer.submit(ingest([received(fingerprint="d" * 16)], T0), isolate=False)
    assert after.fired == [3]
    store.close()


async def test_a_poisoned_merged_run_fails_only_the_poison(tmp_path: Path) -> None:
    """Ingest jobs merged into one run, one of them holding a value SQLite cannot store (an
    integer beyond 64 bits slipped past validation): that job fails alone; the other 20 are
    stored once and answered with their own results, as if each had been alone."""
    store = Database(tmp_path / "a.db")
    good = [ingest([received(fingerprint=f"{i:016x}")], T0) for i in range(20)]
    poison = ingest([received(fingerprint="e" * 16, starts=2**63)], T0)
    async with Writer(store) as writer:
        results = await _queued_behind_a_held_job(
            writer, [(job, False) for job in [*good[:10], poison, *good[10:]]]
        )
    assert isinstance(results[10], OverflowError), results[10]
    fired = [r.fired for r in results[:10] + results[11:]]
    assert sorted(i for f in fired for i in f) == list(range(1, 21))
    assert all(len(f) == 1 for f in fired)
    assert len(rows(store)) == 20
    assert writer.replays == 1
    store.close()


@contextlib.asynccontextmanager
async def writer_held(writer: Writer) -> AsyncIterator[None]:
    """Keep the writer busy with a job of its own for the block, so that what is submitted
    meanwhile queues up and makes one batch when the block ends."""
    started, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        assert gate.wait(10)

    held = asyncio.ensure_future(writer.submit(hold))
    assert await asyncio.to_thread(started.wait, 10)
    try:
        yield
    finally:
        gate.set()
        await held


async def _queued_behind_a_held_job(
    writer: Writer, submissions: Sequence[tuple[Job[Any], bool]]
) -> list[Any]:
    """Submit the jobs while the writer is busy, so that they make one batch; their outcomes."""
    async with writer_held(writer):
        futures = [asyncio.ensure_future(writer.submit(j, isolate)) for j, isolate in submissions]
        await asyncio.sleep(0)  # a yield, not a wait: lets the tasks queue their jobs
    return await asyncio.gather(*futures, return_exceptions=True)


async def test_queued_ingest_jobs_run_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consecutive unisolated ingest jobs of one source run as one; an isolated job or another
    source starts a new run; every caller gets its own result."""
    runs: list[int] = []
    original = IngestJob.run_together

    def counting(conn: sqlite3.Connection, jobs: Sequence[IngestJob]) -> list[IngestResult]:
        runs.append(len(jobs))
        return original(conn, jobs)

    monkeypatch.setattr(IngestJob, "run_together", staticmethod(counting))
    store = Database(tmp_path / "a.db")

    def one(n: int, source: str = "alertmanager") -> Job[Any]:
        return ingest([received(fingerprint=f"{n:016x}")], T0, source=source)

    async with Writer(store) as writer:
        results = await _queued_behind_a_held_job(
            writer,
            [(one(1), False), (one(2), False), (one(3), False),  # a run of three
             (one(4), True),  # isolated: alone
             (one(5), False), (one(6), False),  # a run of two
             (one(7, "local"), False)],  # another source: alone
        )  # fmt: skip
    assert runs == [3, 2]
    assert [r.fired for r in results] == [[n] for n in range(1, 8)]
    assert len(rows(store)) == 7
    store.close()


async def test_a_failing_merged_run_is_replayed_job_by_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A merged run that raises (here run_together itself, after writing) is rolled back and
    its jobs run again one by one in savepoints: no caller sees the run's failure, and
    nothing it wrote before failing stays twice."""
    original = IngestJob.run_together

    def half_then_fail(conn: sqlite3.Connection, jobs: Sequence[IngestJob]) -> list[IngestResult]:
        original(conn, jobs)
        raise RuntimeError("a bug")

    monkeypatch.setattr(IngestJob, "run_together", staticmethod(half_then_fail))
    store = Database(tmp_path / "a.db")
    async with Writer(store) as writer:
        results = await _queued_behind_a_held_job(
            writer,
            [(ingest([received(fingerprint=f"{n:016x}")], T0), False) for n in (1, 2)]
            + [(ingest([received(fingerprint="f" * 16)], T0), True)],
        )
    assert [r.fired for r in results] == [[1], [2], [3]]
    assert [r[0] for r in rows(store)] == ["0000000000000001", "0000000000000002", "f" * 16]
    assert writer.replays == 1
    store.close()


class HeldSync:
    """os.fdatasync replaced: records the inode of each file synced; `hold()` makes the next
    calls wait until `release()`; `fail` makes them raise EIO."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: list[int] = []
        self.entered = threading.Event()
        self.released = threading.Event()
        self.released.set()
        self.fail = False
        real = os.fdatasync

        def fdatasync(fd: int) -> None:
            self.entered.set()
            assert self.released.wait(10), "the test never released the sync"
            if self.fail:
                raise OSError(errno.EIO, "Input/output error")
            real(fd)
            self.synced.append(os.fstat(fd).st_ino)

        monkeypatch.setattr(os, "fdatasync", fdatasync)

    def hold(self) -> None:
        self.entered.clear()
        self.released.clear()

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 10), "no sync began"

    def release(self) -> None:
        self.released.set()


def _count(store: Database) -> int:
    count: int = store.read(lambda c: c.execute("SELECT count(*) FROM alerts").fetchone()[0])
    return count


async def test_answered_only_once_the_wal_is_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller is answered after an fdatasync of the database's WAL that began after its
    commit, never before; meanwhile the writer commits the next batches (it does not wait
    for the disk), and one sync then covers them all."""
    sync = HeldSync(monkeypatch)
    store = Database(tmp_path / "a.db")
    async with Writer(store) as writer:
        sync.hold()
        first = asyncio.ensure_future(writer.submit(ingest([received()], T0)))
        await sync.wait_entered()
        assert _count(store) == 1  # committed, its frames written to the WAL
        later = [
            asyncio.ensure_future(writer.submit(ingest([received(fingerprint=f"{i:016x}")], T0)))
            for i in range(1, 4)
        ]
        await until_written(lambda: writer.jobs == 4)  # handed to the syncer
        assert _count(store) == 4  # committed while the first sync is still held
        assert not any(f.done() for f in [first, *later])  # none answered before its sync
        sync.release()
        results = await asyncio.gather(first, *later)
        assert sorted(r.fired[0] for r in results) == [1, 2, 3, 4]
        wal_inode = os.stat(f"{tmp_path / 'a.db'}-wal").st_ino
        assert sync.synced == [wal_inode, wal_inode]  # the first batch, then all the later ones
    store.close()


async def until_written(condition: Callable[[], bool]) -> None:
    """Until the writer thread made `condition` true (it has no event to await)."""
    await until(condition, "the writer to get there", 10, 0.01)


async def test_a_failed_sync_fails_its_callers_then_the_writer_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fdatasync fails: the callers waiting on it get a StoreError (a 503, so Alertmanager
    retries), and the retry, finding the committed row, counts a repeat; later syncs work."""
    sync = HeldSync(monkeypatch)
    store = Database(tmp_path / "a.db")
    async with Writer(store) as writer:
        sync.fail = True
        with pytest.raises(StoreError, match=r"syncing the write-ahead log: .*Input/output"):
            await writer.submit(ingest([received()], T0))
        sync.fail = False
        retry = await writer.submit(ingest([received()], T0 + NS))
    assert (retry.fired, retry.repeats) == ([], 1)
    assert rows(store) == [("0123456789abcdef", T0, "firing", None, 2)]
    store.close()


async def test_stopping_answers_every_queued_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopping the writer while a sync is held, with a later batch committed behind it:
    both are synced and answered before the writer has stopped."""
    sync = HeldSync(monkeypatch)
    store = Database(tmp_path / "a.db")
    writer = Writer(store)
    await writer.__aenter__()
    sync.hold()
    first = asyncio.ensure_future(writer.submit(ingest([received()], T0)))
    await sync.wait_entered()
    later = [
        asyncio.ensure_future(writer.submit(ingest([received(fingerprint=f"{i:016x}")], T0)))
        for i in range(1, 5)
    ]
    await until_written(lambda: writer.jobs == 5)
    stopping = asyncio.ensure_future(writer.__aexit__(None, None, None))
    sync.release()
    await asyncio.wait_for(stopping, 10)
    assert all(f.done() for f in [first, *later])
    results = await asyncio.gather(first, *later)
    assert sorted(r.fired[0] for r in results) == [1, 2, 3, 4, 5]
    assert len(sync.synced) == 2
    store.close()


def test_without_wal_the_connection_syncs_its_own_commits(tmp_path: Path) -> None:
    """Pipelining needs a WAL to sync: in rollback-journal mode the writer's connection keeps
    synchronous=FULL; in WAL mode it commits with NORMAL and the syncer syncs the WAL."""
    conn = sqlite3.connect(tmp_path / "journal.db", isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    assert Writer._pipeline(conn) is None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    conn.execute("PRAGMA journal_mode = WAL")
    assert Writer._pipeline(conn) == f"{tmp_path / 'journal.db'}-wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1
    conn.close()
