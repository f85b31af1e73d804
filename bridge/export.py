"""Export stored alerts to Parquet, CSV or JSON Lines: streamed, atomic, anonymised by default.

Anonymisation replaces every label value outside an allowlist with a keyed HMAC-SHA256
pseudonym (stable for a key, so exports of one deployment can be joined), pseudonymises the
people fields and the fingerprint (a hash of the label set), and scrubs those same values out
of annotations and comments wherever they appear.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import secrets
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from bridge.errors import BridgeError
from bridge.store import COLUMNS, NS, Store, format_time

FORMATS = ("parquet", "csv", "json")
#: Label names whose values describe the rule, not the system or people: kept as they are.
ALLOWED_LABELS = frozenset(
    {"alertname", "severity", "metric", "job", "status", "le", "quantile", "state"}
)
BATCH = 10_000  # rows per batch of the row path (CSV, JSON): a dict each
COLUMNAR_BATCH = 32_768  # rows per batch of the columnar path (Parquet): Arrow arrays


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    records: int
    bytes: int
    format: str


class Anonymizer:
    """Keyed pseudonyms and scrubbing.

    >>> a = Anonymizer(b"k")
    >>> a.pseudonym("db-7") == a.pseudonym("db-7") != a.pseudonym("db-8")
    True
    """

    def __init__(
        self,
        key: bytes,
        allowed: frozenset[str] = ALLOWED_LABELS,
        people: frozenset[str] = frozenset(),
    ) -> None:
        self.key = key
        self.allowed = allowed
        # Everyone who acked, was assigned or acted: scrubbed from every alert's free text,
        # since a comment on one alert may name the assignee of another.
        self.people = people
        self._people = list(people)
        self._cache: dict[str, str] = {}
        # HMAC-SHA256 (RFC 2104) from the two keyed hash states, copied per value: hashlib's C
        # objects throughout, no key schedule and none of hmac.HMAC's Python layers per value.
        block = key if len(key) <= 64 else hashlib.sha256(key).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def pseudonym(self, value: str) -> str:
        """The pseudonym of a value (memoised: label values and names repeat)."""
        cached = self._cache.get(value)
        if cached is None:
            cached = self._hmac(value)
            if len(self._cache) >= 50_000:  # bounded, so memory stays flat in the row count
                self._cache.clear()
            self._cache[value] = cached
        return cached

    def _hmac(self, value: str) -> str:
        """anon- and the first 16 hex digits of HMAC-SHA256(key, value)."""
        inner = self._inner.copy()
        inner.update(value.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return f"anon-{outer.digest()[:8].hex()}"

    def fingerprint(self, fingerprint: str) -> str:
        """The pseudonym of a fingerprint (not memoised: one per label set, too many to keep)."""
        return self._hmac(fingerprint)

    def labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """Labels with every value outside the allowlist pseudonymised."""
        return {k: v if k in self.allowed else self.pseudonym(v) for k, v in labels.items()}

    def scrub_values(self, labels: Mapping[str, str], named: list[str | None]) -> list[str]:
        """What to scrub from an alert's free text: its sensitive label values, the people it
        names and everyone else; longest first, so "db-7:9100" is replaced whole before "db-7"
        (then by value, so that the order, and the result, never depend on hashing)."""
        sensitive = [v for k, v in labels.items() if k not in self.allowed and v]
        sensitive += [v for v in named if v]
        sensitive += self._people
        return sorted(set(sensitive), key=lambda v: (-len(v), v))

    def scrub(self, text: str, values: list[str]) -> str:
        """`text` with each of `values` replaced by its pseudonym."""
        for value in values:
            if value in text:
                text = text.replace(value, self.pseudonym(value))
        return text

    def record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Anonymise an export record in place (and return it)."""
        labels: dict[str, str] = record["labels"]
        values = self.scrub_values(labels, [record["acked_by"], record["assignee"]])
        record["fingerprint"] = self.fingerprint(record["fingerprint"])
        record["labels"] = self.labels(labels)
        for field in ("acked_by", "assignee"):
            if record[field]:
                record[field] = self.pseudonym(record[field])
        record["annotations"] = {k: self.scrub(v, values) for k, v in record["annotations"].items()}
        if record["ack_comment"]:
            record["ack_comment"] = self.scrub(record["ack_comment"], values)
        record["generator_url"] = self.scrub(record["generator_url"], values)
        return record


def known_people(store: Store) -> frozenset[str]:
    """Everyone named in the database as acker, assignee or event actor (a small set)."""
    rows = store.read(
        lambda c: c.execute(
            "SELECT acked_by FROM alerts WHERE acked_by IS NOT NULL"
            " UNION SELECT assignee FROM alerts WHERE assignee IS NOT NULL"
            " UNION SELECT actor FROM events"
        ).fetchall()
    )
    # Source names are not people; they stay readable.
    return frozenset(r[0] for r in rows if r[0]) - {"alertmanager", "local", "reconciler",
                                                     "alertbridge"}  # fmt: skip


