"""The telemetry exporter: the application's five series in a private registry, and snapshots.

Applications record through `Telemetry` (in process) or POST /api/v1/telemetry (other
processes). System CPU and memory are sampled with psutil unless the configuration says they
are pushed. `snapshot()` computes the rules' inputs in seed units over a window the way the
generated PromQL does (counter deltas, histogram_quantile on bucket deltas), so the embedded
evaluator sees what Prometheus would.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bridge.core.catalog import CATALOG, LATENCY_BUCKETS, MIB
from bridge.core.custom import MAX_SERIES, CustomMetric
from bridge.core.errors import Conflict, InvalidInput
from bridge.core.model import json_integer
from bridge.core.promql import bucket_quantile


@dataclass(frozen=True, slots=True)
class _Point:
    """Cumulative counter values at one instant."""

    at: float
    documents: float
    operations: float
    errors: float
    buckets: tuple[float, ...]  # cumulative, LATENCY_BUCKETS then +Inf


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The rules' inputs in seed units; None where there is no data yet.

    >>> Snapshot(12.5, 900.0, None, None, None, 0.0).as_metrics()
    {'system.cpu.percent': 12.5, 'system.memory.used_mb': 900.0}
    """

    cpu_percent: float | None
    memory_mb: float | None
    latency_p95_ms: float | None
    throughput: float | None
    error_ratio: float | None
    span_seconds: float
    #: Declared metrics (bridge.core.custom) by name: a gauge's highest value, a counter's
    #: rate per second over the window, a histogram's p95 over it (their own units).
    custom: Mapping[str, float] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        """Seed metric name -> value, for the evaluator; metrics without data are left out."""
        values = {
            "system.cpu.percent": self.cpu_percent,
            "system.memory.used_mb": self.memory_mb,
            "search.latency.p95": self.latency_p95_ms,
            "ingestion.throughput": self.throughput,
            "errors.rate": self.error_ratio,
            **self.custom,
        }
        return {k: v for k, v in values.items() if v is not None and not math.isnan(v)}


def _total(counter: Counter) -> float:
    return next(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))


class CpuSampler:
    """System-wide CPU utilisation between two calls, from psutil's cumulative CPU times.

    Independent of psutil.cpu_percent's module-global baseline, so two samplers do not
    disturb each other.
    """

    def __init__(self) -> None:
        self._last = psutil.cpu_times()

    def __call__(self) -> float | None:
        now = psutil.cpu_times()
        last, self._last = self._last, now
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (last.idle + getattr(last, "iowait", 0.0))
        # On Linux guest time is already counted in user time.
        guest = getattr(now, "guest", 0.0) + getattr(now, "guest_nice", 0.0)
        guest -= getattr(last, "guest", 0.0) + getattr(last, "guest_nice", 0.0)
        total = sum(now) - sum(last) - guest
        if total <= 0:
            return None
        return min(1.0, max(0.0, (total - idle) / total))


def memory_used_bytes() -> float:
    """Memory in use: total minus what is available without swapping."""
    vm = psutil.virtual_memory()
    return float(vm.total - vm.available)


