"""Stored alerts as Arrow record batches, for the Parquet export: no Python object per row.

The row path (`bridge.export.row_record` + `Anonymizer.record`) builds a dict per alert; at a
million alerts that is most of the time. Here:

- rows are read by the ADBC SQLite driver (C, no GIL) on a reader thread, in batches, while
  the calling thread transforms and writes the previous batch;
- plain columns are Arrow kernels (state, durations, timestamps, nullable text);
- labels, annotations, URLs and comments repeat (an alert's label set is the same in each of
  its episodes), so they are dictionary-encoded and parsed, pseudonymised or scrubbed once per
  distinct value (or per distinct value and label set, for the scrubbing), then taken back to
  the rows;
- fingerprints are pseudonymised once per distinct value too (an alert's episodes share one).

The output equals the row path's, value for value (tests/test_export.py checks it on varied
data, anonymised or not), which stays the reference and serves CSV and JSON.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import adbc_driver_sqlite.dbapi
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from bridge.errors import StoreError
from bridge.export import SCHEMA, Anonymizer

# Nullable text columns are read as (coalesce(x, ''), x IS NULL): the driver infers a column's
# type from its first batch, and a column that is all NULL there would come out as int64.
_NULLABLE_TEXT = ("acked_by", "ack_comment", "assignee", "silence_id")
_NULLABLE_COLUMNS = ", ".join(f"coalesce({c}, ''), {c} IS NULL" for c in _NULLABLE_TEXT)
_COLUMNS = (
    "id, fingerprint, status, alertname, severity, labels, annotations, generator_url, source,"
    " starts_at, ends_at, first_received_at, last_received_at, receive_count, acked_at"
)
_SELECT = f"SELECT {_COLUMNS}, {_NULLABLE_COLUMNS} FROM alerts"  # noqa: S608 - constants
_NAMES = (
    "id", "fingerprint", "status", "alertname", "severity", "labels", "annotations",
    "generator_url", "source", "starts_at", "ends_at", "first_received_at", "last_received_at",
    "receive_count", "acked_at",
    *(name for c in _NULLABLE_TEXT for name in (c, f"{c}_null")),
)  # fmt: skip
_TS = pa.timestamp("ns", tz="UTC")
_END = object()


def read_batches(
    path: str, since: int | None, until: int | None, batch: int
) -> Iterator[pa.RecordBatch]:
    """Raw alert rows in id order, `batch` rows at a time, read on a thread of their own.

    One read transaction: the export is a consistent snapshot (WAL readers never block the
    writer). At most two batches wait in memory.
    """
    where = [f"starts_at >= {int(since)}"] if since is not None else []
    if until is not None:
        where.append(f"starts_at < {int(until)}")
    sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def read() -> None:
        try:
            with adbc_driver_sqlite.dbapi.connect(path) as conn, conn.cursor() as cursor:
                cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch)})
                cursor.execute(sql)
                for record_batch in cursor.fetch_record_batch():
                    if stop.is_set():
                        return
                    handoff.put(record_batch.rename_columns(list(_NAMES)))
            handoff.put(_END)
        except Exception as exc:  # handed to the consumer, which raises it
            handoff.put(exc)

    reader = threading.Thread(target=read, name="alertbridge-export-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise StoreError(f"reading alerts failed: {item}") from item
            yield item
    finally:
        stop.set()
        # Unblock a reader waiting on a full queue; it then sees `stop` after its current batch.
        deadline = time.monotonic() + 60
        while reader.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=0.1)


def _codes(array: pa.Array) -> tuple[pa.Array, list[Any]]:
    """Dictionary codes (int64, 0 for null, i + 1 for the i-th distinct value) and values."""
    encoded = pc.dictionary_encode(array)
    codes = pc.fill_null(pc.add(encoded.indices.cast(pa.int64()), 1), 0)
    return codes, encoded.dictionary.to_pylist()


def _group(*codes: tuple[pa.Array, int]) -> tuple[pa.Array, list[tuple[int, ...]]]:
    """Group rows by a tuple of codes (each with its number of values + 1).

    Returns each row's group index and, per group, its tuple of codes (decoded by Arrow
    kernels, not per group in Python: with nothing repeating there is a group per row).
    """
    key = codes[0][0]
    for code, size in codes[1:]:
        key = pc.add(pc.multiply(key, size), code)
    encoded = pc.dictionary_encode(key)
    combined = encoded.dictionary
    parts = []
    for _, size in reversed(codes[1:]):
        quotient = pc.divide(combined, size)  # integer division: codes are never negative
        parts.append(pc.subtract(combined, pc.multiply(quotient, size)).to_pylist())
        combined = quotient
    parts.append(combined.to_pylist())
    return encoded.indices, list(zip(*reversed(parts), strict=True))


def _per_distinct(array: pa.Array, fn: Callable[[Any], str | None]) -> pa.Array:
    """`fn` of each value of a string array (nulls stay null), called once per distinct value."""
    codes, values = _codes(array)
    return pc.take(pa.array([None, *map(fn, values)], pa.string()), codes)


def _map_array(maps: list[list[tuple[str, str]]]) -> pa.MapArray:
    offsets, keys, items = [0], [], []
    for pairs in maps:
        for key, item in pairs:
            keys.append(key)
            items.append(item)
        offsets.append(len(keys))
    return _map_from(offsets, keys, items)


def _map_from(offsets: list[int], keys: list[str], items: list[str]) -> pa.MapArray:
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(items, pa.string())
    )


def _nullable(raw: pa.RecordBatch, name: str) -> pa.Array:
    flag = pc.cast(raw.column(f"{name}_null"), pa.bool_())
    return pc.if_else(flag, pa.scalar(None, pa.string()), raw.column(name))


def _seconds(later: pa.Array, earlier: pa.Array) -> pa.Array:
    return pc.divide(pc.cast(pc.subtract(later, earlier), pa.float64()), 1e9)


class Transformer:
    """Raw batches -> batches of the export schema, anonymised or not."""

    def __init__(self, anonymizer: Anonymizer | None) -> None:
        self.anonymizer = anonymizer

    def __call__(self, raw: pa.RecordBatch) -> pa.RecordBatch:
        status, acked_at = raw.column("status"), raw.column("acked_at")
        starts_at, ends_at = raw.column("starts_at"), raw.column("ends_at")
        acked = pc.is_valid(acked_at)
        state = pc.if_else(
            pc.equal(status, "resolved"), "resolved", pc.if_else(acked, "acknowledged", "firing")
        )
        acked_by, assignee = _nullable(raw, "acked_by"), _nullable(raw, "assignee")
        comment = _nullable(raw, "ack_comment")
        texts = self._texts(raw.column("labels"), raw.column("annotations"),
                            raw.column("generator_url"), acked_by, assignee, comment)  # fmt: skip
        columns = {
            "id": raw.column("id"),
            "fingerprint": self._fingerprints(raw.column("fingerprint")),
            "alertname": raw.column("alertname"),
            "severity": raw.column("severity"),
            "status": status,
            "state": state,
            "source": raw.column("source"),
            "starts_at": starts_at.cast(_TS),
            "ends_at": ends_at.cast(_TS),
            "first_received_at": raw.column("first_received_at").cast(_TS),
            "last_received_at": raw.column("last_received_at").cast(_TS),
            "receive_count": raw.column("receive_count"),
            "acknowledged": acked,
            "acked_at": acked_at.cast(_TS),
            "acked_by": self._people(acked_by),
            "ack_comment": texts["ack_comment"],
            "assignee": self._people(assignee),
            "silence_id": _nullable(raw, "silence_id"),
            "time_to_ack_seconds": _seconds(acked_at, starts_at),
            "time_to_resolve_seconds": _seconds(ends_at, starts_at),
            "generator_url": texts["generator_url"],
            "labels": texts["labels"],
            "annotations": texts["annotations"],
        }
        return pa.RecordBatch.from_arrays([columns[n] for n in SCHEMA.names], schema=SCHEMA)

    def _fingerprints(self, fingerprints: pa.Array) -> pa.Array:
        if self.anonymizer is None:
            return fingerprints
        return _per_distinct(fingerprints, self.anonymizer.fingerprint)  # episodes share one

    def _people(self, names: pa.Array) -> pa.Array:
        if self.anonymizer is None:
            return names
        pseudonym = self.anonymizer.pseudonym
        return _per_distinct(names, lambda name: pseudonym(name) if name else name)

    def _texts(
        self, labels: pa.Array, annotations: pa.Array, urls: pa.Array, acked_by: pa.Array,
        assignee: pa.Array, comments: pa.Array,
    ) -> dict[str, pa.Array]:  # fmt: skip
        """Labels and annotations as maps; URL and comment scrubbed; once per distinct value."""
        label_codes, label_values = _codes(labels)
        anon = self.anonymizer
        label_maps = [orjson.loads(v) for v in label_values]
        if anon is None:
            ann_codes, ann_values = _codes(annotations)
            return {
                "labels": pc.take(
                    _map_array([[]] + [list(m.items()) for m in label_maps]), label_codes
                ),
                "annotations": pc.take(
                    _map_array([[]] + [list(orjson.loads(v).items()) for v in ann_values]),
                    ann_codes,
                ),
                "generator_url": urls,
                "ack_comment": comments,
            }
        # What is scrubbed from an alert's free text depends on its labels and people: a
        # "context". Free text is scrubbed once per distinct (context, text).
        by_codes, by_values = _codes(acked_by)
        as_codes, as_values = _codes(assignee)
        context_of_row, contexts = _group(
            (label_codes, len(label_values) + 1), (by_codes, len(by_values) + 1),
            (as_codes, len(as_values) + 1),
        )  # fmt: skip
        context_values = []
        for label_code, by_code, as_code in contexts:
            label_map = label_maps[label_code - 1] if label_code else {}
            named = [by_values[by_code - 1] if by_code else None,
                     as_values[as_code - 1] if as_code else None]  # fmt: skip
            context_values.append(anon.scrub_values(label_map, named))
        n_contexts = len(contexts) + 1
        context_codes = pc.add(context_of_row.cast(pa.int64()), 1)
        out = {
            "labels": pc.take(
                _map_array([[]] + [list(anon.labels(m).items()) for m in label_maps]),
                label_codes,
            )
        }

        def scrubbed(column: pa.Array, parse: bool) -> pa.Array:
            codes, values = _codes(column)
            row_group, pairs = _group((context_codes, n_contexts), (codes, len(values) + 1))
            scrub = anon.scrub
            if not parse:
                texts = [
                    scrub(values[code - 1], context_values[context - 1]) if code else None
                    for context, code in pairs
                ]
                return pc.take(pa.array(texts, pa.string()), row_group)
            offsets, keys, items = [0], [], []
            for context, code in pairs:
                if code:
                    scrub_with = context_values[context - 1]
                    for key, item in orjson.loads(values[code - 1]).items():
                        keys.append(key)
                        items.append(scrub(item, scrub_with))
                offsets.append(len(keys))
            return pc.take(_map_from(offsets, keys, items), row_group)

        out["annotations"] = scrubbed(annotations, parse=True)
        out["generator_url"] = scrubbed(urls, parse=False)
        out["ack_comment"] = scrubbed(comments, parse=False)
        return out
