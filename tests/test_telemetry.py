"""The exporter's series, windowed snapshots and push-batch validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bridge.core.catalog import LATENCY_BUCKETS
from bridge.core.errors import Conflict, InvalidInput
from bridge.core.promql import bucket_quantile
from bridge.telemetry.exporter import CpuSampler, Telemetry, apply_batch, parse_batch


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def samples(telemetry: Telemetry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(telemetry.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_five_series_with_design_names_and_types() -> None:
    """The exposition carries DESIGN.md's series, typed gauge/histogram/counter."""
    telemetry = Telemetry()
    types = {m.name: m.type for m in telemetry.registry.collect()}
    assert types == {
        "telemetry_system_cpu_usage_ratio": "gauge",
        "telemetry_system_memory_used_bytes": "gauge",
        "telemetry_search_latency_seconds": "histogram",
        "telemetry_ingestion_documents": "counter",
        "telemetry_operations": "counter",
        "telemetry_operation_errors": "counter",
    }


def test_recorded_values_are_exported() -> None:
    """Recorded latencies, documents, operations and system values reach the exposition."""
    telemetry = Telemetry()
    telemetry.observe_searches([0.2, 0.9, 1.0, 1.5])
    telemetry.add_documents(42)
    telemetry.record_operation(failed=False, count=9)
    telemetry.record_operation(failed=True)
    telemetry.set_system(cpu_ratio=0.25, memory_bytes=1024.0)
    got = samples(telemetry)
    assert got["telemetry_search_latency_seconds_bucket", (("le", "1.0"),)] == 3
    assert got["telemetry_search_latency_seconds_bucket", (("le", "2.0"),)] == 4
    assert got["telemetry_search_latency_seconds_count", ()] == 4
    assert got["telemetry_ingestion_documents_total", ()] == 42
    assert got["telemetry_operations_total", ()] == 10
    assert got["telemetry_operation_errors_total", ()] == 1
    assert got["telemetry_system_cpu_usage_ratio", ()] == 0.25
    assert got["telemetry_system_memory_used_bytes", ()] == 1024


def test_buckets_have_exact_rule_thresholds() -> None:
    """1 s and 2 s are bucket bounds, so the p95 rules are exact at their thresholds."""
    assert 1.0 in LATENCY_BUCKETS
    assert 2.0 in LATENCY_BUCKETS


def test_namespace_is_configurable() -> None:
    """Another namespace renames every series."""
    names = {m.name for m in Telemetry("shop").registry.collect()}
    assert all(n.startswith("shop_") for n in names)


def test_snapshot_over_window_in_seed_units() -> None:
    """Rates are counter deltas over the recorded span; p95 is histogram_quantile of deltas."""
    clock = Clock()
    telemetry = Telemetry(clock=clock, window_seconds=300)
    telemetry.add_documents(1000)  # before the window: must not count
    telemetry.observe_searches([5.0] * 50)
    telemetry.tick()
    clock.now += 60
    telemetry.add_documents(600)
    telemetry.record_operations(200, 14)
    latencies = [0.1] * 90 + [0.8] * 6 + [1.7] * 4
    telemetry.observe_searches(latencies)
    telemetry.set_system(cpu_ratio=0.915, memory_bytes=3 * 2**30)
    snap = telemetry.snapshot()
    assert snap.span_seconds == 60
    assert snap.throughput == 10.0
    assert snap.error_ratio == 0.07
    bounds = [*LATENCY_BUCKETS, math.inf]
    cumulative = [sum(1 for v in latencies if v <= b) for b in bounds]
    expected = bucket_quantile(0.95, list(zip(bounds, [float(c) for c in cumulative], strict=True)))
    assert snap.latency_p95_ms == expected * 1000
    assert 750 < expected * 1000 < 1000
    assert snap.cpu_percent == 91.5
    assert snap.memory_mb == 3072
    assert snap.as_metrics()["ingestion.throughput"] == 10.0


