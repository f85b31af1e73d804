"""PromQL arithmetic reproduced in Python, where the bridge must agree with Prometheus 2.42."""

from __future__ import annotations

import math
from collections.abc import Sequence


def bucket_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus 2.42 bucketQuantile on (upper bound, cumulative count) pairs, +Inf last.

    >>> bucket_quantile(0.95, [(1.0, 19.0), (2.0, 20.0), (math.inf, 20.0)])
    1.0
    """
    if len(buckets) < 2 or buckets[-1][0] != math.inf:
        return math.nan
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    b = next(i for i, (_, c) in enumerate(buckets) if c >= rank)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def stddev_score(values: Sequence[float]) -> float:
    """The last value's distance from the mean of `values` in (population) standard
    deviations, as `abs(x - avg_over_time(x[W:1m])) / stddev_over_time(x[W:1m])` gives it
    (a constant series: +Inf for any other value, NaN for the same).

    >>> round(stddev_score([1.0, 3.0, 1.0, 3.0, 7.0]), 3)
    1.826
    """
    mean = sum(values) / len(values)
    deviation = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    distance = abs(values[-1] - mean)
    if deviation == 0:
        return math.nan if distance == 0 else math.inf
    return distance / deviation