def export_key(store: Store, env: Mapping[str, str]) -> bytes:
    """The pseudonym key: ALERTBRIDGE_EXPORT_KEY(_FILE), else one generated once per database."""
    if env.get("ALERTBRIDGE_EXPORT_KEY"):
        return env["ALERTBRIDGE_EXPORT_KEY"].encode()
    if env.get("ALERTBRIDGE_EXPORT_KEY_FILE"):
        try:
            return Path(env["ALERTBRIDGE_EXPORT_KEY_FILE"]).read_bytes().strip()
        except OSError as exc:
            raise BridgeError(f"ALERTBRIDGE_EXPORT_KEY_FILE: cannot read: {exc.strerror}") from None

    def job(conn: sqlite3.Connection) -> bytes:
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('export_key', ?)",
            (secrets.token_hex(32),),
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'export_key'").fetchone()
        return bytes.fromhex(row[0])

    return store.run(job)


def _seconds(later: int | None, earlier: int) -> float | None:
    return None if later is None else (later - earlier) / NS


def row_record(row: tuple[Any, ...]) -> dict[str, Any]:
    """An export record straight from a row of COLUMNS (no StoredAlert in between)."""
    (alert_id, fingerprint, status, alertname, severity, labels, annotations, generator_url,
     source, starts_at, ends_at, first_received_at, last_received_at, receive_count, acked_at,
     acked_by, ack_comment, assignee, silence_id, *_) = row  # fmt: skip
    if status == "resolved":
        state = "resolved"
    else:
        state = "acknowledged" if acked_at is not None else "firing"
    return {
        "id": alert_id,
        "fingerprint": fingerprint,
        "alertname": alertname,
        "severity": severity,
        "status": status,
        "state": state,
        "source": source,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "first_received_at": first_received_at,
        "last_received_at": last_received_at,
        "receive_count": receive_count,
        "acknowledged": acked_at is not None,
        "acked_at": acked_at,
        "acked_by": acked_by,
        "ack_comment": ack_comment,
        "assignee": assignee,
        "silence_id": silence_id,
        "time_to_ack_seconds": _seconds(acked_at, starts_at),
        "time_to_resolve_seconds": _seconds(ends_at, starts_at),
        "generator_url": generator_url,
        "labels": orjson.loads(labels),
        "annotations": orjson.loads(annotations),
    }


_TS = pa.timestamp("ns", tz="UTC")
_MAP = pa.map_(pa.string(), pa.string())
SCHEMA = pa.schema(
    [
        ("id", pa.int64()), ("fingerprint", pa.string()), ("alertname", pa.string()),
        ("severity", pa.string()), ("status", pa.string()), ("state", pa.string()),
        ("source", pa.string()), ("starts_at", _TS), ("ends_at", _TS),
        ("first_received_at", _TS), ("last_received_at", _TS), ("receive_count", pa.int64()),
        ("acknowledged", pa.bool_()), ("acked_at", _TS), ("acked_by", pa.string()),
        ("ack_comment", pa.string()), ("assignee", pa.string()), ("silence_id", pa.string()),
        ("time_to_ack_seconds", pa.float64()), ("time_to_resolve_seconds", pa.float64()),
        ("generator_url", pa.string()), ("labels", _MAP), ("annotations", _MAP),
    ]
)  # fmt: skip
_TIME_FIELDS = ("starts_at", "ends_at", "first_received_at", "last_received_at", "acked_at")


def _batches(
    store: Store, since: int | None, until: int | None, batch: int
) -> Iterator[list[tuple[Any, ...]]]:
    """Alerts in id order, `batch` at a time (keyset pagination: flat memory)."""
    last = 0
    where, args = ["id > ?"], []
    if since is not None:
        where.append("starts_at >= ?")
        args.append(since)
    if until is not None:
        where.append("starts_at < ?")
        args.append(until)
    sql = f"SELECT {COLUMNS} FROM alerts WHERE {' AND '.join(where)} ORDER BY id LIMIT ?"  # noqa: S608

    def page(after: int) -> Callable[[sqlite3.Connection], list[Any]]:
        return lambda c: c.execute(sql, [after, *args, batch]).fetchall()

    while True:
        rows = store.read(page(last))
        if not rows:
            return
        yield rows
        last = rows[-1][0]


@dataclass(frozen=True, slots=True)
class Layout:
    """What a kind of record looks like in a file: Arrow schema, time and map columns."""

    schema: pa.Schema
    times: tuple[str, ...]
    maps: tuple[str, ...]


ALERTS = Layout(SCHEMA, _TIME_FIELDS, ("labels", "annotations"))
Records = Iterator[list[dict[str, Any]]]


