"""Export telemetry from Prometheus (query_range) to Parquet, CSV or JSON Lines.

A seed metric name (system.cpu.percent, ...) exports the rule's measurement expression in base
units; any other name is sent as PromQL as it is (a series name or an expression). The range is
walked in chunks of at most MAX_POINTS steps, so memory stays flat however long it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import orjson
import pyarrow as pa

from bridge.core.catalog import CATALOG
from bridge.core.custom import CustomMetric, metric_expr
from bridge.core.errors import BridgeError
from bridge.core.times import format_duration
from bridge.export.anonymize import Anonymizer
from bridge.export.columns import MAP, TIME, Chunk
from bridge.export.history import ExportResult
from bridge.export.output import FORMATS, Destination
from bridge.export.promapi import MAX_POINTS, PrometheusClient, default_step
from bridge.export.writers import WRITERS

MS = 1000  # us in a millisecond: Prometheus timestamps have millisecond precision
TELEMETRY_SCHEMA = pa.schema(
    [("metric", pa.string()), ("expr", pa.string()), ("timestamp", TIME),
     ("value", pa.float64()), ("labels", MAP)]
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Query:
    """What to export for one requested metric."""

    metric: str
    expr: str


def queries_for(metrics: Sequence[str], namespace: str, window_seconds: int = 300,
                declared: Sequence[CustomMetric] = ()) -> list[Query]:  # fmt: skip
    """Seed names become their measurement PromQL, as do the names of the metrics the
    application declares (bridge.core.custom, the PromQL of their rules); other names are
    PromQL already. None given: the five built in and every declared one."""
    window = format_duration(window_seconds)
    mine = {m.name: m for m in declared}
    names = list(metrics) or [*CATALOG, *mine]

    def expr(name: str) -> str:
        if name in CATALOG:
            return CATALOG[name].measurement(namespace, window)
        if name in mine:
            return metric_expr(mine[name], namespace, window_seconds)
        return name

    return [Query(name, expr(name)) for name in names]


def export_telemetry(
    client: PrometheusClient,
    destination: Destination,
    fmt: str,
    queries: Sequence[Query],
    start: float,
    end: float,
    *,
    step: int | None = None,
    anonymizer: Anonymizer | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write every point of every query over [start, end] (unix seconds)."""
    if fmt not in FORMATS:
        raise BridgeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if end <= start:
        raise ValueError("the end of the range must be after its start")
    step = step or default_step(start, end)
    span = step * (MAX_POINTS - 1)
    count = 0

    def chunks() -> Iterator[Chunk]:
        nonlocal count
        for query in queries:
            chunk_start = start
            while chunk_start <= end:
                chunk_end = min(end, chunk_start + span)
                columns: dict[str, list[object]] = {n: [] for n in TELEMETRY_SCHEMA.names}
                texts: list[str] = []
                for series in client.query_range(query.expr, chunk_start, chunk_end, step):
                    labels = anonymizer.labels(series.labels) if anonymizer else series.labels
                    text, pairs = orjson.dumps(labels).decode(), list(labels.items())
                    for t, v in series.points:
                        columns["metric"].append(query.metric)
                        columns["expr"].append(query.expr)
                        columns["timestamp"].append(round(t * 1000) * MS)
                        columns["value"].append(v)
                        columns["labels"].append(pairs)
                        texts.append(text)
                points = len(texts)
                count += points
                if progress is not None:
                    progress(points)
                if points:
                    batch = pa.RecordBatch.from_pydict(columns, schema=TELEMETRY_SCHEMA)
                    yield Chunk(batch, {"labels": pa.array(texts, pa.string())})
                chunk_start = chunk_end + step

    with destination.open() as sink:
        WRITERS[fmt](sink, TELEMETRY_SCHEMA, chunks(), ("metric", "expr"))
    return ExportResult(destination.shown, count, destination.size(), fmt)
