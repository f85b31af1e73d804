"""The PostgreSQL implementation of the store interface: a connection pool (asyncpg), writes
through a group-commit writer (the jobs queued together run in one transaction; answered after
COMMIT, `synchronous_commit` on), reads on the pool. While PostgreSQL cannot be reached every
call raises StoreError (the HTTP layer answers 503); the pool connects again by itself.

The contract suite (tests/test_store_contract.py) runs on both implementations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import asyncpg
import orjson

from bridge.core.aio import stop_task, wait_event
from bridge.core.alerts import ReceivedAlert
from bridge.core.errors import Conflict, NotFound, StoreError, Unprocessable
from bridge.core.times import NS
from bridge.store import actions
from bridge.store.actions import Change
from bridge.store.postgres import escalations, schema
from bridge.store.postgres.ingest import PgIngestJob, apply
from bridge.store.records import (
    DEFAULT_RETENTION_DAYS,
    PAGE_CHARS,
    SYSTEM_ACTORS,
    AlertCounts,
    AlertDetail,
    AlertQuery,
    AmView,
    EpisodeKey,
    Escalation,
    Event,
    FeedEntry,
    IngestResult,
    Page,
    SilenceChange,
    StoredAlert,
    feed_data,
)
from bridge.store.rows import COLUMNS, SAME_ROW, TABLES, row_to_alert
from bridge.store.rows import text_field as _text

if TYPE_CHECKING:
    import pyarrow as pa

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
_EVENT = "SELECT id, alert_id, at, kind, actor, detail FROM events"
_RANK = "CASE WHEN acked_at IS NOT NULL THEN 2 WHEN am_state = 'suppressed' THEN 1 ELSE 0 END"
_SEVERITY_RANK = ("CASE severity WHEN 'critical' THEN 0 WHEN 'error' THEN 1 WHEN 'warning'"
                  " THEN 2 WHEN 'info' THEN 3 ELSE 4 END")  # fmt: skip
_RESOLVED_RANK = 3


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


class PostgresStore:
    """Alerts in a PostgreSQL database (migrated on start)."""

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

    async def __aenter__(self) -> PostgresStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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

    # --- what arrives -------------------------------------------------------------------

    async def ingest(
        self,
        alerts: Sequence[ReceivedAlert],
        received_at: int,
        source: str = "alertmanager",
        actor: str | None = None,
    ) -> IngestResult:
        if not alerts:
            return IngestResult()
        result: IngestResult = await self._write(PgIngestJob(alerts, received_at, source, actor))
        return result

    # --- reads --------------------------------------------------------------------------

    async def get_alert(self, alert_id: int) -> StoredAlert:
        return await self._read(lambda c: _get(c, alert_id))

    async def get_alerts(self, ids: Sequence[int]) -> list[StoredAlert]:
        async def read(conn: Conn) -> list[StoredAlert]:
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM alerts WHERE id = ANY($1::bigint[])",  # noqa: S608
                                    list(ids))  # fmt: skip
            found = {a.id: a for a in map(row_to_alert, rows)}
            return [found[i] for i in ids if i in found]

        return await self._read(read)

    async def list_page(self, query: AlertQuery) -> Page:
        rows, full = await self._read(lambda c: _select(c, query, PAGE_CHARS))
        more = full or len(rows) == query.limit
        return Page([a for a, _ in rows], rows[-1][1] if rows and more else None)

    async def list_alerts(self, query: AlertQuery) -> list[StoredAlert]:
        rows, _ = await self._read(lambda c: _select(c, query, None))
        return [a for a, _ in rows]

    async def alert_detail(self, alert_id: int) -> AlertDetail:
        async def read(conn: Conn) -> AlertDetail:
            alert = await _get(conn, alert_id)
            budget, events, truncated = PAGE_CHARS, [], False
            async with conn.transaction():
                async for row in conn.cursor(_EVENT + " WHERE alert_id = $1 ORDER BY id",
                                             alert_id):  # fmt: skip
                    if budget <= 0:
                        truncated = True
                        break
                    events.append(Event(*row))
                    budget -= len(row[4]) + len(row[5]) + 64
            return AlertDetail(alert, events, truncated)

        return await self._read(read)

    async def events(self, alert_id: int) -> list[Event]:
        async def read(conn: Conn) -> list[Event]:
            rows = await conn.fetch(_EVENT + " WHERE alert_id = $1 ORDER BY id", alert_id)
            return [Event(*r) for r in rows]

        return await self._read(read)

    async def events_after(self, after_id: int, limit: int = 500) -> list[Event]:
        async def read(conn: Conn) -> list[Event]:
            rows = await conn.fetch(_EVENT + " WHERE id > $1 ORDER BY id LIMIT $2",
                                    after_id, limit)  # fmt: skip
            return [Event(*r) for r in rows]

        return await self._read(read)

    async def feed_after(self, after_id: int, limit: int = 500) -> list[FeedEntry]:
        events = await self.events_after(after_id, limit)
        alerts = {a.id: a for a in await self.get_alerts(list({e.alert_id for e in events}))}
        out = []
        for e in events:
            a = alerts.get(e.alert_id)
            out.append(FeedEntry(
                e.id, e.alert_id, e.kind, a.status if a else None, a.severity if a else None,
                a.alertname if a else None, bool(a and a.acknowledged),
                orjson.dumps(a.labels).decode() if a else None,
                orjson.dumps(feed_data(e, a)).decode(),
            ))  # fmt: skip
        return out

    async def last_event_id(self) -> int:
        value = await self._read(lambda c: c.fetchval("SELECT coalesce(max(id), 0) FROM events"))
        return int(value)

    async def counts(self) -> AlertCounts:
        async def read(conn: Conn) -> AlertCounts:
            # The firing ones by their index; the resolved (nearly all) by the counts the
            # triggers keep (schema migration 5): no scan of every alert at every scrape.
            firing = await conn.fetch(
                "SELECT CASE WHEN acked_at IS NULL THEN 'firing' ELSE 'acknowledged' END,"
                " severity, CASE am_state WHEN 'suppressed' THEN 'suppressed' ELSE 'active'"
                " END, count(*) FROM alerts WHERE status = 'firing' GROUP BY 1, 2, 3"
            )
            resolved = await conn.fetch(
                "SELECT severity, sum(count) FROM resolved_counts GROUP BY severity"
                " HAVING sum(count) > 0"
            )
            by_state: dict[tuple[str, str], int] = {("resolved", v): int(n) for v, n in resolved}
            for state, severity, _, n in firing:
                by_state[(state, severity)] = by_state.get((state, severity), 0) + n
            return AlertCounts(by_state, {(s, v, m): n for s, v, m, n in firing})

        return await self._read(read)

    async def firing(self, source: str) -> list[StoredAlert]:
        async def read(conn: Conn) -> list[StoredAlert]:
            sql = f"SELECT {COLUMNS} FROM alerts WHERE status = 'firing' AND source = $1"  # noqa: S608
            return [row_to_alert(r) for r in await conn.fetch(sql, source)]

        return await self._read(read)

    async def _by_key(self, keys: Sequence[EpisodeKey], column: str) -> dict[EpisodeKey, Any]:
        if not keys:
            return {}

        async def read(conn: Conn) -> dict[EpisodeKey, Any]:
            rows = await conn.fetch(
                f"SELECT a.fingerprint, a.starts_at, a.{column} FROM alerts a"  # noqa: S608
                " JOIN unnest($1::text[], $2::bigint[]) AS k(fp, st)"
                " ON a.fingerprint = k.fp AND a.starts_at = k.st",
                [k[0] for k in keys], [k[1] for k in keys],
            )  # fmt: skip
            return {(fp, st): value for fp, st, value in rows}

        return await self._read(read)

    async def resolutions(self, keys: Sequence[EpisodeKey]) -> dict[EpisodeKey, str | None]:
        return await self._by_key(keys, "resolution")

    async def ids_of(self, keys: Sequence[EpisodeKey]) -> dict[EpisodeKey, int]:
        return await self._by_key(keys, "id")

    async def _meta(self, key: str) -> str | None:
        value = await self._read(lambda c: c.fetchval("SELECT value FROM meta WHERE key = $1",
                                                      key))  # fmt: skip
        return None if value is None else str(value)

    async def retention_days(self) -> int:
        value = await self._meta("retention_days")
        return int(value) if value else DEFAULT_RETENTION_DAYS

    async def alertmanagers(self) -> list[str] | None:
        raw = await self._meta("alertmanagers")
        return None if raw is None else list(orjson.loads(raw))

    # --- operators' actions ----------------------------------------------------------------

    async def acknowledge(self, alert_id: int, by: object, comment: object, at: int) -> StoredAlert:
        who = _text(by, "by", required=True)
        note = _text(comment, "comment", required=False)

        async def job(conn: Conn) -> StoredAlert:
            alert = await _get(conn, alert_id, lock=True)
            managed = await conn.fetchval("SELECT value FROM meta WHERE key = 'alertmanagers'")
            change = actions.acknowledge(alert, who, note, at, silences_managed=managed != "[]")
            return await _apply(conn, alert_id, change)

        return await self._write(job)

    async def unacknowledge(self, alert_id: int, by: object, comment: object,
                            at: int) -> StoredAlert:  # fmt: skip
        who = _text(by, "by", required=True)
        note = _text(comment, "comment", required=False)

        async def job(conn: Conn) -> StoredAlert:
            alert = await _get(conn, alert_id, lock=True)
            return await _apply(conn, alert_id, actions.unacknowledge(alert, who, note, at))

        return await self._write(job)

    async def add_note(self, alert_id: int, by: object, text: object, at: int) -> Event:
        who = _text(by, "by", required=True)
        body = _text(text, "text", required=True)

        async def job(conn: Conn) -> Event:
            await _get(conn, alert_id)
            event_id = await _event(conn, alert_id, at, "note", who, body)
            return Event(event_id, alert_id, at, "note", who, body)

        return await self._write(job)

    async def assign(self, alert_id: int, by: object, assignee: object, at: int) -> StoredAlert:
        who = _text(by, "by", required=True)
        to = _text(assignee, "assignee", required=False) or None

        async def job(conn: Conn) -> StoredAlert:
            alert = await _get(conn, alert_id, lock=True)
            return await _apply(conn, alert_id, actions.assign(alert, who, to, at))

        return await self._write(job)

    async def resolve(self, alert_id: int, by: object, comment: object, at: int) -> StoredAlert:
        who = _text(by, "by", required=True)
        note = _text(comment, "comment", required=False)

        async def job(conn: Conn) -> StoredAlert:
            alert = await _get(conn, alert_id, lock=True)
            change = actions.resolve(alert, who, note or "resolved by hand", at)
            return await _apply(conn, alert_id, change)

        return await self._write(job)

    # --- the system's own changes -----------------------------------------------------------

    async def _resolve_system(self, alert_id: int, at: int, resolution: str, actor: str,
                              detail: str) -> StoredAlert | None:  # fmt: skip
        async def job(conn: Conn) -> StoredAlert | None:
            alert = await _get(conn, alert_id, lock=True)
            change = actions.resolve_system(alert, at, resolution, actor, detail)
            return None if change is None else await _apply(conn, alert_id, change)

        return await self._write(job)

    async def resolve_inferred(self, alert_id: int, at: int, how: str) -> StoredAlert | None:
        return await self._resolve_system(alert_id, at, "inferred", "reconciler", how)

    async def restart_resolve(self, alert_id: int, at: int) -> StoredAlert | None:
        return await self._resolve_system(alert_id, at, "restart", "evaluator",
                                          "condition no longer held at restart")  # fmt: skip

    async def continued(self, alert_id: int, at: int) -> None:
        async def job(conn: Conn) -> None:
            await _event(conn, alert_id, at, "continued", "evaluator",
                         "the condition still held at restart")  # fmt: skip

        await self._write(job)

    async def _set_meta(self, key: str, value: str) -> None:
        async def job(conn: Conn) -> None:
            await conn.execute("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key)"
                               " DO UPDATE SET value = excluded.value", key, value)  # fmt: skip

        await self._write(job)

    async def record_alertmanagers(self, urls: Sequence[str]) -> None:
        await self._set_meta("alertmanagers", orjson.dumps(list(urls)).decode())

    async def set_retention_days(self, days: int) -> int:
        if isinstance(days, bool) or not isinstance(days, int) or days < 1:
            raise Unprocessable("days", f"must be a whole number of days >= 1, got {days!r}")
        await self._set_meta("retention_days", str(days))
        return days

    async def save_engine_counts(self, counts: Mapping[str, Any]) -> None:
        await self._set_meta("escalation_counts", orjson.dumps(dict(counts)).decode())

    async def engine_counts(self) -> dict[str, Any]:
        value = await self._meta("escalation_counts")
        loaded: dict[str, Any] = orjson.loads(value) if value else {}
        return loaded

    async def record_heartbeat(self, at: int) -> None:
        async def job(conn: Conn) -> None:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('heartbeat_at', $1) ON CONFLICT (key)"
                " DO UPDATE SET value = excluded.value"
                " WHERE meta.value::bigint < excluded.value::bigint", str(at),
            )  # fmt: skip

        await self._write(job)

    async def last_heartbeat(self) -> int | None:
        value = await self._meta("heartbeat_at")
        return None if value is None else int(value)

    async def cursor(self, consumer: str) -> int | None:
        value = await self._meta(f"cursor:{consumer}")
        return None if value is None else int(value)

    async def save_cursor(self, consumer: str, event_id: int) -> None:
        await self._set_meta(f"cursor:{consumer}", str(int(event_id)))

    async def people(self) -> frozenset[str]:
        rows = await self._read(lambda c: c.fetch("SELECT name FROM people"))
        return frozenset(r[0] for r in rows if r[0])

    async def export_key(self, new: str | None = None) -> str | None:
        if new is None:
            return await self._meta("export_key")

        async def job(conn: Conn) -> str:
            await conn.execute("INSERT INTO meta (key, value) VALUES ('export_key', $1)"
                               " ON CONFLICT (key) DO NOTHING", new)  # fmt: skip
            return str(await conn.fetchval("SELECT value FROM meta WHERE key = 'export_key'"))

        return await self._write(job)

    async def dump(self, table: str, after: tuple[Any, ...] | None,
                   limit: int) -> list[tuple[Any, ...]]:  # fmt: skip
        columns, key = TABLES[table]
        sql = f"SELECT {', '.join(columns)} FROM {table}"  # noqa: S608 - names from TABLES
        args: list[Any] = list(after or ())
        if after is not None:
            marks = ", ".join(f"${n + 1}" for n in range(len(key)))
            sql += f" WHERE ({', '.join(key)}) > ({marks})"
        sql += f" ORDER BY {', '.join(key)} LIMIT {int(limit)}"
        rows = await self._read(lambda c: c.fetch(sql, *args))
        return [tuple(r) for r in rows]

    async def load(self, table: str, rows: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
        if not rows:
            return 0, 0
        columns, key = TABLES[table]
        identity = table in ("alerts", "events")  # ids kept, then the sequence moved past them
        key = SAME_ROW.get(table, key)
        at = [columns.index(k) for k in key]

        keys = [[row[i] for row in rows] for i in at]
        types = ["bigint" if k in ("id", "alert_id", "starts_at") else "text" for k in key]
        unnest = ", ".join(f"${n + 1}::{t}[]" for n, t in enumerate(types))
        # The page's rows there as in the source, by key (an index read; a count of the
        # whole table before and after each page made a migration quadratic in its size).
        there = (f"SELECT count(*) FROM {table} JOIN unnest({unnest})"  # noqa: S608 - TABLES
                 f" AS k({', '.join(key)}) USING ({', '.join(key)})")  # fmt: skip

        async def job(conn: Conn) -> tuple[int, int]:
            marks = ", ".join(f"${n + 1}" for n in range(len(columns)))
            before = await conn.fetchval(there, *keys)
            await conn.executemany(
                f"INSERT INTO {table} ({', '.join(columns)})"  # noqa: S608 - TABLES names
                + (" OVERRIDING SYSTEM VALUE" if identity else "")
                + f" VALUES ({marks}) ON CONFLICT DO NOTHING",
                rows,
            )
            if identity:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"  # noqa: S608
                    f" (SELECT max(id) FROM {table}))"
                )
            present = await conn.fetchval(there, *keys)
            return int(present - before), int(present)

        return await self._write(job)

    async def lease(self, name: str, holder: str, until: int, at: int,
                    replacing: str | None = None) -> bool:  # fmt: skip
        async def job(conn: Conn) -> bool:
            # One statement: a replica taking an expired lease and another renewing it
            # serialise on the row; the loser's WHERE no longer holds and it gets False.
            got = await conn.fetchval(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO UPDATE SET holder = $2, expires_at = $3"
                " WHERE leases.holder = $2 OR leases.expires_at <= $4 OR leases.holder = $5"
                " RETURNING holder",
                name, holder, until, at, replacing,
            )  # fmt: skip
            return bool(got == holder)

        return await self._write(job)

    async def lease_holder(self, name: str) -> str | None:
        value = await self._read(lambda c: c.fetchval("SELECT holder FROM leases"
                                                      " WHERE name = $1", name))  # fmt: skip
        return None if value is None else str(value)

    async def release(self, name: str, holder: str) -> None:
        async def job(conn: Conn) -> None:
            await conn.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)

        await self._write(job)

    async def silence_work(self) -> list[StoredAlert]:
        async def read(conn: Conn) -> list[StoredAlert]:
            sql = (f"SELECT {COLUMNS} FROM alerts"  # noqa: S608 - a constant column list
                   " WHERE silence_state IN ('pending', 'expiring', 'active')")  # fmt: skip
            return [row_to_alert(r) for r in await conn.fetch(sql)]

        return await self._read(read)

    async def set_silence(self, alert_id: int, at: int, change: SilenceChange) -> StoredAlert:
        async def job(conn: Conn) -> StoredAlert:
            await _get(conn, alert_id, lock=True)
            await conn.execute(
                "UPDATE alerts SET silence_state = $1, silence_id = coalesce($2, silence_id),"
                " silenced_until = $3, updated_at = $4 WHERE id = $5",
                change.state, change.silence_id, change.until, at, alert_id,
            )  # fmt: skip
            if change.event is not None:
                await _event(conn, alert_id, at, *change.event)
            return await _get(conn, alert_id)

        return await self._write(job)

    async def set_am_states(self, views: Sequence[AmView]) -> int:
        if not views:
            return 0

        async def job(conn: Conn) -> int:
            ordered = sorted(views)  # (rows locked in id order: no deadlock with a replica)
            status = await conn.execute(
                "UPDATE alerts a SET am_state = v.state, am_silenced_by = v.silenced,"
                " am_inhibited_by = v.inhibited"
                " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[])"
                " AS v(id, state, silenced, inhibited)"
                " WHERE a.id = v.id AND a.status = 'firing'",
                [v[0] for v in ordered], [v[1] for v in ordered],
                [orjson.dumps(v[2]).decode() for v in ordered],
                [orjson.dumps([{"fingerprint": f, "alert_id": i} for f, i in v[3]]).decode()
                 for v in ordered],
            )  # fmt: skip
            return int(status.split()[-1])

        return await self._write(job)

    async def prune(self, at: int, batch: int = 5000) -> int:
        async def job(conn: Conn) -> int:
            days = await conn.fetchval("SELECT value FROM meta WHERE key = 'retention_days'")
            cutoff = at - int(days or DEFAULT_RETENTION_DAYS) * 86400 * NS
            ids = [r[0] for r in await conn.fetch(
                "SELECT id FROM alerts WHERE status = 'resolved' AND ends_at < $1"
                " ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED", cutoff, batch)]  # fmt: skip
            if ids:
                await conn.execute("DELETE FROM events WHERE alert_id = ANY($1::bigint[])", ids)
                await conn.execute("DELETE FROM alerts WHERE id = ANY($1::bigint[])", ids)
            await conn.execute(schema.FOLD_COUNTS)
            return len(ids)

        return await self._write(job)

    async def set_enrichment(self, values: Mapping[int, Mapping[str, str]]) -> int:
        if not values:
            return 0

        async def job(conn: Conn) -> int:
            ids = sorted(values)
            status = await conn.execute(
                "UPDATE alerts a SET enrichment = v.fields"
                " FROM unnest($1::bigint[], $2::text[]) AS v(id, fields) WHERE a.id = v.id",
                ids, [orjson.dumps(dict(values[i])).decode() for i in ids],
            )  # fmt: skip
            return int(status.split()[-1])

        return await self._write(job)

    async def add_escalations(self, escalations_: Sequence[Escalation], details: Sequence[str],
                              at: int | None = None) -> int:  # fmt: skip
        if not escalations_:
            return 0
        return await self._write(lambda c: escalations.add(c, escalations_, details, at, _event))

    async def escalations(self, alert_id: int) -> list[Escalation]:
        return await self._read(lambda c: escalations.of_alert(c, alert_id))

    async def due_escalations(self, now: int, limit: int = 500) -> list[Escalation]:
        return await self._read(lambda c: escalations.due(c, now, limit))

    async def next_escalation_due(self) -> int | None:
        return await self._read(escalations.next_due)

    async def copy_work(self, repost_before: int, limit: int = 500) -> list[Escalation]:
        return await self._read(lambda c: escalations.copy_work(c, repost_before, limit))

    async def save_escalation(self, escalation: Escalation, events: Sequence[tuple[str, str]],
                              at: int, actor: str = "escalation") -> Escalation:  # fmt: skip
        version = await self._write(
            lambda c: escalations.save(c, escalation, events, at, actor, _event)
        )
        return replace(escalation, version=version, updated_at=at)

    async def save_escalations(self, items: Sequence[tuple[Escalation, Sequence[tuple[str, str]]]],
                               at: int, actor: str = "escalation") -> list[int | None]:  # fmt: skip
        if not items:
            return []

        async def job(conn: Conn) -> list[int | None]:
            out: list[int | None] = []
            for esc, events in items:
                try:
                    out.append(await escalations.save(conn, esc, events, at, actor, _event))
                except (Conflict, NotFound):
                    out.append(None)
            return out

        return await self._write(job)

    async def label_sets(self) -> list[dict[str, str]]:
        rows = await self._read(lambda c: c.fetch("SELECT DISTINCT labels FROM alerts"))
        return [orjson.loads(r[0]) for r in rows]

    async def count(self, what: str, since: int | None, until: int | None) -> int:
        table, column = {"alerts": ("alerts", "starts_at"), "events": ("events", "at")}[what]
        sql = (f"SELECT count(*) FROM {table} WHERE ($1::bigint IS NULL OR {column} >= $1)"  # noqa: S608
               f" AND ($2::bigint IS NULL OR {column} < $2)")  # fmt: skip
        total = await self._read(lambda c: c.fetchval(sql, since, until))
        return int(total)

    def alert_batches(self, since: int | None, until: int | None,
                      batch: int) -> Iterator[pa.RecordBatch]:  # fmt: skip
        from bridge.store.postgres import columnar  # pyarrow: for an export only

        return columnar.alert_rows(self.url, self._password(), since, until, batch)

    def event_batches(self, since: int | None, until: int | None,
                      batch: int) -> Iterator[pa.RecordBatch]:  # fmt: skip
        from bridge.store.postgres import columnar

        return columnar.event_rows(self.url, self._password(), since, until, batch)


async def _get(conn: Conn, alert_id: int, lock: bool = False) -> StoredAlert:
    sql = f"SELECT {COLUMNS} FROM alerts WHERE id = $1" + (" FOR UPDATE" if lock else "")  # noqa: S608
    row = await conn.fetchrow(sql, alert_id)
    if row is None:
        raise NotFound(f"no alert with id {alert_id}")
    return row_to_alert(row)


async def _apply(conn: Conn, alert_id: int, change: Change | None) -> StoredAlert:
    """Write what an action decided (bridge.store.actions) and add its event; the alert as it
    is then (as it was when the action changes nothing)."""
    if change is not None:
        sets = ", ".join(f"{column} = ${n}" for n, column in enumerate(change.columns, 1))
        await conn.execute(  # the names: actions.COLUMNS
            f"UPDATE alerts SET {sets} WHERE id = ${len(change.columns) + 1}",  # noqa: S608
            *change.columns.values(), alert_id,
        )  # fmt: skip
        if change.person:
            await _person(conn, change.person)
        await _event(conn, alert_id, change.at, *change.event)
    return await _get(conn, alert_id)


async def _person(conn: Conn, name: str) -> None:
    await conn.execute("INSERT INTO people (name) VALUES ($1) ON CONFLICT DO NOTHING", name)


async def _event(conn: Conn, alert_id: int, at: int, kind: str, actor: str, detail: str) -> int:
    """One event (under the feed lock); its id. The alert is locked FOR KEY SHARE by the
    INSERT itself (what a foreign key's check would do: schema migration 4): an alert being
    deleted is waited for, then NotFound, and no event is left without its alert."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", schema.FEED_LOCK)
    event_id: int | None = await conn.fetchval(
        "INSERT INTO events (alert_id, at, kind, actor, detail)"
        " SELECT id, $2, $3, $4, $5 FROM alerts WHERE id = $1 FOR KEY SHARE RETURNING id",
        alert_id, at, kind, actor, detail,
    )  # fmt: skip
    if event_id is None:
        raise NotFound(f"no alert with id {alert_id}")
    if actor not in SYSTEM_ACTORS:
        await _person(conn, actor)
    return event_id


