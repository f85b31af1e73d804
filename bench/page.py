"""Benchmark: the operators' page over 1,000,000 stored alerts, rendered by a real server.

    .venv/bin/python -m bench.page [--rows 1000000] [--requests 200]

Builds a store of --rows alerts (bench.ingest.build_store: 1% firing, 500 label sets), starts
`alertbridge serve` on it, signs in, and times GET /alerts for the pages an operator opens: the
default (what needs attention first), firing only, a label matcher, a free-text search, grouped
by rule, the live refresh of the rows, and one alert's page; --requests each, one at a time,
client-side wall time (the request's whole round trip). Beside each: the same listing through
the JSON API, the same server, the same run (the page's cost over the store's). Target: the
list renders in at most 50 ms (p99). Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from bench.ingest import TOKEN, build_store, start
from tests.support import LOOPBACK, free_port

PAGES = [
    ("attention (default)", "/alerts", "/api/v1/alerts?sort=attention"),
    ("firing only", "/alerts?status=firing", "/api/v1/alerts?status=firing&sort=attention"),
    ("matcher team=team1", '/alerts?filter=team%3D%22team1%22',
     '/api/v1/alerts?filter=team%3D%22team1%22&sort=attention'),
    ("search 'rule_3 on'", "/alerts?q=rule_3+on", "/api/v1/alerts?q=rule_3+on&sort=attention"),
    ("grouped by rule", "/alerts?group=rule", "/api/v1/alerts?sort=attention"),
    ("live refresh of the rows", "/alerts/rows?status=firing",
     "/api/v1/alerts?status=firing&sort=attention"),
    ("one alert's page", "/alerts/500000", "/api/v1/alerts/500000"),
]  # fmt: skip


def timed(opener: urllib.request.OpenerDirector, url: str, count: int,
          headers: dict[str, str] | None = None) -> list[float]:  # fmt: skip
    out = []
    for _ in range(count):
        request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http://
        began = time.perf_counter()
        with opener.open(request, timeout=30) as response:
            response.read()
            if response.status != 200:
                raise SystemExit(f"{url}: HTTP {response.status}")
        out.append(time.perf_counter() - began)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-page-") as name:
        db = Path(name) / "alerts.db"
        began = time.monotonic()
        build_store(db, args.rows)
        print(f"-- {args.rows} alerts stored in {time.monotonic() - began:.0f}s;"
              f" {args.requests} requests a page, one at a time")  # fmt: skip
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
        env.update(ALERTBRIDGE_WEBHOOK_TOKEN=TOKEN, ALERTBRIDGE_API_TOKEN="bench-api")
        argv = [sys.executable, "-m", "bridge", "serve", "--host", LOOPBACK, "--port", str(port),
                "--db", str(db)]  # fmt: skip
        server = start(argv, port, env)
        try:
            base = f"http://{LOOPBACK}:{port}"
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            form = urllib.parse.urlencode({"token": "bench-api", "name": "bench"}).encode()
            opener.open(f"{base}/signin", form, timeout=30).read()
            api = {"Authorization": "Bearer bench-api"}
            sizes = {}
            for asset in ("/static/app.js", "/static/app.css"):
                with opener.open(base + asset, timeout=30) as response:
                    sizes[asset] = len(response.read())
            print(
                f"assets: {', '.join(f'{k} {v:,} B' for k, v in sizes.items())};"
                f" {sum(sizes.values()):,} B in all, uncompressed (target < 50 KB);"
                " nothing else is loaded (the Content-Security-Policy allows this origin only)"
            )
            for label, page, same in PAGES:
                timed(opener, base + page, 5)  # warm the caches
                html = timed(opener, base + page, args.requests)
                json_ = timed(opener, base + same, args.requests, api)
                with opener.open(base + page, timeout=30) as response:
                    rows = len(re.findall(rb"<tr class=\"sev-", response.read()))
                print(f"{label:26s} page p50 {pct(html, 0.5):6.2f} ms,"
                      f" p99 {pct(html, 0.99):6.2f} ms ({rows} rows) | JSON API p50"
                      f" {pct(json_, 0.5):6.2f} ms,"
                      f" p99 {pct(json_, 0.99):6.2f} ms")  # fmt: skip
        finally:
            server.terminate()
            server.wait(30)
    print("target: the list renders in at most 50 ms (p99)")


if __name__ == "__main__":
    main()
