"""The PostgreSQL implementation of the store interface, for several bridge replicas: the
facade the rest of the bridge calls. Its connection, writer and wake-ups are
bridge.store.postgres.database; its SQL, bridge.store.postgres.queries (the alert list),
.ingest (what arrives), .escalations; the rules of the actions, bridge.store.actions.

The contract suite (tests/test_store_contract.py) runs on both implementations.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from bridge.core.alerts import ReceivedAlert
from bridge.core.errors import Unprocessable
from bridge.core.rulebook import RuleVersion
from bridge.store.postgres import actions as pg_actions
from bridge.store.postgres import escalations
from bridge.store.postgres import queries as q
from bridge.store.postgres.database import Database
from bridge.store.postgres.ingest import PgIngestJob
from bridge.store.records import (
    DEFAULT_RETENTION_DAYS,
    PAGE_CHARS,
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
    feed_data,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)


class PostgresStore(Database):
    """Alerts in a PostgreSQL database (migrated on start)."""

    async def __aenter__(self) -> PostgresStore:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

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
        return await self._read(lambda c: q.get(c, alert_id))

    async def get_alerts(self, ids: Sequence[int]) -> list[StoredAlert]:
        return await self._read(lambda c: q.get_alerts(c, ids))

    async def list_page(self, query: AlertQuery) -> Page:
        rows, full = await self._read(lambda c: q.select(c, query, PAGE_CHARS))
        more = full or len(rows) == query.limit
        return Page([a for a, _ in rows], rows[-1][1] if rows and more else None)

    async def list_alerts(self, query: AlertQuery) -> list[StoredAlert]:
        rows, _ = await self._read(lambda c: q.select(c, query, None))
        return [a for a, _ in rows]

    async def alert_detail(self, alert_id: int) -> AlertDetail:
        return await self._read(lambda c: q.alert_detail(c, alert_id))

    async def events(self, alert_id: int) -> list[Event]:
        return await self._read(lambda c: q.events(c, alert_id))

    async def events_after(self, after_id: int, limit: int = 500) -> list[Event]:
        return await self._read(lambda c: q.events_after(c, after_id, limit))

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
        return await self._read(q.counts)

    async def firing(self, source: str) -> list[StoredAlert]:
        return await self._read(lambda c: q.where(c, "status = 'firing' AND source = $1", source))

    async def _by_key(self, keys: Sequence[EpisodeKey], column: str) -> dict[EpisodeKey, Any]:
        return await self._read(lambda c: q.by_key(c, keys, column)) if keys else {}

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
        return await self._write(pg_actions.acknowledge(alert_id, by, comment, at))

    async def unacknowledge(
        self, alert_id: int, by: object, comment: object, at: int
    ) -> StoredAlert:
        return await self._write(pg_actions.unacknowledge(alert_id, by, comment, at))

    async def add_note(
        self, alert_id: int, by: object, text: object, at: int, kind: str = "note"
    ) -> Event:
        return await self._write(pg_actions.add_note(alert_id, by, text, at, kind))

    async def assign(self, alert_id: int, by: object, assignee: object, at: int) -> StoredAlert:
        return await self._write(pg_actions.assign(alert_id, by, assignee, at))

    async def resolve(self, alert_id: int, by: object, comment: object, at: int) -> StoredAlert:
        return await self._write(pg_actions.resolve(alert_id, by, comment, at))

    # --- the system's own changes -----------------------------------------------------------

    async def _resolve_system(
        self, alert_id: int, at: int, resolution: str, actor: str, detail: str
    ) -> StoredAlert | None:
        return await self._write(pg_actions.resolve_system(alert_id, at, resolution, actor, detail))

    async def resolve_inferred(self, alert_id: int, at: int, how: str) -> StoredAlert | None:
        return await self._resolve_system(alert_id, at, "inferred", "reconciler", how)

    async def restart_resolve(self, alert_id: int, at: int) -> StoredAlert | None:
        return await self._resolve_system(alert_id, at, "restart", "evaluator",
                                          "condition no longer held at restart")  # fmt: skip

    async def continued(self, alert_id: int, at: int) -> None:
        await self._write(pg_actions.continued(alert_id, at))

    async def _set_meta(self, key: str, value: str) -> None:
        await self._write(pg_actions.set_meta(key, value))

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
        await self._write(pg_actions.record_heartbeat(at))

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

    async def kept_key(self, name: str, new: str | None = None) -> str | None:
        check_kept_key(name)
        if new is None:
            return await self._meta(name)
        return await self._write(pg_actions.kept_key(name, new))

    async def export_key(self, new: str | None = None) -> str | None:
        return await self.kept_key("export_key", new)

    async def dump(self, table: str, after: tuple[Any, ...] | None,
                   limit: int) -> list[tuple[Any, ...]]:  # fmt: skip
        return await self._read(lambda c: q.dump(c, table, after, limit))

    async def load(self, table: str, rows: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
        return await self._write(pg_actions.load(table, rows)) if rows else (0, 0)

    async def lease(
        self, name: str, holder: str, until: int, at: int, replacing: str | None = None
    ) -> bool:
        return await self._write(pg_actions.lease(name, holder, until, at, replacing))

    async def lease_holder(self, name: str) -> str | None:
        value = await self._read(lambda c: c.fetchval("SELECT holder FROM leases"
                                                      " WHERE name = $1", name))  # fmt: skip
        return None if value is None else str(value)

    async def release(self, name: str, holder: str) -> None:
        await self._write(pg_actions.release(name, holder))

    # --- the managed rule set -------------------------------------------------------------

    async def rule_version(self, version: int | None = None) -> RuleVersion | None:
        found = await self._rule_versions(version, 1)
        return found[0] if found else None

    async def rule_history(self, limit: int = 100) -> list[RuleVersion]:
        return await self._rule_versions(None, limit)

    async def _rule_versions(self, version: int | None, limit: int) -> list[RuleVersion]:
        return await self._read(lambda c: q.rule_versions(c, version, limit))

    async def add_rule_version(self, version: RuleVersion) -> None:
        await self._write(pg_actions.add_rule_version(version))

    async def silence_work(self) -> list[StoredAlert]:
        return await self._read(
            lambda c: q.where(c, "silence_state IN ('pending', 'expiring', 'active')")
        )

    async def set_silence(self, alert_id: int, at: int, change: SilenceChange) -> StoredAlert:
        return await self._write(pg_actions.set_silence(alert_id, at, change))

    async def set_am_states(self, views: Sequence[AmView]) -> int:
        return await self._write(pg_actions.set_am_states(views)) if views else 0

    async def prune(self, at: int, batch: int = 5000) -> int:
        return await self._write(pg_actions.prune(at, batch))

    async def set_enrichment(self, values: Mapping[int, Mapping[str, str]]) -> int:
        return await self._write(pg_actions.set_enrichment(values)) if values else 0

    async def add_escalations(self, escalations_: Sequence[Escalation], details: Sequence[str],
                              at: int | None = None) -> int:  # fmt: skip
        if not escalations_:
            return 0
        return await self._write(lambda c: escalations.add(c, escalations_, details, at, q.event))

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
            lambda c: escalations.save(c, escalation, events, at, actor, q.event)
        )
        return replace(escalation, version=version, updated_at=at)

    async def save_escalations(self, items: Sequence[tuple[Escalation, Sequence[tuple[str, str]]]],
                               at: int, actor: str = "escalation") -> list[int | None]:  # fmt: skip
        return await self._write(pg_actions.save_escalations(items, at, actor)) if items else []

    async def label_sets(self) -> list[dict[str, str]]:
        rows = await self._read(lambda c: c.fetch("SELECT DISTINCT labels FROM alerts"))
        return [orjson.loads(r[0]) for r in rows]

    async def count(self, what: str, since: int | None, until: int | None) -> int:
        return await self._read(lambda c: q.count(c, what, since, until))

    def alert_batches(self, since: int | None, until: int | None,
                      batch: int) -> Iterator[pa.RecordBatch]:  # fmt: skip
        from bridge.store.postgres import columnar  # pyarrow: for an export only

        return columnar.alert_rows(self.url, self._password(), since, until, batch)

    def event_batches(self, since: int | None, until: int | None,
                      batch: int) -> Iterator[pa.RecordBatch]:  # fmt: skip
        from bridge.store.postgres import columnar

        return columnar.event_rows(self.url, self._password(), since, until, batch)
