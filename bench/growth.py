"""Benchmark: webhook ingestion as the store grows, from empty to --to alerts (issue 35).

    .venv/bin/python -m bench.growth [--to 10000000] [--step 1000000] [--seconds 5]
                                     [--rounds 2] [--fingerprints hashed|sequential]

At each size (0, step, 2 x step, ... --to) the receiver (`alertbridge serve`, durable SQLite)
is started on the store and loaded with 100-alert notifications of new alerts for --seconds,
--rounds times, interleaved with the bench's ceiling (a bare aiohttp handler that parses the
body and answers 200, bench.ingest) measured beside it; then stopped, and the store grown to
the next size by direct inserts of alerts shaped as the webhook stores them (one event each,
a label set of their own, the fingerprint a hash of it as Alertmanager makes it: what a
production history looks like; --fingerprints sequential for the old shape).

Prints, per size: alerts/s (median of the rounds), the share of the ceiling, and the share of
the rate on the empty store: the curve issue 35 asks to keep flat (>= 90 % at 10,000,000).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import ingest
from bench.ingest import TOKEN, load, start
from bridge.core.times import NS, now_ns
from tests.support import LOOPBACK, free_port

ALERTS = 100  # alerts per notification (Alertmanager groups)


def grow(path: Path, start_at: int, rows: int, hashed: bool) -> None:
    """Add `rows` resolved alerts (ids start_at+1...) by direct inserts, synchronous OFF."""
    from bridge.store.sqlite.schema import connect, migrate

    conn = connect(path)
    migrate(conn)
    conn.execute("PRAGMA synchronous = OFF")  # building only; measured work runs with FULL
    now = now_ns()
    conn.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    for i in range(start_at, start_at + rows):
        labels = {"alertname": "high_cpu", "instance": f"h{i}:9100", "job": "app",
                  "metric": "system.cpu.percent", "severity": "warning"}  # fmt: skip
        text = json.dumps(labels, sort_keys=True)
        fp = hashlib.sha256(text.encode()).hexdigest()[:16] if hashed else f"{(1 << 40) + i:016x}"
        at = now - (10**10 - i) * 1000  # microseconds apart, in the past
        batch.append((fp, at, at + 60 * NS, "resolved", "high_cpu", "warning", text,
                      '{"summary": "CPU usage is high", "description": "CPU is 91%"}', "",
                      "alertmanager", at, at, 1, at))  # fmt: skip
        if len(batch) == 50_000:
            ingest._insert(conn, batch)
            batch = []
    ingest._insert(conn, batch)
    ingest.finish_build(conn, start_at)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def stored_rows(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM alerts").fetchone()[0])


async def measure(args: argparse.Namespace, db: Path, env: dict[str, str],
                  ceiling_port: int) -> tuple[list[int], list[int]]:  # fmt: skip
    """(receiver's alerts/s, ceiling's alerts/s) per round, interleaved."""
    port = free_port()
    server = start(ingest._argv("receiver", port, db), port, env)
    ours, bare = [], []
    try:
        for _ in range(args.rounds):
            rate, _ = await load(ceiling_port, ALERTS, args.clients, args.seconds)
            bare.append(rate * ALERTS)
            rate, _ = await load(port, ALERTS, args.clients, args.seconds)
            ours.append(rate * ALERTS)
    finally:
        server.terminate()
        server.wait(30)
    return ours, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--to", type=int, default=10_000_000)
    parser.add_argument("--step", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--fingerprints", choices=("hashed", "sequential"), default="hashed")
    args = parser.parse_args()
    ingest.FINGERPRINTS["mode"] = args.fingerprints
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env["ALERTBRIDGE_WEBHOOK_TOKEN"] = TOKEN
    env["ALERTBRIDGE_ALERTMANAGER_URL"] = "http://127.0.0.1:9"  # no embedded evaluator
    ceiling_port = free_port()
    ceiling = start(ingest._argv("ceiling", ceiling_port, ""), ceiling_port, env)
    print(f"-- 100-alert notifications of new alerts ({args.fingerprints} fingerprints),"
          f" {args.clients} clients, {args.rounds} rounds of {args.seconds:g}s at each size;"
          f" loopback {LOOPBACK}, {os.cpu_count()} cores")  # fmt: skip
    first: float | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp:
            db = Path(tmp) / "alerts.db"
            grow(db, 0, 0, True)  # the schema
            stored, grown = 0, 0
            while True:
                ours, bare = asyncio.run(measure(args, db, env, ceiling_port))
                rate = statistics.median(ours)
                share = statistics.median(o / b for o, b in zip(ours, bare, strict=True))
                first = rate if first is None else first
                print(f"{stored:>11,} stored: {rate:>8,.0f} alerts/s ({share:.0%} of the ceiling,"
                      f" {rate / first:.0%} of the empty store's; rounds"
                      f" {', '.join(f'{o:,}' for o in ours)}; ceiling"
                      f" {', '.join(f'{b:,}' for b in bare)})", flush=True)  # fmt: skip
                if stored >= args.to:
                    break
                began = time.monotonic()
                grow(db, grown, args.step, args.fingerprints == "hashed")
                grown += args.step
                stored = stored_rows(db)  # (the rounds' own alerts included)
                print(f"   grown by {args.step:,} in {time.monotonic() - began:.0f}s", flush=True)
    finally:
        ceiling.terminate()
        ceiling.wait(30)
    print(
        "target (issue 35): at 10,000,000 stored, >= 90 % of the empty store's rate and"
        " >= 30 % of the ceiling (SQLite)"
    )


if __name__ == "__main__":
    main()
