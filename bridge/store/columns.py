"""The raw columns of stored alerts and events as Arrow batches (what `alert_batches` and
`event_batches` of every store yield; exports build their schemas from them). Times are
integer nanoseconds since the epoch; labels and annotations their stored JSON objects."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from bridge.core.errors import StoreError

RAW_ALERT_SCHEMA = pa.schema(
    [
        ("id", pa.int64()), ("fingerprint", pa.string()), ("status", pa.string()),
        ("alertname", pa.string()), ("severity", pa.string()), ("labels", pa.string()),
        ("annotations", pa.string()), ("generator_url", pa.string()), ("source", pa.string()),
        ("starts_at", pa.int64()), ("ends_at", pa.int64()), ("first_received_at", pa.int64()),
        ("last_received_at", pa.int64()), ("receive_count", pa.int64()),
        ("acked_at", pa.int64()), ("note_count", pa.int64()), ("last_note_at", pa.int64()),
        ("acked_by", pa.string()), ("ack_comment", pa.string()), ("assignee", pa.string()),
        ("silence_id", pa.string()), ("resolution", pa.string()), ("am_state", pa.string()),
    ]
)  # fmt: skip
RAW_EVENT_SCHEMA = pa.schema(
    [
        ("id", pa.int64()), ("alert_id", pa.int64()), ("at", pa.int64()),
        ("kind", pa.string()), ("actor", pa.string()), ("detail", pa.string()),
    ]
)  # fmt: skip


_END = object()


def handed_over(
    read: Callable[[Callable[[pa.RecordBatch], bool]], None],
    convert: Callable[[pa.RecordBatch], pa.RecordBatch] = lambda batch: batch,
) -> Iterator[pa.RecordBatch]:
    """The batches `read` produces on a thread of its own, at most two waiting: `read` gets
    a function handing a batch over, which returns False once the consumer has gone (read
    then stops). Each batch is `convert`ed on the consumer's thread as it is taken. An
    error of `read` is raised to the consumer as StoreError."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def give(batch: pa.RecordBatch) -> bool:
        while not stop.is_set():
            try:
                handoff.put(batch, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            read(give)
            give(_END)
        except Exception as exc:  # handed to the consumer, which raises it
            give(exc)

    reader = threading.Thread(target=run, name="alertbridge-export-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, Exception):
                raise StoreError(f"reading the database failed: {item}") from item
            yield convert(item)
    finally:
        stop.set()
        deadline = time.monotonic() + 60
        while reader.is_alive() and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                handoff.get(timeout=0.1)
