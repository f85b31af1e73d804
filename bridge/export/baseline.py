"""`alertbridge baseline`: a metric's distribution from Prometheus history, suggested
thresholds, and a backtest of the current rules on it.

Suggested thresholds are heuristics on the observed distribution, in seed units: where high is
bad (rules with > or >=), warning = 1.1 x p95 and critical = 1.25 x p99 (kept above warning);
where low is bad (< or <=), warning = 0.9 x p5 and critical = 0.75 x p1 (kept below warning).
The backtest evaluates each enabled rule's alerting expression over the range and counts the
episodes in which it held for at least the rule's `for`, per series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.core.catalog import CATALOG
from bridge.core.errors import BridgeError
from bridge.core.expressions import alert_expr
from bridge.core.model import AlertRule, Condition
from bridge.core.times import format_duration
from bridge.export.promapi import PrometheusClient, Series


def quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values."""
    if not ordered:
        return math.nan
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Backtest:
    """How a rule would have behaved over the range."""

    rule: str
    episodes: int
    firing_seconds: float


@dataclass(frozen=True, slots=True)
class Baseline:
    """A metric's distribution (seed units), suggestions and backtests."""

    metric: str
    unit: str
    samples: int
    mean: float
    p50: float
    p95: float
    p99: float
    max: float
    suggested_warning: float
    suggested_critical: float
    backtests: tuple[Backtest, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric, "unit": self.unit, "samples": self.samples,
            "mean": self.mean, "p50": self.p50, "p95": self.p95, "p99": self.p99,
            "max": self.max, "suggested_warning": self.suggested_warning,
            "suggested_critical": self.suggested_critical,
            "backtests": [
                {"rule": b.rule, "episodes": b.episodes, "firing_seconds": b.firing_seconds}
                for b in self.backtests
            ],
        }  # fmt: skip


def episodes(series: Sequence[Series], step: int, hold_seconds: int) -> tuple[int, float]:
    """Runs of consecutive points (a gap larger than a step ends a run) lasting >= hold."""
    count, firing = 0, 0.0
    for one in series:
        times = [t for t, _ in one.points]
        run_start = prev = None
        for t in [*times, math.inf]:
            if prev is not None and t - prev <= step * 1.5:
                prev = t
                continue
            if run_start is not None and prev is not None and prev - run_start >= hold_seconds:
                count += 1
                firing += prev - run_start + step
            run_start = prev = t
    return count, firing


def backtest(
    client: PrometheusClient, rule: AlertRule, namespace: str, start: float, end: float, step: int
) -> Backtest:
    """Evaluate the rule's alerting expression over the range, honouring its `for`."""
    series = client.query_range(alert_expr(rule, namespace), start, end, step)
    count, firing = episodes(series, step, rule.for_seconds)
    return Backtest(rule.name, count, firing)


def _suggest(ordered: list[float], low_is_bad: bool) -> tuple[float, float]:
    if low_is_bad:
        warning = 0.9 * quantile(ordered, 0.05)
        return warning, min(0.75 * quantile(ordered, 0.01), warning)
    warning = 1.1 * quantile(ordered, 0.95)
    return warning, max(1.25 * quantile(ordered, 0.99), warning)


def compute_baseline(
    client: PrometheusClient,
    rules: Sequence[AlertRule],
    metric: str,
    namespace: str,
    start: float,
    end: float,
    step: int,
) -> Baseline:
    """Distribution, suggestions and backtests for a seed metric over [start, end]."""
    spec = CATALOG.get(metric)
    if spec is None:
        raise BridgeError(f"unknown metric {metric!r}; one of: {', '.join(CATALOG)}")
    series = client.query_range(spec.measurement(namespace, "5m"), start, end, step)
    values = sorted(spec.from_base(v) for s in series for _, v in s.points if math.isfinite(v))
    if not values:
        raise BridgeError(f"Prometheus has no data for {metric} in that range")
    on_metric = [r for r in rules if r.enabled and r.metric_name == metric and r.expr is None]
    low_is_bad = any(r.condition in (Condition.LT, Condition.LE) for r in on_metric)
    warning, critical = _suggest(values, low_is_bad)
    return Baseline(
        metric=metric,
        unit=spec.seed_unit,
        samples=len(values),
        mean=sum(values) / len(values),
        p50=quantile(values, 0.5),
        p95=quantile(values, 0.95),
        p99=quantile(values, 0.99),
        max=values[-1],
        suggested_warning=warning,
        suggested_critical=critical,
        backtests=tuple(backtest(client, r, namespace, start, end, step) for r in on_metric),
    )


def describe(b: Baseline) -> list[str]:
    """Human-readable lines."""
    unit = f" {b.unit}" if b.unit else ""
    lines = [
        f"{b.metric}: {b.samples} samples",
        f"mean {b.mean:.4g}{unit}  p50 {b.p50:.4g}  p95 {b.p95:.4g}  p99 {b.p99:.4g}"
        f"  max {b.max:.4g}{unit}",
        f"suggested thresholds: warning {b.suggested_warning:.4g}{unit}, "
        f"critical {b.suggested_critical:.4g}{unit}",
    ]
    for t in b.backtests:
        lines.append(
            f"rule {t.rule}: would have fired {t.episodes} time(s), "
            f"{format_duration(round(t.firing_seconds))} in all"
        )
    return lines


def suggested_rule(b: Baseline, name: str | None = None) -> dict[str, Any]:
    """A ready rule from a baseline: a warning past the suggested threshold (below it for a
    metric whose rules alert on low values), held for 5 minutes; a `rules:` entry.

    >>> b = Baseline("system.cpu.percent", "%", 10, 40, 38, 70, 80, 90, 77.0, 100.0, ())
    >>> suggested_rule(b)["threshold"], suggested_rule(b)["condition"]
    (77.0, '>')
    """
    low = b.suggested_warning < b.p50
    return {"name": name or b.metric.replace(".", "_") + "_unusual", "metric": b.metric,
            "condition": "<" if low else ">", "threshold": float(f"{b.suggested_warning:.4g}"),
            "severity": "warning", "for": "5m",
            "description": f"{b.metric} {'below' if low else 'beyond'} what {b.samples} samples"
                           " of its history showed"}  # fmt: skip
