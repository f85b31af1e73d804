"""Columnar reads for exports on PostgreSQL: pages of a server-side cursor in one read-only
REPEATABLE READ transaction (a consistent snapshot, as SQLite's export is), fetched by a
thread of their own with its own event loop and connection while the caller writes the
previous batch; at most two batches wait in memory."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import pyarrow as pa

from bridge.store.columns import RAW_ALERT_SCHEMA, RAW_EVENT_SCHEMA, handed_over

_ALERT_SELECT = (
    "SELECT a.id, a.fingerprint, a.status, a.alertname, a.severity, a.labels, a.annotations,"
    " a.generator_url, a.source, a.starts_at, a.ends_at, a.first_received_at,"
    " a.last_received_at, a.receive_count, a.acked_at, coalesce(n.notes, 0), n.last_note,"
    " a.acked_by, a.ack_comment, a.assignee, a.silence_id, a.resolution, a.am_state"
    " FROM alerts AS a LEFT JOIN (SELECT alert_id, count(*) AS notes, max(at) AS last_note"
    " FROM events WHERE kind = 'note' GROUP BY alert_id) AS n ON n.alert_id = a.id"
    " WHERE ($1::bigint IS NULL OR a.starts_at >= $1) AND ($2::bigint IS NULL OR a.starts_at < $2)"
    " ORDER BY a.id"
)
_EVENT_SELECT = (
    "SELECT id, alert_id, at, kind, actor, detail FROM events"
    " WHERE ($1::bigint IS NULL OR at >= $1) AND ($2::bigint IS NULL OR at < $2) ORDER BY id"
)


def read_batches(url: str, password: str | None, sql: str, args: tuple[Any, ...],
                 schema: pa.Schema, batch: int) -> Iterator[pa.RecordBatch]:  # fmt: skip
    def read(give: Callable[[pa.RecordBatch], bool]) -> None:
        asyncio.run(_read(url, password, sql, args, schema, batch, give))

    return handed_over(read)


async def _read(url: str, password: str | None, sql: str, args: tuple[Any, ...],
                schema: pa.Schema, batch: int,
                give: Callable[[pa.RecordBatch], bool]) -> None:  # fmt: skip
    conn = await asyncpg.connect(url, password=password)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(sql, *args)
            while rows := await cursor.fetch(batch):
                columns = zip(*rows, strict=True)
                arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
                if not give(pa.RecordBatch.from_arrays(arrays, schema=schema)):
                    return
    finally:
        await conn.close()


def alert_rows(url: str, password: str | None, since: int | None, until: int | None,
               batch: int) -> Iterator[pa.RecordBatch]:  # fmt: skip
    return read_batches(url, password, _ALERT_SELECT, (since, until), RAW_ALERT_SCHEMA, batch)


def event_rows(url: str, password: str | None, since: int | None, until: int | None,
               batch: int) -> Iterator[pa.RecordBatch]:  # fmt: skip
    return read_batches(url, password, _EVENT_SELECT, (since, until), RAW_EVENT_SCHEMA, batch)
