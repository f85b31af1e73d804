"""Columnar reads for exports: rows straight into Arrow batches by Apache Arrow's ADBC SQLite
driver (C, no GIL) on a reader thread, while the caller transforms and writes the previous
batch."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import adbc_driver_manager
import adbc_driver_sqlite
import pyarrow as pa
import pyarrow.compute as pc

from bridge.store.columns import RAW_ALERT_SCHEMA, RAW_EVENT_SCHEMA, handed_over

# Nullable text columns are read as (coalesce(x, ''), x IS NULL): the driver infers a column's
# type from its first batch, and a column that is all NULL there would come out as int64.
_NULLABLE = ("acked_by", "ack_comment", "assignee", "silence_id", "resolution", "am_state")
_NULLABLE_SQL = ", ".join(f"coalesce(a.{c}, ''), a.{c} IS NULL" for c in _NULLABLE)
_ALERT_SELECT = (
    "SELECT"  # noqa: S608 - constants
    " a.id, a.fingerprint, a.status, a.alertname, a.severity, a.labels, a.annotations,"
    " a.generator_url, a.source, a.starts_at, a.ends_at, a.first_received_at,"
    " a.last_received_at, a.receive_count, a.acked_at, coalesce(n.notes, 0), n.last_note,"
    f" {_NULLABLE_SQL} FROM alerts AS a LEFT JOIN (SELECT alert_id, count(*) AS notes,"
    " max(at) AS last_note FROM events WHERE kind = 'note' GROUP BY alert_id) AS n"
    " ON n.alert_id = a.id"
)
_ALERT_NAMES = (
    "id", "fingerprint", "status", "alertname", "severity", "labels", "annotations",
    "generator_url", "source", "starts_at", "ends_at", "first_received_at", "last_received_at",
    "receive_count", "acked_at", "note_count", "last_note_at",
    *(name for c in _NULLABLE for name in (c, f"{c}_null")),
)  # fmt: skip
_EVENT_SELECT = "SELECT id, alert_id, at, kind, actor, detail FROM events"
_EVENT_NAMES = ("id", "alert_id", "at", "kind", "actor", "detail")


def read_batches(
    uri: str, sql: str, names: tuple[str, ...], batch: int, schema: pa.Schema | None = None
) -> Iterator[pa.RecordBatch]:
    """The rows of `sql`, `batch` at a time, read by ADBC on a thread of their own.

    One read transaction: the export is a consistent snapshot (WAL readers never block the
    writer). At most two batches wait in memory. With `schema`, each batch is brought into it
    as it is handed over (`_raw`, on the caller's thread: on the reader's, it ran ahead with
    more batches at once, some 20 MiB more at the peak for the same time).
    """

    def read(give: Callable[[pa.RecordBatch], bool]) -> None:
        # The low-level API: adbc_driver_manager.dbapi imports pandas and polars when they
        # are installed (some 70 MiB of the export's resident memory), to use neither.
        with (
            adbc_driver_sqlite.connect(uri) as database,
            adbc_driver_manager.AdbcConnection(database) as conn,
            adbc_driver_manager.AdbcStatement(conn) as statement,
        ):
            statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch)})
            statement.set_sql_query(sql)
            stream, _ = statement.execute_query()
            with pa.RecordBatchReader._import_from_c(stream.address) as results:
                for record_batch in results:
                    if not give(record_batch.rename_columns(list(names))):
                        return

    return handed_over(read, (lambda b: b) if schema is None else (lambda b: _raw(b, schema)))


def alert_rows(
    uri: str, since: int | None, until: int | None, batch: int
) -> Iterator[pa.RecordBatch]:
    """Raw alert rows in id order (starts_at within [since, until))."""
    where = [f"a.starts_at >= {int(since)}"] if since is not None else []
    if until is not None:
        where.append(f"a.starts_at < {int(until)}")
    sql = _ALERT_SELECT + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY a.id"
    return read_batches(uri, sql, _ALERT_NAMES, batch, RAW_ALERT_SCHEMA)


def event_rows(
    uri: str, since: int | None, until: int | None, batch: int
) -> Iterator[pa.RecordBatch]:
    """Raw event rows in id order (at within [since, until))."""
    where = [f"at >= {int(since)}"] if since is not None else []
    if until is not None:
        where.append(f"at < {int(until)}")
    sql = _EVENT_SELECT + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
    return read_batches(uri, sql, _EVENT_NAMES, batch, RAW_EVENT_SCHEMA)


def _raw(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """A driver's batch in the raw schema: each (text, is-null) pair as one nullable column;
    a numeric column that was all NULL in the first batch (typed by the driver as it could)
    cast to its type. (pa.nulls, not a Python None: no Python value is converted, which would
    import pandas, when installed, for its types.)"""
    columns = []
    for field in schema:
        column = batch.column(field.name)
        if field.name in _NULLABLE:
            flag = pc.cast(batch.column(f"{field.name}_null"), pa.bool_())
            column = pc.if_else(flag, pa.nulls(len(column), pa.string()), column)
        columns.append(column if column.type == field.type else column.cast(field.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)
