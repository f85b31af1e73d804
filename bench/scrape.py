"""Benchmark: GET /metrics latency vs. generate_latest() on the same registry, same run.

    .venv/bin/python -m bench.scrape [--requests N] [--series N]

Serves the real app on a free loopback port and scrapes it sequentially (bounded by count and
time), for the default registry and for one with N extra labelled series. The baseline is
prometheus_client.generate_latest() called directly on the same registry: the difference is
what the HTTP layer and the thread hand-off cost.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from prometheus_client import Gauge, generate_latest

from bridge.config import load_settings
from bridge.http.app import create_app
from bridge.http.keys import REGISTRY

MAX_SECONDS = 60.0  # per measurement: stop early rather than run away


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def time_calls(call: Callable[[], object], count: int) -> list[float]:
    out, deadline = [], time.monotonic() + MAX_SECONDS
    for _ in range(count):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
        if time.monotonic() > deadline:
            break
    return out


async def time_scrapes(url: str, count: int) -> tuple[list[float], int]:
    out, size, deadline = [], 0, time.monotonic() + MAX_SECONDS
    async with aiohttp.ClientSession(auto_decompress=True) as session:
        for _ in range(count):
            start = time.perf_counter()
            async with session.get(url) as response:
                body = await response.read()
            out.append(time.perf_counter() - start)
            size = len(body)
            if time.monotonic() > deadline:
                break
    return out, size


def row(label: str, samples: list[float], extra: str = "") -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"{label:<40} n={len(ms):<5} p50={statistics.median(ms):8.2f} ms  "
        f"p99={percentile(ms, 0.99):8.2f} ms  {extra}"
    )


async def measure(label: str, extra_series: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await _measure(label, extra_series, requests, str(Path(tmp) / "bench.db"))


async def _measure(label: str, extra_series: int, requests: int, db: str) -> None:
    app = create_app(load_settings(None, {}, db=db), background=False)
    registry = app[REGISTRY]
    if extra_series:
        gauge = Gauge("bench_series", "Synthetic labelled series.", ["series"], registry=registry)
        for i in range(extra_series):
            gauge.labels(series=f"s{i:05d}").set(i)
    series = sum(len(m.samples) for m in registry.collect())
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        baseline = time_calls(lambda: generate_latest(registry), requests)
        scrapes, size = await time_scrapes(f"http://127.0.0.1:{port}/metrics", requests)
    finally:
        await runner.cleanup()
    print(f"-- {label}: {series} samples, {size} bytes per scrape")
    print(row("generate_latest() (baseline)", baseline))
    overhead = statistics.median(scrapes) - statistics.median(baseline)
    print(row("GET /metrics over loopback", scrapes, f"(+{overhead * 1000:.2f} ms vs baseline)"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--series", type=int, default=10_000)
    args = parser.parse_args()
    await measure("default registry", 0, args.requests)
    await measure(f"with {args.series} label series", args.series, max(20, args.requests // 4))


if __name__ == "__main__":
    asyncio.run(main())