class Telemetry:
    """Owns the application's series in a private CollectorRegistry.

    >>> t = Telemetry(clock=lambda: 0.0)
    >>> t.add_documents(10); t.record_operation(failed=True); t.observe_search(0.2)
    >>> [m.name for m in t.registry.collect()][:2]
    ['telemetry_system_cpu_usage_ratio', 'telemetry_system_memory_used_bytes']
    """

    def __init__(
        self,
        namespace: str = "telemetry",
        *,
        registry: CollectorRegistry | None = None,
        window_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace
        self.window_seconds = window_seconds
        self._clock = clock
        specs = CATALOG
        cpu, mem = specs["system.cpu.percent"], specs["system.memory.used_mb"]
        lat, docs = specs["search.latency.p95"], specs["ingestion.throughput"]
        err = specs["errors.rate"]
        self.cpu = Gauge(cpu.series_name(namespace), cpu.help, registry=self.registry)
        self.memory = Gauge(mem.series_name(namespace), mem.help, registry=self.registry)
        self.latency = Histogram(
            lat.series_name(namespace), lat.help, buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.documents = Counter(docs.series_name(namespace), docs.help, registry=self.registry)
        self.operations = Counter(
            f"{namespace}_{err.total}", "Operations performed.", registry=self.registry
        )
        self.errors = Counter(err.series_name(namespace), err.help, registry=self.registry)
        self._cpu_value: float | None = None
        self._memory_value: float | None = None
        self._lock = threading.Lock()
        self._history: deque[_Point] = deque()
        #: Declared metrics: their definition and their prometheus_client metric.
        self.custom: dict[str, tuple[CustomMetric, Any]] = {}
        self._label_sets: dict[str, set[tuple[str, ...]]] = {}
        self._custom_history: deque[tuple[float, dict[str, Any]]] = deque()

    def declare(self, metrics: Sequence[CustomMetric]) -> None:
        """Export the metrics the application declares (bridge.core.custom)."""
        kinds: dict[str, Any] = {"gauge": Gauge, "counter": Counter, "histogram": Histogram}
        for metric in metrics:
            extra = {"buckets": metric.buckets} if metric.type == "histogram" else {}
            made = kinds[metric.type](metric.series(self.namespace), metric.help,
                                      labelnames=metric.labels, registry=self.registry,
                                      **extra)  # fmt: skip
            self.custom[metric.name] = (metric, made)
            self._label_sets[metric.name] = set()

    def record(self, name: str, value: float | Sequence[float],
               labels: Mapping[str, str] | None = None) -> None:  # fmt: skip
        """Record a declared metric by name: a gauge's value, a counter's increment, a
        histogram's observation (or several); InvalidInput naming what is wrong, and
        nothing recorded."""
        raw: dict[str, object] = {"name": name, "labels": dict(labels or {})}
        if isinstance(value, int | float):
            raw["value"] = value
        else:
            raw["values"] = list(value)
        sample = check_sample(self.custom, raw, "metric")
        self.record_all([sample])

    def record_all(self, samples: Sequence[Sample]) -> None:
        """Record checked samples, all or (a new label set past MAX_SERIES) none."""
        with self._lock:
            for index, (name, key, _) in enumerate(samples):
                known = self._label_sets[name]
                if key not in known and len(known) >= MAX_SERIES:
                    why = f"{name} has {MAX_SERIES} label sets already: unbounded label values?"
                    raise InvalidInput(f"metrics[{index}].labels", why)
            for name, key, values in samples:
                self._label_sets[name].add(key)
                metric, made = self.custom[name]
                child = made.labels(*key) if metric.labels else made
                for value in values:
                    if metric.type == "gauge":
                        child.set(value)
                    elif metric.type == "counter":
                        child.inc(value)
                    else:
                        child.observe(value)

    def _custom_point(self) -> dict[str, Any]:
        """Each declared counter's total and histogram's summed buckets, now."""
        out: dict[str, Any] = {}
        for name, (metric, made) in self.custom.items():
            if metric.type == "counter":
                out[name] = sum(s.value for m in made.collect() for s in m.samples
                                if s.name.endswith("_total"))  # fmt: skip
            elif metric.type == "histogram":
                sums: dict[float, float] = {}
                for m in made.collect():
                    for s in m.samples:
                        if s.name.endswith("_bucket"):
                            bound = float(s.labels["le"])
                            sums[bound] = sums.get(bound, 0.0) + s.value
                out[name] = sorted(sums.items())
        return out

    def _custom_values(self, now: float, point: dict[str, Any]) -> dict[str, float]:
        """The declared metrics' values for the evaluator (Snapshot.custom)."""
        values: dict[str, float] = {}
        for name, (metric, made) in self.custom.items():
            if metric.type == "gauge":
                current = [s.value for m in made.collect() for s in m.samples]
                if current:
                    values[name] = max(current)
        with self._lock:
            base = next(((at, p) for at, p in self._custom_history
                         if now - at <= self.window_seconds), None)  # fmt: skip
        if base is None or now - base[0] <= 0:
            return values
        span = now - base[0]
        for name, (metric, _) in self.custom.items():
            if name not in base[1] or name not in point:
                continue
            if metric.type == "counter":
                values[name] = (point[name] - base[1][name]) / span
            elif metric.type == "histogram":
                before = dict(base[1][name])
                deltas = [(bound, count - before.get(bound, 0.0)) for bound, count in point[name]]
                p95 = bucket_quantile(0.95, deltas)
                if not math.isnan(p95):
                    values[name] = p95
        return values

    # --- recording ------------------------------------------------------------------------
    def observe_search(self, seconds: float) -> None:
        """Record one search's latency in seconds."""
        self.latency.observe(seconds)

    def observe_searches(self, seconds: Iterable[float]) -> None:
        """Record a batch of search latencies."""
        for value in seconds:
            self.latency.observe(value)

    def add_documents(self, count: float = 1) -> None:
        """Count ingested documents."""
        self.documents.inc(count)

    def record_operation(self, failed: bool = False, count: float = 1) -> None:
        """Count operations, and errors among them when `failed`."""
        self.operations.inc(count)
        if failed:
            self.errors.inc(count)

    def record_operations(self, total: float, failed: float) -> None:
        """Count a batch: `total` operations of which `failed` failed."""
        self.operations.inc(total)
        self.errors.inc(failed)

    def set_system(self, cpu_ratio: float | None = None, memory_bytes: float | None = None) -> None:
        """Set system CPU (0..1) and memory (bytes) from a sampler or a push."""
        if cpu_ratio is not None:
            self.cpu.set(cpu_ratio)
            self._cpu_value = cpu_ratio
        if memory_bytes is not None:
            self.memory.set(memory_bytes)
            self._memory_value = memory_bytes

    # --- windowed view ----------------------------------------------------------------------
    def _point(self) -> _Point:
        buckets = tuple(
            s.value
            for metric in self.latency.collect()
            for s in metric.samples
            if s.name.endswith("_bucket")
        )
        return _Point(
            at=self._clock(),
            documents=_total(self.documents),
            operations=_total(self.operations),
            errors=_total(self.errors),
            buckets=buckets,
        )

    def tick(self) -> None:
        """Remember the counters now; `snapshot()` compares against the oldest within window."""
        point = self._point()
        custom = self._custom_point() if self.custom else None
        with self._lock:
            history = self._history
            if history and point.at - history[-1].at < 1.0:
                return  # one point a second is plenty and bounds memory
            history.append(point)
            while point.at - history[0].at > self.window_seconds:
                history.popleft()
            if custom is not None:
                kept = self._custom_history
                kept.append((point.at, custom))
                while point.at - kept[0][0] > self.window_seconds:
                    kept.popleft()

    def snapshot(self) -> Snapshot:
        """The rules' inputs in seed units over the window (as much of it as is recorded)."""
        now = self._point()
        with self._lock:
            # The oldest point inside [now - window, now], like the samples a range vector selects.
            base = next((p for p in self._history if now.at - p.at <= self.window_seconds), None)
        cpu = self._cpu_value * 100 if self._cpu_value is not None else None
        memory = self._memory_value / MIB if self._memory_value is not None else None
        custom = self._custom_values(now.at, self._custom_point()) if self.custom else {}
        if base is None or now.at - base.at <= 0:
            return Snapshot(cpu, memory, None, None, None, 0.0, custom)
        span = now.at - base.at
        throughput = (now.documents - base.documents) / span
        ops = now.operations - base.operations
        ratio = (now.errors - base.errors) / ops if ops > 0 else None
        deltas = [n - b for n, b in zip(now.buckets, base.buckets, strict=True)]
        bounds = [*LATENCY_BUCKETS, math.inf]
        p95 = bucket_quantile(0.95, list(zip(bounds, deltas, strict=True)))
        return Snapshot(
            cpu,
            memory,
            None if math.isnan(p95) else p95 * 1000,
            throughput,
            ratio,
            span,
            custom,
        )


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """A validated batch from POST /api/v1/telemetry (base units)."""

    search_latency_seconds: tuple[float, ...] = ()
    documents: int = 0
    operations: int = 0
    errors: int = 0
    cpu_usage_ratio: float | None = None
    memory_used_bytes: float | None = None
    #: Declared metrics: (name, label values in declared order, values).
    custom: tuple[Sample, ...] = ()


#: A checked sample of a declared metric: its name, its label values in declared order, and
#: its values (a gauge's last is the one kept).
Sample = tuple[str, tuple[str, ...], tuple[float, ...]]
#: Values one sample may carry (a histogram's observations), at most.
MAX_VALUES = 10_000


def check_sample(declared: Mapping[str, tuple[CustomMetric, Any]], raw: object,
                 where: str) -> Sample:  # fmt: skip
    """A sample of a declared metric, checked; InvalidInput naming the field."""
    if not isinstance(raw, dict):
        raise InvalidInput(where, "must be an object: {name, value or values, labels}")
    unknown = sorted(set(raw) - {"name", "value", "values", "labels"})
    if unknown:
        raise InvalidInput(f"{where}.{unknown[0]}", "unknown field (allowed: name, value,"
                           " values, labels)")  # fmt: skip
    name = raw.get("name")
    if not isinstance(name, str) or name not in declared:
        known = ", ".join(sorted(declared)) or "none declared (metrics: in the configuration)"
        raise InvalidInput(f"{where}.name", f"unknown metric {str(name)[:64]!r} (declared:"
                           f" {known})")  # fmt: skip
    metric = declared[name][0]
    if ("value" in raw) == ("values" in raw):
        raise InvalidInput(f"{where}.value", "give value (one number) or values (a list)")
    values_raw = raw["values"] if "values" in raw else [raw["value"]]
    if not isinstance(values_raw, list) or not values_raw or len(values_raw) > MAX_VALUES:
        raise InvalidInput(f"{where}.values", f"must be a list of 1 to {MAX_VALUES} numbers")
    low = 0.0 if metric.type == "counter" else -math.inf
    values = []
    for i, value in enumerate(values_raw):
        field_name = f"{where}.value" if "value" in raw else f"{where}.values[{i}]"
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(field_name, f"must be a number, got {value!r:.40}")
        number = float(value)
        if not math.isfinite(number) or number < low:
            what = "a finite number >= 0 (a counter only grows)" if low == 0 else "finite"
            raise InvalidInput(field_name, f"must be {what}, got {value!r:.40}")
        values.append(number)
    labels = raw.get("labels", {})
    if (
        not isinstance(labels, dict)
        or set(labels) != set(metric.labels)
        or not all(isinstance(v, str) and len(v) <= 1024 for v in labels.values())
    ):
        wanted = ", ".join(metric.labels) or "none"
        raise InvalidInput(f"{where}.labels", f"{name} takes the labels {wanted}, each a text"
                           " of at most 1024 characters")  # fmt: skip
    return name, tuple(labels[k] for k in metric.labels), tuple(values)


_BATCH_FIELDS = (
    "search_latency_seconds",
    "documents",
    "operations",
    "errors",
    "cpu_usage_ratio",
    "memory_used_bytes",
    "metrics",
)


def _count(payload: dict[str, object], name: str) -> int:
    value = payload.get(name, 0)
    count = json_integer(value)
    if count is None or count < 0:
        raise InvalidInput(name, f"must be a non-negative integer, got {value!r}")
    return count


def _finite(value: object, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(name, f"must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        raise InvalidInput(name, f"must be between {low:g} and {high:g}, got {value!r}")
    return number


Declared = Mapping[str, tuple[CustomMetric, Any]]


def parse_batch(payload: object, *, max_latencies: int, system_pushed: bool,
                declared: Declared | None = None) -> TelemetryBatch:  # fmt: skip
    """Validate a decoded JSON push; raises InvalidInput naming the field."""
    if not isinstance(payload, dict):
        raise InvalidInput("body", "must be a JSON object")
    unknown = sorted(set(payload) - set(_BATCH_FIELDS))
    if unknown:
        raise InvalidInput(unknown[0], f"unknown field (allowed: {', '.join(_BATCH_FIELDS)})")
    if not payload:
        raise InvalidInput("body", "nothing to record")
    latencies_raw = payload.get("search_latency_seconds", [])
    if not isinstance(latencies_raw, list):
        raise InvalidInput("search_latency_seconds", "must be a list of seconds")
    if len(latencies_raw) > max_latencies:
        raise InvalidInput("search_latency_seconds", f"at most {max_latencies} values per request")
    latencies = tuple(
        _finite(v, f"search_latency_seconds[{i}]", 0.0, 86400.0)
        for i, v in enumerate(latencies_raw)
    )
    documents, operations, errors = (
        _count(payload, "documents"),
        _count(payload, "operations"),
        _count(payload, "errors"),
    )
    if errors > operations:
        raise InvalidInput("errors", f"{errors} errors exceed {operations} operations")
    system = {k: payload[k] for k in ("cpu_usage_ratio", "memory_used_bytes") if k in payload}
    if system and not system_pushed:
        name = next(iter(system))
        raise Conflict(
            f"{name}: system metrics are sampled on this bridge (set telemetry.system: push"
            " to accept them)",
            field=name,
            code="system_sampled",
        )
    cpu = system.get("cpu_usage_ratio")
    memory = system.get("memory_used_bytes")
    samples = payload.get("metrics", [])
    if not isinstance(samples, list) or len(samples) > MAX_VALUES:
        raise InvalidInput("metrics", f"must be a list of at most {MAX_VALUES} samples")
    custom = tuple(check_sample(declared or {}, raw, f"metrics[{i}]")
                   for i, raw in enumerate(samples))  # fmt: skip
    return TelemetryBatch(
        custom=custom,
        search_latency_seconds=latencies,
        documents=documents,
        operations=operations,
        errors=errors,
        cpu_usage_ratio=None if cpu is None else _finite(cpu, "cpu_usage_ratio", 0.0, 1.0),
        memory_used_bytes=None
        if memory is None
        else _finite(memory, "memory_used_bytes", 0.0, 2.0**63),
    )


def apply_batch(telemetry: Telemetry, batch: TelemetryBatch) -> None:
    """Record a validated batch (nothing of it when a declared metric refuses its samples)."""
    if batch.custom:
        telemetry.record_all(batch.custom)
    telemetry.observe_searches(batch.search_latency_seconds)
    if batch.documents:
        telemetry.add_documents(batch.documents)
    if batch.operations:
        telemetry.record_operations(batch.operations, batch.errors)
    telemetry.set_system(batch.cpu_usage_ratio, batch.memory_used_bytes)