class _Sql:
    """A statement's WHERE terms with numbered parameters."""

    def __init__(self) -> None:
        self.where: list[str] = []
        self.args: list[object] = []

    def arg(self, value: object) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def copy(self) -> _Sql:
        made = _Sql()
        made.where, made.args = list(self.where), list(self.args)
        return made


def _filters(query: AlertQuery) -> _Sql:
    sql = _Sql()
    if query.severities:
        sql.where.append(f"severity = ANY({sql.arg(list(query.severities))}::text[])")
    if query.rule:
        sql.where.append(f"alertname = {sql.arg(query.rule)}")
    if query.since is not None:
        sql.where.append(f"starts_at >= {sql.arg(query.since)}")
    if query.until is not None:
        sql.where.append(f"starts_at < {sql.arg(query.until)}")
    if query.acknowledged is not None:
        sql.where.append("acked_at IS NOT NULL" if query.acknowledged else "acked_at IS NULL")
    if query.am_state == "suppressed":
        sql.where.append("status = 'firing' AND am_state = 'suppressed'")
    elif query.am_state == "active":
        sql.where.append("status = 'firing' AND coalesce(am_state, '') != 'suppressed'")
    if query.text:
        escaped = query.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = sql.arg(f"%{escaped}%")
        sql.where.append(
            f"((annotations::jsonb ->> 'summary') ILIKE {like}"  # noqa: S608 - values bound
            f" OR (annotations::jsonb ->> 'description') ILIKE {like}"
            " OR EXISTS (SELECT 1 FROM events n WHERE n.alert_id = alerts.id"
            f" AND n.kind = 'note' AND n.detail ILIKE {like}))"
        )
    for m in query.matchers:
        value = f"coalesce(labels::jsonb ->> {sql.arg(m.name)}, '')"
        if m.op in ("=", "!="):
            sql.where.append(f"{value} {m.op} {sql.arg(m.value)}")
        else:  # anchored as Alertmanager's; PostgreSQL's regular expressions, not RE2
            pattern = sql.arg(f"^(?:{m.value})$")
            sql.where.append(f"{'NOT ' if m.op == '!~' else ''}({value} ~ {pattern})")
    return sql