def test_snapshot_window_slides() -> None:
    """Only points inside [now - window, now] count: 120 docs over the last 120 s."""
    clock = Clock()
    telemetry = Telemetry(clock=clock, window_seconds=120)
    for _ in range(10):
        telemetry.tick()
        telemetry.add_documents(60)
        clock.now += 60
    snap = telemetry.snapshot()
    assert snap.span_seconds == 120
    assert snap.throughput == 1.0


def test_snapshot_without_history_has_no_rates() -> None:
    """Before two points exist there is no rate, so the rate rules get no value (no verdict)."""
    telemetry = Telemetry(clock=Clock())
    snap = telemetry.snapshot()
    assert (snap.throughput, snap.error_ratio, snap.latency_p95_ms) == (None, None, None)
    assert snap.as_metrics() == {}


def test_error_ratio_absent_without_operations() -> None:
    """No operations in the window: no ratio (PromQL 0/0 is NaN, which never fires)."""
    clock = Clock()
    telemetry = Telemetry(clock=clock)
    telemetry.tick()
    clock.now += 10
    assert telemetry.snapshot().error_ratio is None


def test_cpu_sampler_reads_a_ratio() -> None:
    """The psutil sampler returns a utilisation between 0 and 1 (or None with no time passed)."""
    sampler = CpuSampler()
    for _ in range(100_000):  # busy for a moment so CPU time advances
        pass
    value = sampler()
    assert value is None or 0.0 <= value <= 1.0


def test_parse_and_apply_batch() -> None:
    """A valid push is recorded field by field."""
    batch = parse_batch(
        {
            "search_latency_seconds": [0.1, 2],
            "documents": 5,
            "operations": 3,
            "errors": 1,
            "cpu_usage_ratio": 0.5,
            "memory_used_bytes": 10,
        },
        max_latencies=10,
        system_pushed=True,
    )
    telemetry = Telemetry()
    apply_batch(telemetry, batch)
    got = samples(telemetry)
    assert got["telemetry_search_latency_seconds_count", ()] == 2
    assert got["telemetry_operation_errors_total", ()] == 1
    assert got["telemetry_system_cpu_usage_ratio", ()] == 0.5


@pytest.mark.parametrize(
    ("payload", "field", "fragment"),
    [
        ([], "body", "JSON object"),
        ({}, "body", "nothing to record"),
        ({"docs": 1}, "docs", "unknown field"),
        ({"documents": -1}, "documents", "non-negative integer"),
        ({"documents": 1.5}, "documents", "non-negative integer"),
        ({"documents": True}, "documents", "non-negative integer"),
        ({"operations": 1, "errors": 2}, "errors", "exceed"),
        ({"search_latency_seconds": 0.5}, "search_latency_seconds", "list"),
        ({"search_latency_seconds": [0.1, "slow"]}, "search_latency_seconds[1]", "number"),
        ({"search_latency_seconds": [-0.1]}, "search_latency_seconds[0]", "between"),
        ({"search_latency_seconds": [0.1] * 11}, "search_latency_seconds", "at most 10"),
        ({"cpu_usage_ratio": 1.5}, "cpu_usage_ratio", "between 0 and 1"),
        ({"memory_used_bytes": "1G"}, "memory_used_bytes", "number"),
    ],
)
def test_invalid_batches_name_the_field(payload: Any, field: str, fragment: str) -> None:
    """Each invalid push raises InvalidInput naming the field; nothing is recorded."""
    with pytest.raises(InvalidInput) as info:
        parse_batch(payload, max_latencies=10, system_pushed=True)
    assert info.value.field == field
    assert fragment in info.value.message


def test_system_fields_refused_when_sampled() -> None:
    """With psutil sampling, pushed CPU/memory conflict instead of fighting the sampler."""
    with pytest.raises(Conflict) as info:
        parse_batch({"cpu_usage_ratio": 0.5}, max_latencies=10, system_pushed=False)
    assert info.value.code == "system_sampled"
    assert info.value.field == "cpu_usage_ratio"
