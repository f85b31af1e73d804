"""Metrics an application declares (`metrics:` of the configuration): gauges, counters and
histograms it pushes by name, exported beside the five built in, and usable in rules.

A declared metric is exported as `<namespace>_<name>` (a counter's samples `..._total`, a
histogram's `..._bucket`, `_sum`, `_count`), with the label names declared (job and instance
come from the scrape). A rule on it names it as its `metric` and needs no `expr`: the PromQL
is written here, in the shape of the built-in ones, and its threshold is in the metric's own
unit (no conversion):

- gauge: `max by (job, instance) (<series>)`;
- counter: its rate per second over the rule's window, summed by (job, instance);
- histogram: its p95 over the rule's window (histogram_quantile of the summed bucket rates).

So a rule alerts per (job, instance), on the highest (or summed) value across the declared
labels' values, in Prometheus and in the embedded evaluator alike; an alert per label value
(a queue each) is a rule with its own `expr`, `max by (job, instance, queue) (...)`.

>>> m = CustomMetric("queue_depth", "gauge", "Jobs waiting", ("queue",))
>>> metric_expr(m, "telemetry", 300)
'max by (job, instance) (telemetry_queue_depth)'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.core.errors import ConfigError

TYPES = ("gauge", "counter", "histogram")
NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: Label names the scrape or the histogram owns.
RESERVED = frozenset({"job", "instance", "le", "quantile"})
#: Histogram buckets when none are declared (prometheus_client's defaults, in seconds).
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                   10.0)  # fmt: skip
#: Label sets a metric may have; past it a push is refused (a label with unbounded values
#: would grow the exporter without end).
MAX_SERIES = 1000


@dataclass(frozen=True, slots=True)
class CustomMetric:
    """One declared metric."""

    name: str
    type: str
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""
    buckets: tuple[float, ...] = DEFAULT_BUCKETS

    def series(self, namespace: str) -> str:
        """The exported name (without a counter's `_total`)."""
        return f"{namespace}_{self.name}"


def metric_expr(metric: CustomMetric, namespace: str, window: int) -> str:
    """The PromQL of a rule's measured value on `metric` (see the module's docstring).

    >>> c = CustomMetric("jobs_failed", "counter", "Failed jobs")
    >>> metric_expr(c, "app", 300)
    'sum by (job, instance) (rate(app_jobs_failed_total[5m]))'
    """
    from bridge.core.times import format_duration

    series, span = metric.series(namespace), format_duration(window)
    if metric.type == "gauge":
        return f"max by (job, instance) ({series})"
    if metric.type == "counter":
        return f"sum by (job, instance) (rate({series}_total[{span}]))"
    return (f"histogram_quantile(0.95, sum by (le, job, instance)"
            f" (rate({series}_bucket[{span}])))")  # fmt: skip


def load_metrics(raw: object, source: str, taken: Sequence[str] = ()) -> tuple[CustomMetric, ...]:
    """The `metrics:` list of a configuration; ConfigError naming the entry and field.
    `taken`: names the built-in series use (a declared metric may not shadow one)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(source, "metrics", "must be a list of metric declarations")
    out: list[CustomMetric] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"metrics[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(source, where, "must be a mapping (name, type, help, labels)")
        unknown = sorted(set(entry) - {"name", "type", "help", "labels", "unit", "buckets"})
        if unknown:
            raise ConfigError(source, f"{where}.{unknown[0]}", "unknown field (allowed: name,"
                              " type, help, labels, unit, buckets)")  # fmt: skip
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ConfigError(source, f"{where}.name", "must match [a-zA-Z_][a-zA-Z0-9_]*")
        where = f"metrics.{name}"
        if name in seen:
            raise ConfigError(source, where, "declared twice")
        seen.add(name)
        if any(name == t or t.startswith(name + "_") or name.startswith(t + "_") for t in taken):
            raise ConfigError(source, f"{where}.name", "clashes with a built-in series")
        kind = entry.get("type")
        if kind not in TYPES:
            raise ConfigError(source, f"{where}.type", f"must be one of {', '.join(TYPES)}")
        if kind == "counter" and name.endswith("_total"):
            raise ConfigError(source, f"{where}.name", "leave `_total` out: it is added")
        help_text = entry.get("help")
        if not isinstance(help_text, str) or not help_text.strip():
            raise ConfigError(source, f"{where}.help", "says what it measures: required")
        labels = entry.get("labels", [])
        if not isinstance(labels, list) or not all(
            isinstance(label, str) and NAME_RE.match(label) and not label.startswith("__")
            for label in labels
        ):
            raise ConfigError(source, f"{where}.labels", "must be a list of label names")
        if set(labels) & RESERVED or len(set(labels)) != len(labels):
            owned = ", ".join(sorted(RESERVED))
            raise ConfigError(source, f"{where}.labels", f"repeats a name or uses one of {owned}")
        unit = entry.get("unit", "")
        if not isinstance(unit, str):
            raise ConfigError(source, f"{where}.unit", "must be a text (seconds, bytes, ...)")
        buckets = entry.get("buckets", list(DEFAULT_BUCKETS))
        if kind != "histogram" and "buckets" in entry:
            raise ConfigError(source, f"{where}.buckets", "only a histogram has buckets")
        if (not isinstance(buckets, list) or not buckets
                or not all(isinstance(b, int | float) and not isinstance(b, bool)
                           and math.isfinite(b) for b in buckets)
                or sorted(set(buckets)) != list(buckets)):  # fmt: skip
            raise ConfigError(source, f"{where}.buckets", "must be increasing finite numbers")
        out.append(CustomMetric(name, kind, help_text.strip(), tuple(labels), unit,
                                tuple(float(b) for b in buckets)))  # fmt: skip
    return tuple(out)


def with_expr(entry: Mapping[str, object], metrics: Sequence[CustomMetric],
              namespace: str) -> dict[str, object]:  # fmt: skip
    """A `rules:` entry on a declared metric, with its PromQL written when it has none.

    >>> m = CustomMetric("queue_depth", "gauge", "Jobs waiting")
    >>> with_expr({"name": "q", "metric": "queue_depth"}, [m], "app")["expr"]
    'max by (job, instance) (app_queue_depth)'
    """
    out = dict(entry)
    named = out.get("metric", out.get("metric_name"))
    found = next((m for m in metrics if m.name == named), None)
    if found is None or out.get("expr"):
        return out
    from bridge.core.times import parse_duration

    try:
        window = parse_duration(out.get("window", out.get("window_seconds", 300)))
    except ValueError:
        return out  # (the rule's own validation names the window)
    out["expr"] = metric_expr(found, namespace, window)
    return out
