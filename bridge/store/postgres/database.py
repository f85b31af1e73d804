"""The PostgreSQL store's connection to its database: the pool (asyncpg), the group-commit
writer (the jobs queued together run in one transaction; answered after COMMIT,
`synchronous_commit` on), reads on the pool, and the wake-ups between replicas (LISTEN and
NOTIFY). While PostgreSQL cannot be reached every call raises StoreError (the HTTP layer
answers 503); the pool connects again by itself. The store itself (bridge.store.postgres.store)
is built on this, as SQLite's is on bridge.store.sqlite.database and .writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import asyncpg

from bridge.core.errors import Conflict, NotFound, StoreError
from bridge.host.aio import stop_task, wait_event
from bridge.store.postgres import schema
from bridge.store.postgres.ingest import PgIngestJob, apply

log = logging.getLogger(__name__)


class _OneLine(logging.Filter):
    """asyncpg's pool logs each failed reconnect of an outage with a traceback (a connection
    refused is not a bug): the exception's text is kept, on the same line, and the
    traceback dropped. The log's RepeatFilter folds the repeats."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_ONE_LINE = _OneLine()
#: The channel of wake-ups between replicas (store.wake_others / on_wake).
WAKE_CHANNEL = "alertbridge_wake"
T = TypeVar("T")
Conn = Any  # an asyncpg connection (asyncpg ships no type hints)
#: Failures of a transaction that running it again resolves (another replica's lock order).
RETRY = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
#: Failures that mean PostgreSQL is unreachable, restarting or failing over.
DOWN = (OSError, asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.InterfaceError, asyncio.TimeoutError)  # fmt: skip


def _down(exc: BaseException) -> StoreError:
    return StoreError(f"PostgreSQL is unreachable: {exc or type(exc).__name__}")


class _Job:
    __slots__ = ("done", "run")

    def __init__(self, run: Callable[[Conn], Awaitable[Any]] | PgIngestJob) -> None:
        self.run = run
        self.done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


#: Every statement planned for its own parameters and the table as it is now. asyncpg
#: prepares each statement once per connection, and PostgreSQL then keeps a generic plan after
#: five runs: on a new database that plan was made while `alerts` was nearly empty (a hash of
#: the whole table), and nothing replaces it until autovacuum's first ANALYZE, a minute or more
#: away. The batch lookup of episodes (then a join) took 3.6 ms at 20,000 rows instead of
#: 0.36 ms, halving ingestion; planning each time costs about 2 % once the table is analysed
#: (a harness of the store alone, 32 callers: 4,474 -> 8,288 one-alert notifications/s on a
#: new database; 8,705 vs 8,564 on an analysed one of 200,000 alerts).
PLAN_CACHE_MODE = "force_custom_plan"


