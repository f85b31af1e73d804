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
from bridge.core.errors import Conflict, NotFound, Unprocessable
from bridge.core.rulebook import RuleVersion
from bridge.store.postgres import actions as pg_actions
from bridge.store.postgres import escalations
from bridge.store.postgres import queries as q
from bridge.store.postgres.database import Conn, Database
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
from bridge.store.rows import (
    COLUMNS,
    SAME_ROW,
    TABLES,
    row_to_alert,
    rule_version,
    rule_version_row,
    stale_rules,
)
from bridge.store.sql import RULE_VERSION_COLUMNS

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
        async def read(conn: Conn) -> list[StoredAlert]:
            rows = await conn.fetch(f"SELECT {COLUMNS} FROM alerts WHERE id = ANY($1::bigint[])",  # noqa: S608
                                    list(ids))  # fmt: skip
            found = {a.id: a for a in map(row_to_alert, rows)}
            return [found[i] for i in ids if i in found]

        return await self._read(read)

    async def list_page(self, query: AlertQuery) -> Page:
        rows, full = await self._read(lambda c: q.select(c, query, PAGE_CHARS))
        more = full or len(rows) == query.limit
        return Page([a for a, _ in rows], rows[-1][1] if rows and more else None)

    async def list_alerts(self, query: AlertQuery) -> list[StoredAlert]:
        rows, _ = await self._read(lambda c: q.select(c, query, None))
        return [a for a, _ in rows]

    async def alert_detail(self, alert_id: int) -> AlertDetail:
        async def read(conn: Conn) -> AlertDetail:
            alert = await q.get(conn, alert_id)
            budget, events, truncated = PAGE_CHARS, [], False
            async with conn.transaction():
                async for row in conn.cursor(q.EVENT + " WHERE alert_id = $1 ORDER BY id",
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
            rows = await conn.fetch(q.EVENT + " WHERE alert_id = $1 ORDER BY id", alert_id)
            return [Event(*r) for r in rows]

        return await self._read(read)

    async def events_after(self, after_id: int, limit: int = 500) -> list[Event]:
        async def read(conn: Conn) -> list[Event]:
            rows = await conn.fetch(q.EVENT + " WHERE id > $1 ORDER BY id LIMIT $2",
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

        async def job(conn: Conn) -> str:
            await conn.execute("INSERT INTO meta (key, value) VALUES ($1, $2)"
                               " ON CONFLICT (key) DO NOTHING", name, new)  # fmt: skip
            return str(await conn.fetchval("SELECT value FROM meta WHERE key = $1", name))

        return await self._write(job)

    async def export_key(self, new: str | None = None) -> str | None:
        return await self.kept_key("export_key", new)

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
        sql = f"SELECT {RULE_VERSION_COLUMNS} FROM rule_versions"  # noqa: S608 - constant text

        async def read(conn: Conn) -> list[RuleVersion]:
            if version is not None:
                rows = await conn.fetch(sql + " WHERE version = $1", version)
            else:
                rows = await conn.fetch(sql + " ORDER BY version DESC LIMIT $1", limit)
            return [rule_version(r) for r in rows]

        return await self._read(read)

    async def add_rule_version(self, version: RuleVersion) -> None:
        async def job(conn: Conn) -> None:
            await conn.execute("LOCK TABLE rule_versions IN EXCLUSIVE MODE")  # one at a time
            latest = await conn.fetchval("SELECT coalesce(max(version), 0) FROM rule_versions")
            if latest != version.version - 1:
                raise stale_rules(latest, version)
            await conn.execute(f"INSERT INTO rule_versions ({RULE_VERSION_COLUMNS})"  # noqa: S608
                               " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                               *rule_version_row(version))  # fmt: skip

        await self._write(job)

    async def silence_work(self) -> list[StoredAlert]:
        async def read(conn: Conn) -> list[StoredAlert]:
            sql = (f"SELECT {COLUMNS} FROM alerts"  # noqa: S608 - a constant column list
                   " WHERE silence_state IN ('pending', 'expiring', 'active')")  # fmt: skip
            return [row_to_alert(r) for r in await conn.fetch(sql)]

        return await self._read(read)

    async def set_silence(self, alert_id: int, at: int, change: SilenceChange) -> StoredAlert:
        return await self._write(pg_actions.set_silence(alert_id, at, change))

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
        return await self._write(pg_actions.prune(at, batch))

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
        if not items:
            return []

        async def job(conn: Conn) -> list[int | None]:
            out: list[int | None] = []
            for esc, events in items:
                try:
                    out.append(await escalations.save(conn, esc, events, at, actor, q.event))
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
