"""Export telemetry from Prometheus (query_range) to Parquet, CSV or JSON Lines.

A seed metric name (system.cpu.percent, ...) exports the rule's measurement expression in base
units; any other name is sent as PromQL as it is (a series name or an expression). The range is
walked in chunks of at most MAX_POINTS steps, so memory stays flat however long it is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from bridge.catalog import CATALOG
from bridge.export import Anonymizer, ExportResult, Layout, Records, check_output, write_atomically
from bridge.model import format_duration
from bridge.promapi import MAX_POINTS, PrometheusClient, default_step

MS = 1_000_000  # ns in a millisecond: Prometheus timestamps have millisecond precision

TELEMETRY = Layout(
    pa.schema(
        [
            ("metric", pa.string()),
            ("expr", pa.string()),
            ("timestamp", pa.timestamp("ns", tz="UTC")),
            ("value", pa.float64()),
            ("labels", pa.map_(pa.string(), pa.string())),
        ]
    ),
    times=("timestamp",),
    maps=("labels",),
)


@dataclass(frozen=True, slots=True)
class Query:
    """What to export for one requested metric."""

    metric: str
    expr: str


def queries_for(metrics: Sequence[str], namespace: str, window_seconds: int = 300) -> list[Query]:
    """Seed names become their measurement PromQL; other names are PromQL already."""
    window = format_duration(window_seconds)
    names = list(metrics) or list(CATALOG)
    return [
        Query(name, CATALOG[name].measurement(namespace, window) if name in CATALOG else name)
        for name in names
    ]


def export_telemetry(
    client: PrometheusClient,
    output: Path,
    fmt: str,
    queries: Sequence[Query],
    start: float,
    end: float,
    *,
    step: int | None = None,
    anonymizer: Anonymizer | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write every point of every query over [start, end] (unix seconds), atomically."""
    output = Path(output)
    check_output(output, fmt)
    if end <= start:
        raise ValueError("the end of the range must be after its start")
    step = step or default_step(start, end)
    span = step * (MAX_POINTS - 1)
    count = 0

    def records() -> Records:
        nonlocal count
        for query in queries:
            chunk_start = start
            while chunk_start <= end:
                chunk_end = min(end, chunk_start + span)
                chunk: list[dict[str, Any]] = []
                for series in client.query_range(query.expr, chunk_start, chunk_end, step):
                    labels = anonymizer.labels(series.labels) if anonymizer else series.labels
                    chunk += [
                        {"metric": query.metric, "expr": query.expr,
                         "timestamp": round(t * 1000) * MS, "value": v, "labels": labels}
                        for t, v in series.points
                    ]  # fmt: skip
                count += len(chunk)
                if progress is not None:
                    progress(len(chunk))
                if chunk:
                    yield chunk
                chunk_start = chunk_end + step

    size = write_atomically(output, fmt, TELEMETRY, records())
    return ExportResult(output, count, size, fmt)