class Database:
    """A PostgreSQL database as the store uses it: its pool, its writer, its wake-ups."""

    def __init__(self, url: str, *, password_file: str | Path | None = None,
                 pool_size: int = 8, max_batch: int = 256, query_timeout: float | None = None,
                 read_only: bool = False, writers: int = 1) -> None:  # fmt: skip
        self.url = url
        #: Transactions in flight at once (each writer runs one batch after another). More
        #: than one measured no faster (bench.ingest --store postgresql: 2,008 vs 2,200
        #: one-alert notifications/s, 15,500 vs 16,600 alerts/s, within the runs' spread).
        self.writers = writers
        self.read_only = read_only
        self.password_file = password_file
        self.pool_size = pool_size
        self.max_batch = max_batch
        self.query_timeout = query_timeout
        self.pool: Any = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._writers: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._watchers: list[asyncio.Event] = []
        self._waking: asyncio.Task[None] | None = None
        self._wake_again = False

    # --- lifecycle ----------------------------------------------------------------------

    def _password(self) -> str | None:
        if self.password_file is None:
            return None  # libpq's environment or password file (asyncpg reads both)
        try:
            return Path(self.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StoreError(f"cannot read the PostgreSQL password file: {exc}") from None

    async def _connect(self) -> None:
        """The pool (a read-only store checks the schema's version; nothing is migrated)."""
        try:
            logging.getLogger("asyncpg.pool").addFilter(_ONE_LINE)  # (once: it is the same)
            self.pool = await asyncpg.create_pool(
                self.url, password=self._password(), min_size=1, max_size=self.pool_size,
                command_timeout=self.query_timeout, server_settings={
                    "synchronous_commit": "on", "application_name": "alertbridge",
                    "default_transaction_read_only": "on" if self.read_only else "off",
                    "plan_cache_mode": PLAN_CACHE_MODE},
            )  # fmt: skip
            if self.read_only:
                async with self.pool.acquire() as conn:
                    await schema.check_version(conn)
        except (*DOWN, asyncpg.PostgresError) as exc:
            await self._fail(exc)

    async def _on_this_loop(self) -> None:
        """The pool and the writers belong to one event loop; the CLI runs one per call. On
        another loop, what the last one held went with it: connect again (and start the
        writers again if the store was started)."""
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        self._drop_pool()
        self.pool, self._writers, self._queue = None, [], asyncio.Queue()
        self._loop = loop
        if self._started:
            await self._connect()
            self._start_writers()

    def _drop_pool(self) -> None:
        """Let go of a pool whose event loop has ended (its connections with it: closing them
        on that loop is no longer possible; the sockets close when collected)."""
        if self.pool is not None:
            with contextlib.suppress(Exception):
                self.pool.terminate()
        self.pool = None

    def _start_writers(self) -> None:
        if not self.read_only:
            self._writers = [asyncio.create_task(self._write_forever(), name=f"postgres-writer-{n}")
                             for n in range(self.writers)]  # fmt: skip

    async def start(self) -> None:
        """Connect, migrate (under the advisory lock), start the writer."""
        await self._on_this_loop()
        if self._started:
            return
        if self.pool is None:
            await self._connect()
        if not self.read_only:
            try:
                async with self.pool.acquire() as conn:
                    await schema.migrate(conn)
            except (*DOWN, asyncpg.PostgresError) as exc:
                await self._fail(exc)
        self._started = True
        self._start_writers()

    async def _fail(self, exc: BaseException) -> NoReturn:
        """A start that failed: no pool left behind; StoreError saying why."""
        await self._close_pool()
        if isinstance(exc, DOWN):
            raise _down(exc) from None
        raise StoreError(f"PostgreSQL: {exc}") from None

    async def _close_pool(self) -> None:
        pool, self.pool = self.pool, None
        if pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pool.close(), 10)

    async def close(self) -> None:
        if self._loop is not asyncio.get_running_loop():  # the loop it ran on is gone
            self._drop_pool()
            self.pool, self._writers, self._started = None, [], False
            return
        if self._waking is not None:  # a wake-up being sent: let it go first (bounded)
            await asyncio.wait({self._waking}, timeout=2)
            await stop_task(self._waking)
            self._waking = None
        for writer in self._writers:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        self._writers = []
        self._started = False
        while not self._queue.empty():
            self._queue.get_nowait().done.set_exception(StoreError("the store is closed"))
        await self._close_pool()

    async def problem(self) -> str | None:
        if self.pool is None:
            return "storage is not open"
        try:
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), 2)
        except (*DOWN, asyncpg.PostgresError) as exc:
            return f"PostgreSQL is unreachable: {exc or type(exc).__name__}"
        return None

    # --- the writer -------------------------------------------------------------------

    async def _write_forever(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            if isinstance(first.run, PgIngestJob):
                key = first.run.merge_key
                while len(batch) < self.max_batch and not self._queue.empty():
                    nxt = self._queue._queue[0]  # type: ignore[attr-defined]  # peek
                    if not (isinstance(nxt.run, PgIngestJob) and nxt.run.merge_key == key):
                        break
                    batch.append(self._queue.get_nowait())
            await self._run(batch)
            if self._watchers:
                watchers, self._watchers = self._watchers, []
                for watcher in watchers:
                    watcher.set()

    async def _run(self, batch: list[_Job]) -> None:
        """One transaction for the batch, again after a deadlock (bounded); each job's
        future gets its result after COMMIT, or the error."""
        for attempt in range(5):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    if isinstance(batch[0].run, PgIngestJob):
                        jobs = [j.run for j in batch if isinstance(j.run, PgIngestJob)]
                        results: list[Any] = await apply(conn, jobs)
                    else:
                        run = batch[0].run
                        if isinstance(run, PgIngestJob):  # (never: ingest jobs are above)
                            raise TypeError("an ingest job alone")
                        results = [await run(conn)]
                for job, result in zip(batch, results, strict=True):
                    if not job.done.done():
                        job.done.set_result(result)
                return
            except RETRY:
                if attempt == 4:
                    error: BaseException = StoreError("PostgreSQL: a deadlock, five times")
                    break
                await asyncio.sleep(0.01 * (attempt + 1))
            except DOWN as exc:
                error = _down(exc)
                break
            except (Conflict, NotFound, StoreError) as exc:
                error = exc
                break
            except asyncpg.PostgresError as exc:
                error = StoreError(f"PostgreSQL: {exc}")
                break
            except Exception as exc:  # (a job's own error, e.g. Unprocessable)
                error = exc
                break
        for job in batch:
            if not job.done.done():
                job.done.set_exception(error)

    async def _write(self, run: Callable[[Conn], Awaitable[T]] | PgIngestJob) -> T:
        if self.read_only:
            raise StoreError(f"{self.url} is open for reading only")
        await self._on_this_loop()
        if not self._writers or self.pool is None:
            raise StoreError("storage is not open")
        job = _Job(run)
        self._queue.put_nowait(job)
        result: T = await job.done
        return result

    async def _read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        await self._on_this_loop()
        if self.pool is None:  # reads need no start (as SQLite's): connect for them
            await self._connect()
        try:
            async with self.pool.acquire() as conn:
                return await fn(conn)
        except DOWN as exc:
            raise _down(exc) from None
        except asyncpg.PostgresError as exc:
            raise StoreError(f"PostgreSQL: {exc}") from None

    def changes(self) -> asyncio.Event:
        watcher = asyncio.Event()
        self._watchers.append(watcher)
        return watcher

    async def wake_others(self) -> None:
        """NOTIFY the replicas' listeners, one NOTIFY in flight at a time: a wake-up asked
        for meanwhile is sent once after it, and waits for it."""
        if self._waking is None or self._waking.done():
            self._waking = asyncio.get_running_loop().create_task(self._notify())
        else:
            self._wake_again = True
        await asyncio.shield(self._waking)

    async def _notify(self) -> None:
        self._wake_again = True
        while self._wake_again:
            self._wake_again = False
            try:
                await self._read(lambda c: c.execute("SELECT pg_notify($1, '')", WAKE_CHANNEL))
            except StoreError as exc:  # (the rounds catch up)
                log.warning("could not wake the other replicas: %s", exc)
                return

    async def on_wake(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        task = asyncio.get_running_loop().create_task(self._listen(callback))

        async def stop() -> None:
            await stop_task(task)

        return stop

    async def _listen(self, callback: Callable[[], None], check: float = 30.0) -> None:
        """LISTEN on a connection of its own, again after it is lost (checked every `check`
        seconds, and at once when PostgreSQL closes it)."""
        backoff = 0.5
        while True:
            try:
                conn = await asyncpg.connect(
                    self.url, password=self._password(), timeout=10,
                    server_settings={"application_name": "alertbridge-wake"},
                )  # fmt: skip
            except (*DOWN, asyncpg.PostgresError, StoreError) as exc:
                log.debug("wake-ups: cannot listen yet: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            lost = asyncio.Event()
            try:
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(WAKE_CHANNEL, lambda *_: callback())
                backoff = 0.5
                callback()  # (re)connected: a wake-up may have gone while it was not listening
                while not lost.is_set():
                    await wait_event(lost, check)
                    if not lost.is_set():
                        await conn.fetchval("SELECT 1", timeout=10)
            except (*DOWN, asyncpg.PostgresError) as exc:
                log.debug("wake-ups: listening lost: %s", exc)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
