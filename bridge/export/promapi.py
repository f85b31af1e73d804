"""A small client of Prometheus's HTTP query API (range queries), for exports and baselines."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from bridge.core.errors import BridgeError

#: Prometheus refuses range queries of more than 11,000 points per series.
MAX_POINTS = 11_000


@dataclass(frozen=True, slots=True)
class Series:
    """One result series of a range query: labels and (unix seconds, value) points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


def default_step(start: float, end: float, points: int = 1000) -> int:
    """A step giving about `points` points over the range, at least 1 s."""
    return max(1, math.ceil((end - start) / points))


class PrometheusClient:
    """GET /api/v1/query_range against one Prometheus."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise BridgeError(f"Prometheus URL must be http:// or https://, got {url!r}")
        self.base = url.rstrip("/")
        self.timeout = timeout

    def query_range(self, expr: str, start: float, end: float, step: int) -> list[Series]:
        """Run one range query; BridgeError naming the problem when it fails."""
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
        url = f"{self.base}/api/v1/query_range?{query}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                error = json.loads(exc.read()).get("error", exc.reason)
            except ValueError:
                error = exc.reason
            raise BridgeError(f"Prometheus rejected {expr!r}: {error}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BridgeError(f"cannot reach Prometheus at {self.base}: {reason}") from None
        if body.get("status") != "success":
            raise BridgeError(f"Prometheus query {expr!r} failed: {body.get('error')}")
        return [
            Series(dict(item["metric"]), [(float(t), float(v)) for t, v in item["values"]])
            for item in body["data"]["result"]
        ]