def _parquet(path: Path, layout: Layout, records: Records) -> None:
    with pq.ParquetWriter(path, layout.schema, compression="zstd") as writer:
        for chunk in records:
            columns = {name: [r[name] for r in chunk] for name in layout.schema.names}
            for name in layout.maps:
                columns[name] = [list(m.items()) for m in columns[name]]
            writer.write_table(pa.table(columns, schema=layout.schema))


#: Columns whose values repeat: dictionary-encoded. Ids, fingerprints and times are mostly
#: unique: a dictionary there would cost writing time and save no space.
_DICTIONARY = [
    "alertname", "severity", "status", "state", "source", "generator_url", "acked_by",
    "assignee", "ack_comment", "silence_id", "receive_count", "labels.key_value.key",
    "labels.key_value.value", "annotations.key_value.key", "annotations.key_value.value",
]  # fmt: skip


def _parquet_batches(batches: Iterator[pa.RecordBatch]) -> Callable[[Path], None]:
    """A writer of already columnar batches (bridge.columnar) to Parquet."""

    def write(path: Path) -> None:
        with pq.ParquetWriter(
            path, SCHEMA, compression="zstd", use_dictionary=_DICTIONARY
        ) as writer:
            wrote = False
            for batch in batches:
                writer.write_batch(batch)
                wrote = True
            if not wrote:
                writer.write_table(SCHEMA.empty_table())

    return write


def _text_row(record: dict[str, Any], layout: Layout) -> dict[str, Any]:
    row = dict(record)
    for name in layout.times:
        row[name] = format_time(row[name])
    return row


def _csv(path: Path, layout: Layout, records: Records) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=layout.schema.names)
        writer.writeheader()
        for chunk in records:
            for record in chunk:
                row = _text_row(record, layout)
                for name in layout.maps:
                    row[name] = orjson.dumps(row[name], option=orjson.OPT_SORT_KEYS).decode()
                writer.writerow(row)


def _jsonl(path: Path, layout: Layout, records: Records) -> None:
    with path.open("wb") as handle:
        for chunk in records:
            buffer = io.BytesIO()
            for record in chunk:
                buffer.write(orjson.dumps(_text_row(record, layout), option=orjson.OPT_SORT_KEYS))
                buffer.write(b"\n")
            handle.write(buffer.getvalue())


_WRITERS = {"parquet": _parquet, "csv": _csv, "json": _jsonl}


def check_output(output: Path, fmt: str) -> Path:
    """The directory to write in; BridgeError for a bad format or an unwritable place."""
    if fmt not in FORMATS:
        raise BridgeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if output.is_dir():
        raise BridgeError(f"{output} is a directory; give a file name")
    parent = output.parent if str(output.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise BridgeError(f"cannot write to {parent}: not a writable directory")
    return parent


def write_atomically(output: Path, fmt: str, layout: Layout, records: Records) -> int:
    """Write records in `fmt` via a temporary file, fsync, rename; returns the bytes written."""
    return replace_atomically(output, fmt, lambda tmp: _WRITERS[fmt](tmp, layout, records))


def replace_atomically(output: Path, fmt: str, write: Callable[[Path], None]) -> int:
    """Have `write` fill a temporary file beside `output`, fsync it, rename it over `output`;
    returns the bytes written. On any failure the temporary file is removed, `output` untouched."""
    parent = check_output(output, fmt)
    fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{output.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return output.stat().st_size


def export_alerts(
    store: Store,
    output: Path,
    fmt: str,
    *,
    anonymizer: Anonymizer | None,
    since: int | None = None,
    until: int | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int | None = None,
) -> ExportResult:
    """Write the alerts (optionally anonymised) to `output`, atomically."""
    output = Path(output)
    check_output(output, fmt)
    count = 0
    if fmt == "parquet":
        from bridge.columnar import Transformer, read_batches  # it needs this module's SCHEMA

        transform = Transformer(anonymizer)

        def batches() -> Iterator[pa.RecordBatch]:
            nonlocal count
            for raw in read_batches(store.path, since, until, batch or COLUMNAR_BATCH):
                out = transform(raw)
                count += out.num_rows
                if progress is not None:
                    progress(out.num_rows)
                yield out

        size = replace_atomically(output, fmt, _parquet_batches(batches()))
        return ExportResult(output, count, size, fmt)

    def records() -> Records:
        nonlocal count
        for rows in _batches(store, since, until, batch or BATCH):
            chunk = [row_record(r) for r in rows]
            if anonymizer is not None:
                chunk = [anonymizer.record(r) for r in chunk]
            count += len(chunk)
            if progress is not None:
                progress(len(chunk))
            yield chunk

    size = write_atomically(output, fmt, ALERTS, records())
    return ExportResult(output, count, size, fmt)
