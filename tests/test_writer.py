"""Group commit: shared transactions, per-job isolation, failure of a whole batch, recovery."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bridge.actions import acknowledge
from bridge.episodes import IngestJob, IngestResult, ingest
from bridge.errors import NotFound, StoreError
from bridge.store import NS, Job, Store
from bridge.writer import Writer
from tests.test_store import T0, received, rows


async def test_concurrent_jobs_share_commits(tmp_path: Path) -> None:
    """200 concurrent ingests commit in far fewer transactions, all durable."""
    store = Store(tmp_path / "a.db")
    async with Writer(store) as writer:
        jobs = [writer.submit(ingest([received(fingerprint=f"{i:016x}")], T0)) for i in range(200)]
        results = await asyncio.gather(*jobs)
    assert [r.fired for r in results] == [[i + 1] for i in range(200)]
    assert writer.jobs == 200
    assert writer.batches < 200
    assert len(rows(store)) == 200
    store.close()


async def test_failing_job_does_not_fail_its_batch(tmp_path: Path) -> None:
    """A job raising a domain error is rolled back alone; the rest of the batch commits."""
    store = Store(tmp_path / "a.db")
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
    store = Store(tmp_path / "a.db", busy_timeout_ms=50)
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
    store = Store(tmp_path / "a.db")
    writer = Writer(store)
    with pytest.raises(StoreError, match="not running"):
        await writer.submit(ingest([received()], T0))
    store.close()


async def test_lone_failing_job_leaves_nothing_behind(tmp_path: Path) -> None:
    """A batch of one job that writes and then raises is rolled back; the writer carries on."""
    store = Store(tmp_path / "a.db")

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


async def test_unisolated_job_that_raises_rolls_back_its_whole_batch(tmp_path: Path) -> None:
    """isolate=False skips the savepoint, so a job that raises anyway fails its batch whole:
    every caller gets a StoreError and nothing of the batch is stored; the writer carries on."""
    store = Store(tmp_path / "a.db")
    started, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:  # keeps the writer busy while the batch queues
        started.set()
        assert gate.wait(10)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        ingest([received(fingerprint="e" * 16)], T0)(conn)
        raise RuntimeError("a bug")

    async with Writer(store) as writer:
        held = asyncio.ensure_future(writer.submit(hold))
        assert await asyncio.to_thread(started.wait, 10)
        batch = [
            asyncio.ensure_future(writer.submit(ingest([received()], T0), isolate=False)),
            asyncio.ensure_future(writer.submit(half_then_fail, isolate=False)),
            asyncio.ensure_future(writer.submit(ingest([received(fingerprint="f" * 16)], T0))),
        ]
        await asyncio.sleep(0)  # a yield, not a wait: lets the three tasks queue their jobs
        gate.set()
        await held
        results = await asyncio.gather(*batch, return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results), results
        assert "a bug" in str(results[1])
        assert rows(store) == []
        after = await writer.submit(ingest([received()], T0), isolate=False)
    assert after.fired == [1]
    store.close()


async def _queued_behind_a_held_job(
    writer: Writer, submissions: Sequence[tuple[Job[Any], bool]]
) -> list[Any]:
    """Submit the jobs while the writer is busy, so that they make one batch; their outcomes."""
    started, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        assert gate.wait(10)

    held = asyncio.ensure_future(writer.submit(hold))
    assert await asyncio.to_thread(started.wait, 10)
    futures = [asyncio.ensure_future(writer.submit(job, isolate)) for job, isolate in submissions]
    await asyncio.sleep(0)  # a yield, not a wait: lets the tasks queue their jobs
    gate.set()
    await held
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
    store = Store(tmp_path / "a.db")

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


async def test_a_failing_run_rolls_back_its_whole_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs run together fail together, like any unisolated job: nothing of the batch stays."""
    original = IngestJob.run_together

    def half_then_fail(conn: sqlite3.Connection, jobs: Sequence[IngestJob]) -> list[IngestResult]:
        original(conn, jobs)
        raise RuntimeError("a bug")

    monkeypatch.setattr(IngestJob, "run_together", staticmethod(half_then_fail))
    store = Store(tmp_path / "a.db")
    async with Writer(store) as writer:
        results = await _queued_behind_a_held_job(
            writer,
            [(ingest([received(fingerprint=f"{n:016x}")], T0), False) for n in (1, 2)]
            + [(ingest([received(fingerprint="f" * 16)], T0), True)],
        )
        assert all(isinstance(r, StoreError) for r in results), results
        assert rows(store) == []
        monkeypatch.setattr(IngestJob, "run_together", staticmethod(original))
        after = await writer.submit(ingest([received()], T0), isolate=False)
    assert after.fired == [1]
    store.close()
