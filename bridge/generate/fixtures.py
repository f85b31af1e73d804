"""Input series with exactly known PromQL values, per metric kind, for promtool unit tests.

A *level* is what one phase of a test series holds; `measured(level)` is the value the rule's
measurement expression yields once its window lies inside that phase, computed with the same
floating-point operations Prometheus 2.42 performs (rate without extrapolation because samples sit
on both window edges; bucketQuantile's linear interpolation). Counter increments are integers,
so every rate is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bridge.core.catalog import LATENCY_BUCKETS, Kind, MetricSpec
from bridge.core.promql import bucket_quantile

TEST_LABELS = {"job": "app", "instance": "app-1:8080"}
RATIO_TOTAL_RATE = 10_000  # operations per second in ratio fixtures: 1e-4 resolution
P95_TOTAL_RATE = 20_000  # observations per second in latency fixtures


@dataclass(frozen=True, slots=True)
class Timing:
    """Step of the input series and the rule's window/for, in steps."""

    step: int
    window_steps: int
    for_steps: int

    @classmethod
    def for_rule(cls, window_seconds: int, for_seconds: int) -> Timing:
        step = 60 if window_seconds % 60 == 0 else 15 if window_seconds % 15 == 0 else 1
        return cls(step, window_seconds // step, math.ceil(for_seconds / step))


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(value)


def _labels(extra: dict[str, str] | None = None) -> str:
    labels = {**TEST_LABELS, **(extra or {})}
    return "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def _gauge_values(levels: list[tuple[float, int]]) -> str:
    return " ".join(f"{_num(v)}+0x{n - 1}" for v, n in levels)


def _counter_values(levels: list[tuple[int, int]]) -> str:
    """Counter with `inc` per step during each phase; the first phase starts at 0."""
    parts, value, first = [], 0, True
    for inc, n in levels:
        start = value if first else value + inc
        parts.append(f"{start}+{inc}x{n - 1}")
        value = start + inc * (n - 1)
        first = False
    return " ".join(parts)


class Fixture:
    """Builds series for one metric kind. Subclasses define the level type."""

    def __init__(self, spec: MetricSpec, namespace: str, timing: Timing) -> None:
        self.spec = spec
        self.series = spec.series_name(namespace)
        self.timing = timing

    def level(self, value: float) -> Any:
        """The level whose measured value is as near `value` (base units) as the kind allows."""
        raise NotImplementedError

    def measured(self, level: Any) -> float:
        """The measurement expression's value when its window lies within a phase of `level`."""
        raise NotImplementedError

    def input_series(self, phases: list[tuple[Any, int]]) -> list[dict[str, str]]:
        """promtool input_series for consecutive phases of (level, steps)."""
        raise NotImplementedError


class GaugeFixture(Fixture):
    def level(self, value: float) -> float:
        return value

    def measured(self, level: float) -> float:
        return level

    def input_series(self, phases: list[tuple[float, int]]) -> list[dict[str, str]]:
        return [{"series": self.series + _labels(), "values": _gauge_values(phases)}]


class RateFixture(Fixture):
    def level(self, value: float) -> int:
        return max(0, round(value * self.timing.step))

    def measured(self, level: int) -> float:
        n, window = self.timing.window_steps, self.timing.window_steps * self.timing.step
        return (level * n) / window

    def input_series(self, phases: list[tuple[int, int]]) -> list[dict[str, str]]:
        return [{"series": self.series + _labels(), "values": _counter_values(phases)}]


class RatioFixture(Fixture):
    def level(self, value: float) -> int:
        return max(0, min(RATIO_TOTAL_RATE, round(value * RATIO_TOTAL_RATE)))

    def measured(self, level: int) -> float:
        t = self.timing
        window = t.window_steps * t.step
        errors = (level * t.step * t.window_steps) / window
        total = (RATIO_TOTAL_RATE * t.step * t.window_steps) / window
        return errors / total

    def input_series(self, phases: list[tuple[int, int]]) -> list[dict[str, str]]:
        total = self.series.removesuffix(self.spec.series) + self.spec.total
        step = self.timing.step
        return [
            {
                "series": self.series + _labels(),
                "values": _counter_values([(e * step, n) for e, n in phases]),
            },
            {
                "series": total + _labels(),
                "values": _counter_values([(RATIO_TOTAL_RATE * step, n) for _, n in phases]),
            },
        ]


P95Level = tuple[tuple[float, int], ...]  # (upper bound, cumulative observations per second)


class P95Fixture(Fixture):
    """Observations placed so that the 95th percentile interpolates to the wanted value."""

    def level(self, value: float) -> P95Level:
        bounds = [*LATENCY_BUCKETS, math.inf]
        total = P95_TOTAL_RATE
        hi_index = next((i for i, b in enumerate(bounds) if value <= b), len(bounds) - 1)
        hi = bounds[hi_index]
        lo = bounds[hi_index - 1] if hi_index else 0.0
        if math.isinf(hi):  # p95 cannot exceed the largest finite bound
            below, within = 0, 0
        else:
            frac = max(0.0, (value - lo) / (hi - lo))
            if frac > 0.95 or hi_index == 0:
                below, within = 0, min(total, round(0.95 * total / max(frac, 1e-9)))
            else:
                below = round(total * (0.95 - frac) / (1 - frac))
                within = total - below
        # `below` observations sit in the bucket just under the target's, the rest above it.
        cumulative = []
        for i, b in enumerate(bounds):
            if math.isinf(b):
                cumulative.append((b, total))
            elif i < hi_index:
                cumulative.append((b, below if i == hi_index - 1 else 0))
            else:
                cumulative.append((b, below + within))
        return tuple(cumulative)

    def measured(self, level: P95Level) -> float:
        # rate() of each bucket is exact: an integer per-second count times whole steps.
        t = self.timing
        window = t.window_steps * t.step
        rates = [(b, (c * t.step * t.window_steps) / window) for b, c in level]
        return bucket_quantile(0.95, rates)

    def input_series(self, phases: list[tuple[P95Level, int]]) -> list[dict[str, str]]:
        step = self.timing.step
        out = []
        for index, (bound, _) in enumerate(phases[0][0]):
            le = "+Inf" if math.isinf(bound) else repr(float(bound))
            values = _counter_values([(lvl[index][1] * step, n) for lvl, n in phases])
            out.append({"series": f"{self.series}_bucket" + _labels({"le": le}), "values": values})
        return out


_FIXTURES: dict[Kind, type[Fixture]] = {
    Kind.GAUGE: GaugeFixture,
    Kind.RATE: RateFixture,
    Kind.RATIO: RatioFixture,
    Kind.P95: P95Fixture,
}


def fixture_for(spec: MetricSpec, namespace: str, timing: Timing) -> Fixture:
    """The fixture builder for a metric kind."""
    return _FIXTURES[spec.kind](spec, namespace, timing)
