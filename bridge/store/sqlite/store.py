"""The SQLite implementation of the store interface: reads on per-thread connections off the
event loop, writes through the group-commit writer (answered once on disk)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from bridge.core.alerts import ReceivedAlert
from bridge.core.errors import StoreError
from bridge.core.rulebook import RuleVersion
from bridge.store.records import (
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
    check_kept_key,
)
from bridge.store.sqlite import actions, escalations, queries
from bridge.store.sqlite.database import Database, Job
from bridge.store.sqlite.ingest import IngestJob
from bridge.store.sqlite.writer import Writer

if TYPE_CHECKING:  # pyarrow (and numpy) load when an export runs, not in every process
    import pyarrow as pa

T = TypeVar("T")


class SqliteStore:
    """Alerts in one SQLite file (WAL; migrated on open unless read-only).

    >>> import asyncio, os, tempfile
    >>> store = SqliteStore(os.path.join(tempfile.mkdtemp(), "a.db"))
    >>> asyncio.run(store.list_alerts(AlertQuery()))
    []
    """

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        query_timeout: float | None = None,
        read_only: bool = False,
        max_batch: int = 256,
        inline_reads: bool = False,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only
        #: Reads run on the caller's thread, blocking its event loop while they run, instead
        #: of in a worker thread (see open_store).
        self.inline_reads = inline_reads
        self.db = Database(path, busy_timeout_ms, query_timeout, read_only)
        self.writer = Writer(self.db, max_batch)
        self._running = False
        self._watchers: list[asyncio.Event] = []

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Check that the database can be written (file, directory, journal), then start
        the writer. A read-only store has nothing to start."""
        if self.read_only or self._running:
            return
        try:
            await asyncio.to_thread(self.db.check_writable)
        except StoreError as exc:
            raise StoreError(f"cannot write to database {self.path}: {exc}") from None
        await asyncio.to_thread(self.writer.start)
        self._running = True

    async def close(self) -> None:
        if self._running:
            await asyncio.to_thread(self.writer.stop)
            self._running = False
        await asyncio.to_thread(self.db.close)  # (it waits for reads under way)

    async def __aenter__(self) -> SqliteStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def problem(self) -> str | None:
        if self.db.closed:
            return "storage is not open"
        if not self.writer.alive:
            return "the storage writer is not running"
        if self.writer.failing:  # after a storage failure, a write must succeed again
            try:
                await asyncio.wait_for(self.writer.submit(actions.probe_write), timeout=2)
            except (StoreError, TimeoutError) as exc:
                return f"storage is failing: {exc or 'the probe write timed out'}"
        return None

    async def _read(self, fn: Callable[[Any], T]) -> T:
        if self.inline_reads:
            return self.db.read(fn)
        return await asyncio.to_thread(self.db.read, fn)

    async def _write(self, job: Job[T], isolate: bool = True) -> T:
        if self.read_only:
            raise StoreError(f"{self.path} is open for reading only")
        try:
            return await self.writer.submit(job, isolate)
        finally:
            if self._watchers:  # something may have changed (a failed job changed nothing)
                watchers, self._watchers = self._watchers, []
                for watcher in watchers:
                    watcher.set()

    def changes(self) -> asyncio.Event:
        watcher = asyncio.Event()
        self._watchers.append(watcher)
        return watcher

    async def wake_others(self) -> None:
        """One bridge serves a SQLite file: it wakes its own reconciler."""

    async def on_wake(self, callback: Callable[[], None]) -> Callable[[], Awaitable[None]]:
        async def stop() -> None:
            return None

        return stop

    # --- what arrives -------------------------------------------------------------------

    async def ingest(
        self,
        alerts: Sequence[ReceivedAlert],
        received_at: int,
        source: str = "alertmanager",
        actor: str | None = None,
    ) -> IngestResult:
        # Validated alerts fail only when storage does: no savepoint (see writer.py).
        return await self._write(IngestJob(alerts, received_at, source, actor), isolate=False)

    # --- reads --------------------------------------------------------------------------

    async def list_page(self, query: AlertQuery) -> Page:
        return await self._read(lambda c: queries.list_page(c, query))

    async def list_alerts(self, query: AlertQuery) -> list[StoredAlert]:
        return await self._read(lambda c: queries.list_alerts(c, query))

    async def get_alert(self, alert_id: int) -> StoredAlert:
        return await self._read(lambda c: queries.get_alert(c, alert_id))

    async def get_alerts(self, ids: Sequence[int]) -> list[StoredAlert]:
        return await self._read(lambda c: queries.get_alerts(c, ids)) if ids else []

    async def alert_detail(self, alert_id: int) -> AlertDetail:
        return await self._read(lambda c: queries.alert_detail(c, alert_id))

    async def events(self, alert_id: int) -> list[Event]:
        return await self._read(lambda c: queries.get_events(c, alert_id))

    async def events_after(self, after_id: int, limit: int = 500) -> list[Event]:
        return await self._read(lambda c: queries.events_after(c, after_id, limit))

    async def feed_after(self, after_id: int, limit: int = 500) -> list[FeedEntry]:
        return await self._read(lambda c: queries.feed_after(c, after_id, limit))

    async def last_event_id(self) -> int:
        return await self._read(queries.last_event_id)

    async def counts(self) -> AlertCounts:
        return await self._read(queries.counts)

    async def silence_work(self) -> list[StoredAlert]:
        return await self._read(queries.silence_work)

    async def firing(self, source: str) -> list[StoredAlert]:
        return await self._read(lambda c: queries.firing(c, source))

    async def resolutions(self, keys: Sequence[EpisodeKey]) -> dict[EpisodeKey, str | None]:
        return await self._read(lambda c: queries.episode_states(c, keys)) if keys else {}

    async def ids_of(self, keys: Sequence[EpisodeKey]) -> dict[EpisodeKey, int]:
        return await self._read(lambda c: queries.episode_ids(c, keys)) if keys else {}

    async def retention_days(self) -> int:
        return await self._read(queries.get_retention)

    async def alertmanagers(self) -> list[str] | None:
        return await self._read(queries.alertmanagers)

    # --- operators' actions ----------------------------------------------------------------

    async def acknowledge(self, alert_id: int, by: object, comment: object, at: int) -> StoredAlert:
        return await self._write(actions.acknowledge(alert_id, by, comment, at))

    async def unacknowledge(
        self, alert_id: int, by: object, comment: object, at: int
    ) -> StoredAlert:
        return await self._write(actions.unacknowledge(alert_id, by, comment, at))

    async def add_note(
        self, alert_id: int, by: object, text: object, at: int, kind: str = "note"
    ) -> Event:
        return await self._write(actions.add_note(alert_id, by, text, at, kind))

    async def assign(self, alert_id: int, by: object, assignee: object, at: int) -> StoredAlert:
        return await self._write(actions.assign(alert_id, by, assignee, at))

    async def resolve(self, alert_id: int, by: object, comment: object, at: int) -> StoredAlert:
        return await self._write(actions.resolve(alert_id, by, comment, at))

    # --- the system's own changes -----------------------------------------------------------

    async def resolve_inferred(self, alert_id: int, at: int, how: str) -> StoredAlert | None:
        return await self._write(actions.resolve_inferred(alert_id, at, how))

    async def restart_resolve(self, alert_id: int, at: int) -> StoredAlert | None:
        return await self._write(actions.restart_resolve(alert_id, at))

    async def continued(self, alert_id: int, at: int) -> None:
        await self._write(actions.continued(alert_id, at))

    async def set_silence(self, alert_id: int, at: int, change: SilenceChange) -> StoredAlert:
        return await self._write(actions.set_silence(alert_id, at, change))

    async def set_am_states(self, views: Sequence[AmView]) -> int:
        return await self._write(actions.set_am_states(views)) if views else 0

    async def record_alertmanagers(self, urls: Sequence[str]) -> None:
        await self._write(actions.record_alertmanagers(urls))

    async def set_retention_days(self, days: int) -> int:
        return await self._write(actions.set_retention(days))

    async def prune(self, at: int, batch: int = 5000) -> int:
        return await self._write(actions.prune(at, batch))

    async def set_enrichment(self, values: Mapping[int, Mapping[str, str]]) -> int:
        return await self._write(actions.set_enrichment(values)) if values else 0

    async def save_engine_counts(self, counts: Mapping[str, Any]) -> None:
        await self._write(actions.save_engine_counts(counts))

    async def engine_counts(self) -> dict[str, Any]:
        value = await self._read(lambda c: queries.meta(c, "escalation_counts"))
        loaded: dict[str, Any] = orjson.loads(value) if value else {}
        return loaded

    async def record_heartbeat(self, at: int) -> None:
        await self._write(actions.record_heartbeat(at))

    async def last_heartbeat(self) -> int | None:
        value = await self._read(lambda c: queries.meta(c, "heartbeat_at"))
        return None if value is None else int(value)

    async def dump(self, table: str, after: tuple[Any, ...] | None,
                   limit: int) -> list[tuple[Any, ...]]:  # fmt: skip
        return await self._read(lambda c: queries.dump(c, table, after, limit))

    async def load(self, table: str, rows: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
        return await self._write(actions.load(table, rows)) if rows else (0, 0)

    async def lease(self, name: str, holder: str, until: int, at: int,
                    replacing: str | None = None) -> bool:  # fmt: skip
        return await self._write(actions.lease(name, holder, until, at, replacing))

    async def lease_holder(self, name: str) -> str | None:
        return await self._read(lambda c: queries.lease_holder(c, name))

    async def release(self, name: str, holder: str) -> None:
        await self._write(actions.release(name, holder))

    # --- the managed rule set -----------------------------------------------------------

    async def rule_version(self, version: int | None = None) -> RuleVersion | None:
        found = await self._read(lambda c: queries.rule_versions(c, version, 1))
        return found[0] if found else None

    async def rule_history(self, limit: int = 100) -> list[RuleVersion]:
        return await self._read(lambda c: queries.rule_versions(c, None, limit))

    async def add_rule_version(self, version: RuleVersion) -> None:
        await self._write(actions.add_rule_version(version))

    # --- consumers of the feed ----------------------------------------------------------

    async def cursor(self, consumer: str) -> int | None:
        return await self._read(lambda c: queries.cursor(c, consumer))

    async def save_cursor(self, consumer: str, event_id: int) -> None:
        await self._write(actions.save_cursor(consumer, event_id))

    # --- escalation -----------------------------------------------------------------------

    async def add_escalations(
        self, escalations_: Sequence[Escalation], details: Sequence[str], at: int | None = None
    ) -> int:
        return await self._write(escalations.add(escalations_, details, at)) if escalations_ else 0

    async def escalations(self, alert_id: int) -> list[Escalation]:
        return await self._read(lambda c: escalations.of_alert(c, alert_id))

    async def due_escalations(self, now: int, limit: int = 500) -> list[Escalation]:
        return await self._read(lambda c: escalations.due(c, now, limit))

    async def next_escalation_due(self) -> int | None:
        return await self._read(escalations.next_due)

    async def copy_work(self, repost_before: int, limit: int = 500) -> list[Escalation]:
        return await self._read(lambda c: escalations.copy_work(c, repost_before, limit))

    async def save_escalation(
        self,
        escalation: Escalation,
        events: Sequence[tuple[str, str]],
        at: int,
        actor: str = "escalation",
    ) -> Escalation:
        version = await self._write(escalations.save(escalation, events, at, actor))
        return replace(escalation, version=version, updated_at=at)

    async def save_escalations(
        self,
        items: Sequence[tuple[Escalation, Sequence[tuple[str, str]]]],
        at: int,
        actor: str = "escalation",
    ) -> list[int | None]:
        return await self._write(escalations.save_many(items, at, actor)) if items else []

    # --- exports ------------------------------------------------------------------------

    async def label_sets(self) -> list[dict[str, str]]:
        return await self._read(queries.label_sets)

    async def people(self) -> frozenset[str]:
        return await self._read(queries.people)

    async def kept_key(self, name: str, new: str | None = None) -> str | None:
        check_kept_key(name)
        if new is None:
            return await self._read(lambda c: queries.meta(c, name))
        return await self._write(actions.keep_key(name, new))

    async def export_key(self, new: str | None = None) -> str | None:
        return await self.kept_key("export_key", new)

    async def count(self, what: str, since: int | None, until: int | None) -> int:
        return await self._read(lambda c: queries.count(c, what, since, until))

    def alert_batches(
        self, since: int | None, until: int | None, batch: int
    ) -> Iterator[pa.RecordBatch]:
        from bridge.store.sqlite import columnar

        return columnar.alert_rows(self.db.uri, since, until, batch)

    def event_batches(
        self, since: int | None, until: int | None, batch: int
    ) -> Iterator[pa.RecordBatch]:
        from bridge.store.sqlite import columnar

        return columnar.event_rows(self.db.uri, since, until, batch)