Row = tuple[StoredAlert, str]


async def _select(conn: Conn, query: AlertQuery, max_chars: int | None) -> tuple[list[Row], bool]:
    base = _filters(query)
    if query.sort != "attention":
        sql = base.copy()
        if query.status:
            sql.where.append(f"status = {sql.arg(query.status)}")
        if query.before_id is not None:
            sql.where.append(f"id < {sql.arg(query.before_id)}")
        rows, full, _ = await _fetch(conn, sql, "id DESC", query.limit, max_chars, None)
        return rows, full
    rank, severity, last_id = query.after or (-1, -1, 0)
    out: list[Row] = []
    if query.status in (None, "firing") and rank < _RESOLVED_RANK:
        sql = base.copy()
        sql.where.append("status = 'firing'")
        if query.after is not None:
            sql.where.append(f"({_RANK}, {_SEVERITY_RANK}, -id) > ({sql.arg(rank)},"
                             f" {sql.arg(severity)}, {sql.arg(-last_id)})")  # fmt: skip
        out, full, used = await _fetch(conn, sql, f"{_RANK}, {_SEVERITY_RANK}, id DESC",
                                       query.limit, max_chars,
                                       f"{_RANK}, {_SEVERITY_RANK}")  # fmt: skip
        if full or len(out) == query.limit:
            return out, full
        max_chars = None if max_chars is None else max_chars - used
    if query.status in (None, "resolved") and query.am_state is None:
        sql = base.copy()
        sql.where.append("status = 'resolved'")
        if rank == _RESOLVED_RANK:
            sql.where.append(f"id < {sql.arg(last_id)}")
        more, full, _ = await _fetch(conn, sql, "id DESC", query.limit - len(out), max_chars,
                                     f"{_RESOLVED_RANK}, {_SEVERITY_RANK}")  # fmt: skip
        return out + more, full
    return out, False


async def _fetch(conn: Conn, sql: _Sql, order: str, limit: int, max_chars: int | None,
                 ranks: str | None) -> tuple[list[Row], bool, int]:  # fmt: skip
    extra = f", {ranks}" if ranks else ""
    text = f"SELECT {COLUMNS}{extra} FROM alerts"  # noqa: S608 - fixed fragments, values bound
    if sql.where:
        text += " WHERE " + " AND ".join(sql.where)
    text += f" ORDER BY {order} LIMIT {sql.arg(limit)}"
    out: list[Row] = []
    chars = 0
    count = COLUMNS.count(",") + 1
    async with conn.transaction():
        async for row in conn.cursor(text, *sql.args):
            alert = row_to_alert(list(row.values())[:count])
            cursor = f"a{row[count]}.{row[count + 1]}.{alert.id}" if ranks else str(alert.id)
            out.append((alert, cursor))
            chars += len(row["labels"]) + len(row["annotations"]) + len(row["generator_url"])
            chars += len(row["ack_comment"] or "")
            if max_chars is not None and chars >= max_chars:
                return out, True, chars
    return out, False, chars
