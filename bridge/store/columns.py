"""The raw columns of stored alerts and events as Arrow batches (what `alert_batches` and
`event_batches` of every store yield; exports build their schemas from them). Times are
integer nanoseconds since the epoch; labels and annotations their stored JSON objects."""

from __future__ import annotations

import pyarrow as pa

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
