"""The telemetry catalogue: each seed metric's exported series, PromQL shape and unit conversion.

This is the one place where seed units (percent, MB, ms, docs/s, ratio) become Prometheus base
units (ratio, bytes, seconds, per second, ratio). Rules keep their thresholds in seed units;
everything that talks to Prometheus, Grafana or the evaluator's comparison converts here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    """How a metric's measured value is computed from its series."""

    GAUGE = "gauge"
    RATE = "rate"
    RATIO = "ratio"
    P95 = "p95"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One seed metric.

    >>> CATALOG["system.cpu.percent"].to_base(80.0)
    0.8
    """

    name: str
    kind: Kind
    series: str  # without namespace; counters/histograms without suffixes
    seed_unit: str
    base_unit: str
    divisor: float  # base = seed / divisor (division keeps 80/100 == 0.8 exactly)
    humanize: str  # Prometheus template function that renders a base-unit value
    grafana_unit: str
    help: str
    denominator: str | None = None  # RATIO: the total series

    def __post_init__(self) -> None:
        if self.kind is Kind.RATIO and not self.denominator:
            raise ValueError(f"{self.name}: a ratio needs the series of its total")

    @property
    def total(self) -> str:
        """A ratio's total series, without namespace (ValueError for other kinds)."""
        if not self.denominator:
            raise ValueError(f"{self.name} is not a ratio")
        return self.denominator

    def to_base(self, value: float) -> float:
        """Convert a value in seed units to base units."""
        return value / self.divisor

    def from_base(self, value: float) -> float:
        """Convert a value in base units to seed units."""
        return value * self.divisor

    def series_name(self, namespace: str) -> str:
        """Full exported series name for a namespace."""
        return f"{namespace}_{self.series}"

    def measurement(self, namespace: str, window: str, selector: str = "") -> str:
        """PromQL for the measured value in base units, one series per (job, instance).

        `selector` (e.g. `{instance=~"$instance"}`) narrows every series the expression reads.
        """
        full = self.series_name(namespace)
        if self.kind is Kind.GAUGE:
            return f"max by (job, instance) ({full}{selector})"
        if self.kind is Kind.RATE:
            return f"sum by (job, instance) (rate({full}{selector}[{window}]))"
        if self.kind is Kind.P95:
            return (
                "histogram_quantile(0.95, sum by (le, job, instance) "
                f"(rate({full}_bucket{selector}[{window}])))"
            )
        total = f"{namespace}_{self.total}"
        return (
            f"sum by (job, instance) (rate({full}{selector}[{window}]))"
            f" / sum by (job, instance) (rate({total}{selector}[{window}]))"
        )


MIB = 1024 * 1024

CATALOG: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            name="system.cpu.percent",
            kind=Kind.GAUGE,
            series="system_cpu_usage_ratio",
            seed_unit="%",
            base_unit="ratio",
            divisor=100.0,
            humanize="humanizePercentage",
            grafana_unit="percentunit",
            help="System-wide CPU utilisation, 0 to 1.",
        ),
        MetricSpec(
            name="system.memory.used_mb",
            kind=Kind.GAUGE,
            series="system_memory_used_bytes",
            seed_unit="MiB",
            base_unit="bytes",
            divisor=1.0 / MIB,
            humanize="humanize1024",
            grafana_unit="bytes",
            help="System memory in use, in bytes.",
        ),
        MetricSpec(
            name="search.latency.p95",
            kind=Kind.P95,
            series="search_latency_seconds",
            seed_unit="ms",
            base_unit="seconds",
            divisor=1000.0,
            humanize="humanizeDuration",
            grafana_unit="s",
            help="Search request latency in seconds.",
        ),
        MetricSpec(
            name="ingestion.throughput",
            kind=Kind.RATE,
            series="ingestion_documents_total",
            seed_unit="docs/s",
            base_unit="per second",
            divisor=1.0,
            humanize="humanize",
            grafana_unit="ops",
            help="Documents ingested.",
        ),
        MetricSpec(
            name="errors.rate",
            kind=Kind.RATIO,
            series="operation_errors_total",
            denominator="operations_total",
            seed_unit="ratio",
            base_unit="ratio",
            divisor=1.0,
            humanize="humanizePercentage",
            grafana_unit="percentunit",
            help="Operations that failed.",
        ),
    )
}


def spec_for(metric_name: str) -> MetricSpec | None:
    """The catalogue entry for a seed metric name, or None for a custom metric."""
    return CATALOG.get(metric_name)


#: Search latency histogram buckets (seconds). 1 s and 2 s are bounds so that the p95 rules'
#: thresholds fall exactly on a bucket edge, where histogram_quantile is exact.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
)


#: The series the built-in metrics export (without namespace): a declared metric may not
#: shadow one (bridge.core.custom).
BUILT_IN_SERIES: tuple[str, ...] = tuple(
    sorted(
        {s.series for s in CATALOG.values()}
        | {s.denominator for s in CATALOG.values() if s.denominator}
    )
)
