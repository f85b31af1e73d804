"""Exporting the alert history: alerts (with acknowledgement, resolution, durations, notes)
and their audit trail (events), in any format, anonymised or not."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from bridge.core.errors import BridgeError
from bridge.export.anonymize import ALLOWED_LABELS, Anonymizer, sensitive_values
from bridge.export.columns import ALERT_SCHEMA, EVENT_SCHEMA, AlertColumns, Chunk, EventColumns
from bridge.export.output import FORMATS, Destination
from bridge.export.writers import WRITERS
from bridge.store.interface import Exports

#: Rows per Arrow batch read, by what is exported: small enough that what a batch becomes (JSON
#: or CSV text, three batches in flight) stays in tens of MiB, large enough that the work per
#: distinct value each batch repeats (scrubbing a text once per batch it is in) stays small.
#: An alert row is about ten times an event row (bench/export.py).
BATCH = {"alerts": 8_192, "events": 32_768}
WHAT = ("alerts", "events")
#: Columns whose values repeat: dictionary-encoded in Parquet. Ids, fingerprints and times are
#: mostly unique: a dictionary there would cost writing time and save no space.
_DICTIONARY = {
    "alerts": (
        "alertname", "severity", "status", "state", "source", "generator_url", "acked_by",
        "assignee", "ack_comment", "silence_id", "resolution", "am_state", "receive_count",
        "note_count", "labels.key_value.key", "labels.key_value.value",
        "annotations.key_value.key", "annotations.key_value.value",
    ),
    "events": ("kind", "actor", "text"),
}  # fmt: skip


class MissingKey(BridgeError):
    """No pseudonym key is given or kept, and the database cannot keep a new one."""


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote."""

    shown: str
    records: int
    bytes: int | None  # None: streamed to standard output
    format: str


class ExportSource(Exports, Protocol):
    """What an export reads, and whether it may keep a pseudonym key it generates."""

    read_only: bool


async def export_key(store: ExportSource, given: bytes | None) -> bytes:
    """The pseudonym key: the one given (server.export_key: ALERTBRIDGE_EXPORT_KEY or
    _FILE), else one generated once per database and kept there (a read-only database must
    have one already)."""
    if given:
        return given
    kept = await store.export_key()
    if kept is None:
        if store.read_only:
            raise MissingKey(
                "no pseudonym key: set ALERTBRIDGE_EXPORT_KEY (or _FILE), or export once with"
                " write access to the database, which keeps a generated one"
            )
        kept = await store.export_key(secrets.token_hex(32))
        if kept is None:
            raise MissingKey("the database kept no pseudonym key")
    return bytes.fromhex(kept)


async def anonymizer_for(store: ExportSource, given: bytes | None) -> Anonymizer:
    """The Anonymizer of an export from this database: its key, and every sensitive value it
    holds (label values outside the allowlist, people) to scrub from free text."""
    values = sensitive_values(await store.label_sets(), await store.people(), ALLOWED_LABELS)
    return Anonymizer(await export_key(store, given), ALLOWED_LABELS, values)


def export_history(
    store: Exports,
    destination: Destination,
    what: str,
    fmt: str,
    *,
    anonymizer: Anonymizer | None,
    since: int | None = None,
    until: int | None = None,
    progress: Callable[[int], None] | None = None,
    batch: int | None = None,
) -> ExportResult:
    """Write the alerts or the events (optionally anonymised) to the destination. Blocking
    (it iterates the store's batches): run it off an event loop."""
    if what not in WHAT:
        raise BridgeError(f"--what must be one of {', '.join(WHAT)}, got {what!r}")
    if fmt not in FORMATS:
        raise BridgeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    rows, transform, schema = (
        (store.alert_batches, AlertColumns(anonymizer, maps=fmt == "parquet"), ALERT_SCHEMA)
        if what == "alerts"
        else (store.event_batches, EventColumns(anonymizer), EVENT_SCHEMA)
    )
    written = 0

    def chunks() -> Iterator[Chunk]:
        nonlocal written
        for raw in rows(since, until, batch or BATCH[what]):
            chunk = transform(raw)
            written += chunk.batch.num_rows
            if progress is not None:
                progress(chunk.batch.num_rows)
            yield chunk

    with destination.open() as sink:
        WRITERS[fmt](sink, schema, chunks(), _DICTIONARY[what])
    return ExportResult(destination.shown, written, destination.size(), fmt)
