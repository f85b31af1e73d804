"""Group commit: one writer thread runs queued jobs in shared transactions, synced in groups.

Each job runs inside its own SAVEPOINT, so a job that raises (an unknown id, a conflict) is
rolled back alone and its caller gets the error, while the others commit. Jobs submitted with
`isolate=False` (ingesting a validated notification: they should fail only when storage
does) skip the savepoint, two statements of about six; if one raises anyway, the batch is
rolled back and run again with every job in a savepoint of its own, so that the job at fault
fails alone and every other caller is answered as if it had been alone. Consecutive such
jobs that say they can
(`merge_key`, `run_together`: the webhook's ingest jobs) run as one: a batch of thirty
one-alert notifications costs about six statements, not a hundred and twenty, and the writer
thread gives the event loop back the GIL that much sooner.

If the COMMIT itself fails (disk full, I/O error, lock timeout) every caller in the batch gets
a StoreError and nothing of the batch is stored.

Durability, pipelined: a caller's future resolves only once its batch is on disk, so the
webhook's 2xx means the notification survives a power loss, as with `synchronous=FULL`. But
the writer does not wait for the disk itself: in WAL mode its connection commits with
`synchronous=NORMAL` (COMMIT writes the batch's frames to the WAL file and returns) and a
second thread, the syncer, makes them durable with one fdatasync of the WAL while the writer
runs the next batch. SQLite appends frames in order, so one fdatasync covers every batch
committed before it began; the syncer takes all the batches waiting, syncs once, then
settles their callers. Under load the fsync can take longer than the batch's statements, so
overlapping the two shortens every caller's wait (`bench/ingest.py`: the receiver beside its
no-fsync baseline).

What this changes, and why it is safe: a committed batch is visible to readers (the REST API)
for the millisecond or so before its fsync ends. A power loss in that window loses it, but
none of its callers was answered: Alertmanager retries the notification, and the episode
rules make the retry a plain insert again. Anything acted on later is its own job, answered
after its own fdatasync, which covers every frame before it. If the fdatasync fails, the
callers waiting on it get a StoreError (503: Alertmanager retries; the retry finds the rows
and counts a repeat), as when COMMIT fails. A database not in WAL mode (a filesystem without
shared memory) keeps `synchronous=FULL` and nothing is pipelined.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from bridge.core.errors import StoreError
from bridge.store.sqlite.database import Database, Job

log = logging.getLogger(__name__)
T = TypeVar("T")


#: The writer connection's page cache, in KiB (SQLite's default is 2,000: a store of a
#: million alerts then reads most index pages a new episode touches back from the OS on every
#: insert). Memory taken only as pages are read; 64 MiB holds the index pages of several
#: million alerts. Measured with bench/ingest.py's load on the tree before the label index
#: (a scratch driver, 2026-12-07): the server's CPU per 100-alert notification of new alerts
#: 5.1 -> 4.0 ms with it. It does not keep ingestion flat as the store grows (bench/growth.py:
#: the pages a batch dirties at random are written to the WAL at COMMIT all the same).
WRITER_CACHE_KIB = 65536


@dataclass(slots=True)
class _Pending:
    job: Job[Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    isolate: bool


class _Unisolated(Exception):
    """A job submitted with isolate=False raised: its partial work cannot be undone alone."""


_STOP = object()
#: Callers to answer after a batch: per event loop, (future, result, error).
Settlements = dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]]


def _settle_all(settled: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, result, error in settled:
        _settle(future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class _Syncer:
    """The thread that makes the writer's commits durable before their callers are answered.

    `settle_after_sync` queues a committed batch's settlements; the thread takes every batch
    queued, runs one fdatasync of the WAL (`wal` None: nothing to sync, the connection syncs
    its own commits), then wakes each event loop once for all of them.
    """

    def __init__(self, wal: str | None, on_sync: Callable[[bool], None]) -> None:
        self.wal = wal
        self.on_sync = on_sync
        self._fd: int | None = None
        self._queue: queue.SimpleQueue[Settlements | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="alertbridge-syncer", daemon=True)
        self._thread.start()

    def settle_after_sync(self, settlements: Settlements) -> None:
        self._queue.put(settlements)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Sync and settle what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batches = [self._queue.get()]
            while True:
                try:
                    batches.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batches:
                stopping = True
                batches = [b for b in batches if b is not _STOP]
            by_loop: Settlements = {}
            for batch in batches:
                if isinstance(batch, dict):
                    for loop, settled in batch.items():
                        by_loop.setdefault(loop, []).extend(settled)
            if not by_loop:
                continue
            failure = self._sync()
            self.on_sync(failure is None)
            for loop, settled in by_loop.items():
                if failure is not None:  # committed, but maybe not on disk
                    settled = [(future, None, failure) for future, _, _ in settled]
                loop.call_soon_threadsafe(_settle_all, settled)

    def _sync(self) -> StoreError | None:
        """fdatasync the WAL; the error to give the callers if that failed."""
        if self.wal is None:
            return None
        try:
            # Opened once: SQLite deletes the WAL only when the last connection to the database
            # closes, and the writer's, open since before its first commit, outlives this thread.
            if self._fd is None:
                self._fd = os.open(self.wal, os.O_RDONLY | os.O_CLOEXEC)
            os.fdatasync(self._fd)
        except OSError as exc:
            log.error("syncing %s failed: %s", self.wal, exc)
            return StoreError(f"storage failed: syncing the write-ahead log: {exc}")
        return None


class Writer:
    """The single writer of a Store, shared by every async caller.

    >>> # async with Writer(store) as writer: await writer.submit(job)
    """

    def __init__(self, store: Database, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Pending | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._syncer: _Syncer  # started by the writer thread, with its connection
        self._start_error: StoreError | None = None
        self.batches = 0
        self.jobs = 0
        self.replays = 0  # batches run again job by job after an unisolated job raised
        #: The last batch failed in storage (commit or sync); cleared by one that succeeds.
        self.failing = False

    def start(self) -> None:
        """Start the thread; returns once its connection and syncer are up."""
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="alertbridge-writer", daemon=True
        )
        self._thread.start()
        if not ready.wait(30):
            raise StoreError("the storage writer did not start")
        if self._start_error is not None:
            self._thread = None
            raise self._start_error

    @property
    def queued(self) -> int:
        """Jobs submitted and not yet taken into a batch."""
        return self._queue.qsize()

    @property
    def alive(self) -> bool:
        """The writer thread and its syncer run."""
        syncer: _Syncer | None = getattr(self, "_syncer", None)
        thread = self._thread
        return thread is not None and thread.is_alive() and syncer is not None and syncer.alive

    def _synced(self, ok: bool) -> None:
        if not ok:
            self.failing = True

    def stop(self) -> None:
        """Finish the queued jobs, then stop the thread."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None

    async def __aenter__(self) -> Writer:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    async def submit(self, job: Job[T], isolate: bool = True) -> T:
        """Run `job` in the next batch; returns its result after the batch committed.

        isolate=False: the job raises only when storage fails (see the module's docstring).
        """
        if self._thread is None:
            raise StoreError("the writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(job, future, loop, isolate))
        return await future

    def _run(self, ready: threading.Event) -> None:
        try:
            conn = self.store.new_connection()
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            self._syncer = _Syncer(self._pipeline(conn), self._synced)
        except sqlite3.Error as exc:
            self._start_error = StoreError(f"the storage writer cannot start: {exc}")
            return
        finally:
            ready.set()
        try:
            self._serve(conn)
        finally:
            self._syncer.stop()
            conn.close()

    @staticmethod
    def _pipeline(conn: sqlite3.Connection) -> str | None:
        """In WAL mode, commit without waiting for the disk: the WAL's path for the syncer."""
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            return None
        path: str = conn.execute("PRAGMA database_list").fetchone()[2]  # WAL: always a file
        conn.execute("PRAGMA synchronous = NORMAL")
        return path + "-wal"

    def _serve(self, conn: sqlite3.Connection) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            self._commit(conn, [p for p in batch if isinstance(p, _Pending)])

    def _commit(self, conn: sqlite3.Connection, batch: list[_Pending]) -> None:
        try:
            outcomes = self._transaction(conn, batch)
        except _Unisolated:
            # One of the unisolated jobs raised on its own data: run the batch again with each
            # job in a savepoint, so that only that job fails. Storage faults still fail all.
            self.replays += 1
            outcomes = self._transaction(conn, [replace(p, isolate=True) for p in batch])
        # Answered once on disk; one wake-up per event loop per batch, not one per job.
        by_loop: Settlements = {}
        for pending, (result, error) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(pending.loop, []).append((pending.future, result, error))
        self._syncer.settle_after_sync(by_loop)
        self.batches += 1
        self.jobs += len(batch)  # committed (or failed) and handed to the syncer

    def _transaction(
        self, conn: sqlite3.Connection, batch: list[_Pending]
    ) -> list[tuple[Any, BaseException | None]]:
        """Run the batch in one transaction: each job's outcome, or a StoreError for every job
        when storage failed. _Unisolated propagates, with the transaction rolled back."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                outcomes = self._run_jobs(conn, batch)
                if conn.in_transaction:
                    conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            log.error("storage batch of %d job(s) failed: %s", len(batch), exc)
            self.failing = True
            return [(None, StoreError(f"storage failed: {exc}"))] * len(batch)
        self.failing = False
        return outcomes

    @staticmethod
    def _run_jobs(
        conn: sqlite3.Connection, batch: list[_Pending]
    ) -> list[tuple[Any, BaseException | None]]:
        """Run the jobs in the open transaction; a job's own error undoes only its work.

        Storage errors propagate: the connection itself is in trouble, the batch fails.
        """
        if len(batch) == 1:  # nothing to isolate it from: its error rolls back the transaction
            try:
                return [(batch[0].job(conn), None)]
            except Exception as exc:
                if _storage_fault(exc):
                    raise
                conn.execute("ROLLBACK")
                return [(None, exc)]
        outcomes: list[tuple[Any, BaseException | None]] = []
        for run in _runs(batch):
            first = run[0]
            if first.isolate:  # always a run of one
                conn.execute("SAVEPOINT job")
                try:
                    outcomes.append((first.job(conn), None))
                    conn.execute("RELEASE job")
                except Exception as exc:
                    if _storage_fault(exc):
                        raise
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((None, exc))
                continue
            try:
                if len(run) == 1:
                    outcomes.append((first.job(conn), None))
                else:
                    jobs = [p.job for p in run]
                    outcomes += [(r, None) for r in first.job.run_together(conn, jobs)]  # type: ignore[attr-defined]
            except Exception as exc:
                if _storage_fault(exc):
                    raise
                raise _Unisolated() from exc
        return outcomes


#: sqlite3 errors caused by a job's own data (a constraint, a value SQLite cannot bind or
#: hold): they fail that job alone. Every other sqlite3 error is the storage's.
_JOB_FAULTS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError)


def _storage_fault(exc: Exception) -> bool:
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, _JOB_FAULTS)


def _runs(batch: list[_Pending]) -> list[list[_Pending]]:
    """The batch in order, cut into runs: consecutive jobs that can run as one, else singles.

    Jobs combine when submitted with isolate=False and they have equal `merge_key`s and a
    `run_together(conn, jobs)` returning one result per job (like IngestJob).
    """
    runs: list[list[_Pending]] = []
    key: object = None
    for pending in batch:
        job = pending.job
        combines = not pending.isolate and hasattr(job, "run_together")
        this = getattr(job, "merge_key", None) if combines else None
        if this is not None and this == key:
            runs[-1].append(pending)
        else:
            runs.append([pending])
        key = this
    return runs
