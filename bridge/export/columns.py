"""Stored alerts and events as Arrow batches of the export schemas: no Python object per row.

- rows are read by the ADBC SQLite driver (C, no GIL) on a reader thread, in batches, while
  the calling thread transforms and writes the previous batch (`read_batches`);
- plain columns are Arrow kernels (state, durations, timestamps, nullable text);
- labels, annotations, URLs, comments, notes and people repeat, so they are dictionary-
  encoded and parsed, pseudonymised or scrubbed once per distinct value, then taken back to
  the rows; fingerprints too (an alert's episodes share one).

Times are microseconds since the epoch (UTC): every reader (pyarrow's to_pylist without
pandas, pandas, polars, DuckDB) takes them as datetimes. The episode key keeps its exact
nanoseconds in `starts_at_ns`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from bridge.export.anonymize import Anonymizer

TIME = pa.timestamp("us", tz="UTC")
MAP = pa.map_(pa.string(), pa.string())

ALERT_SCHEMA = pa.schema(
    [
        ("id", pa.int64()), ("fingerprint", pa.string()), ("alertname", pa.string()),
        ("severity", pa.string()), ("status", pa.string()), ("state", pa.string()),
        ("source", pa.string()), ("starts_at", TIME), ("starts_at_ns", pa.int64()),
        ("ends_at", TIME), ("first_received_at", TIME), ("last_received_at", TIME),
        ("receive_count", pa.int64()), ("acknowledged", pa.bool_()), ("acked_at", TIME),
        ("acked_by", pa.string()), ("ack_comment", pa.string()), ("assignee", pa.string()),
        ("silence_id", pa.string()), ("resolution", pa.string()), ("am_state", pa.string()),
        ("time_to_ack_seconds", pa.float64()), ("time_to_resolve_seconds", pa.float64()),
        ("note_count", pa.int64()), ("last_note_at", TIME), ("generator_url", pa.string()),
        ("labels", MAP), ("annotations", MAP),
    ]
)  # fmt: skip
EVENT_SCHEMA = pa.schema(
    [
        ("id", pa.int64()), ("alert_id", pa.int64()), ("at", TIME), ("kind", pa.string()),
        ("actor", pa.string()), ("text", pa.string()), ("silence_id", pa.string()),
    ]
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Chunk:
    """A batch of an export schema, and its map columns already as JSON text (what the CSV
    and JSON Lines writers need: computed once per distinct map). A batch made for those
    writers alone (`maps=False`) holds that text in place of the maps (`text_schema`)."""

    batch: pa.RecordBatch
    map_json: dict[str, pa.Array] = field(default_factory=dict)


# --- kernels -------------------------------------------------------------------------------


def codes(array: pa.Array) -> tuple[pa.Array, list[Any]]:
    """Dictionary codes (int64, 0 for null, i + 1 for the i-th distinct value) and values."""
    encoded = pc.dictionary_encode(array)
    indices = pc.fill_null(pc.add(encoded.indices.cast(pa.int64()), 1), 0)
    return indices, encoded.dictionary.to_pylist()


def per_distinct(array: pa.Array, fn: Callable[[Any], Any], out: pa.DataType) -> pa.Array:
    """`fn` of each value of an array (nulls stay null), called once per distinct value."""
    indices, values = codes(array)
    return pc.take(pa.array([None, *map(fn, values)], out), indices)


def map_array(maps: list[list[tuple[str, str]]]) -> pa.MapArray:
    offsets, keys, items = [0], [], []
    for pairs in maps:
        for key, item in pairs:
            keys.append(key)
            items.append(item)
        offsets.append(len(keys))
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(items, pa.string())
    )


class Memo:
    """`fn` remembered across batches (the same label sets, texts and people come back in
    every batch), for up to `limit` values at a time.

    >>> Memo(str.upper)("a")
    'A'
    """

    def __init__(self, fn: Callable[[Any], Any], limit: int = 32_768) -> None:
        self.fn, self.limit = fn, limit
        self._cache: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        try:
            return self._cache[value]
        except KeyError:
            if len(self._cache) >= self.limit:
                self._cache.clear()
            result = self._cache[value] = self.fn(value)
            return result


def map_parser(transform: Callable[[dict[str, str]], dict[str, str]]) -> Memo:
    """A stored JSON object -> (its pairs, its JSON text), transformed, remembered."""

    def parse(raw: str) -> tuple[list[tuple[str, str]], str]:
        mapping = transform(orjson.loads(raw))
        return list(mapping.items()), orjson.dumps(mapping).decode()

    return Memo(parse)


def text_schema(schema: pa.Schema) -> pa.Schema:
    """The schema with its maps as (JSON) text: what a `maps=False` chunk holds."""
    return pa.schema([(f.name, pa.string() if pa.types.is_map(f.type) else f.type) for f in schema])


def _maps(array: pa.Array, parse: Memo, maps: bool) -> tuple[pa.Array, pa.Array]:
    """A column of JSON objects as maps (or, with `maps` false, the text again) and as JSON
    text, once per distinct value (null: the empty map)."""
    indices, values = codes(array)
    parsed = [([], "{}"), *map(parse, values)]
    texts = pc.take(pa.array([text for _, text in parsed], pa.string()), indices)
    if not maps:
        return texts, texts
    return pc.take(map_array([pairs for pairs, _ in parsed]), indices), texts


def times(ns: pa.Array) -> pa.Array:
    """Integer nanoseconds as microsecond timestamps (UTC)."""
    return pc.divide(ns.cast(pa.int64()), 1000).cast(TIME)


def _seconds(later: pa.Array, earlier: pa.Array) -> pa.Array:
    return pc.divide(pc.cast(pc.subtract(later, earlier), pa.float64()), 1e9)


def _same(value: Any) -> Any:
    return value


class AlertColumns:
    """Raw alert batches -> chunks of ALERT_SCHEMA, anonymised or not."""

    def __init__(self, anonymizer: Anonymizer | None, *, maps: bool = True) -> None:
        self.anonymizer = anon = anonymizer
        # Map arrays cost a third of a CSV or JSON export, which writes their JSON text only.
        self.maps = maps
        self.schema = ALERT_SCHEMA if maps else text_schema(ALERT_SCHEMA)
        scrub = self.scrub = Memo(anon.scrub) if anon is not None else _same
        self.person = Memo(anon.person) if anon is not None else _same
        self.fingerprint = Memo(anon.fingerprint) if anon is not None else _same
        self.labels = map_parser(anon.labels if anon is not None else _same)
        self.annotations = map_parser(lambda m: {k: scrub(v) for k, v in m.items()})

    def __call__(self, raw: pa.RecordBatch) -> Chunk:
        anon = self.anonymizer
        status, acked_at = raw.column("status"), raw.column("acked_at")
        starts_at, ends_at = raw.column("starts_at"), raw.column("ends_at")
        acked = pc.is_valid(acked_at)
        state = pc.if_else(
            pc.equal(status, "resolved"), "resolved", pc.if_else(acked, "acknowledged", "firing")
        )
        scrub, person = self.scrub, self.person
        labels, labels_json = _maps(raw.column("labels"), self.labels, self.maps)
        annotations, annotations_json = _maps(
            raw.column("annotations"), self.annotations, self.maps
        )
        columns = {
            "id": raw.column("id"),
            "fingerprint": raw.column("fingerprint") if anon is None else per_distinct(
                raw.column("fingerprint"), self.fingerprint, pa.string()),
            "alertname": raw.column("alertname"),
            "severity": raw.column("severity"),
            "status": status,
            "state": state,
            "source": raw.column("source"),
            "starts_at": times(starts_at),
            "starts_at_ns": starts_at,
            "ends_at": times(ends_at),
            "first_received_at": times(raw.column("first_received_at")),
            "last_received_at": times(raw.column("last_received_at")),
            "receive_count": raw.column("receive_count"),
            "acknowledged": acked,
            "acked_at": times(acked_at),
            "acked_by": per_distinct(raw.column("acked_by"), person, pa.string()),
            "ack_comment": per_distinct(raw.column("ack_comment"), scrub, pa.string()),
            "assignee": per_distinct(raw.column("assignee"), person, pa.string()),
            "silence_id": raw.column("silence_id"),
            "resolution": raw.column("resolution"),
            "am_state": raw.column("am_state"),
            "time_to_ack_seconds": _seconds(acked_at, starts_at),
            "time_to_resolve_seconds": _seconds(ends_at, starts_at),
            "note_count": raw.column("note_count"),
            "last_note_at": times(raw.column("last_note_at")),
            "generator_url": per_distinct(raw.column("generator_url"), scrub, pa.string()),
            "labels": labels,
            "annotations": annotations,
        }  # fmt: skip
        batch = pa.RecordBatch.from_arrays(
            [columns[n] for n in self.schema.names], schema=self.schema
        )
        return Chunk(batch, {"labels": labels_json, "annotations": annotations_json})


class EventColumns:
    """Raw event batches -> chunks of EVENT_SCHEMA: a silence id in its own column, the text
    of the others scrubbed, actors pseudonymised (the system's own stay readable)."""

    def __init__(self, anonymizer: Anonymizer | None) -> None:
        self.anonymizer = anon = anonymizer
        self.scrub = Memo(anon.scrub) if anon is not None else _same
        self.person = Memo(anon.person) if anon is not None else _same

    def __call__(self, raw: pa.RecordBatch) -> Chunk:
        anon = self.anonymizer
        kind, detail = raw.column("kind"), raw.column("detail")
        silenced = pc.equal(kind, "silenced")
        text = pc.if_else(silenced, pa.scalar(None, pa.string()), detail)
        columns = {
            "id": raw.column("id"),
            "alert_id": raw.column("alert_id"),
            "at": times(raw.column("at")),
            "kind": kind,
            "actor": raw.column("actor") if anon is None else per_distinct(
                raw.column("actor"), self.person, pa.string()),
            "text": text if anon is None else per_distinct(text, self.scrub, pa.string()),
            "silence_id": pc.if_else(silenced, detail, pa.scalar(None, pa.string())),
        }  # fmt: skip
        return Chunk(pa.RecordBatch.from_arrays(
            [columns[n] for n in EVENT_SCHEMA.names], schema=EVENT_SCHEMA))  # fmt: skip
