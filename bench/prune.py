"""Benchmark: the webhook while retention deletes a million episodes (issue 35, item 4).

    .venv/bin/python -m bench.prune [--rows 1000000] [--clients 4]

Builds a SQLite store of --rows episodes that ended more than the retention (90 days) ago
(bench.ingest.build_store: 1% firing, which retention keeps; one event each; the label index
where the bridge has one), starts `alertbridge serve` on it, whose retention task starts
deleting them at once, and sends one-alert notifications from --clients connections until the
old episodes are gone (read from the database file: the lowest id left); then as long again
with nothing to delete. Prints the webhook's p50 and p99 in both phases, the prune's duration
and rate. Run it beside the commit before a change with bench.ab --same-bench. Asserts
nothing; issue 35's target: p99 during the prune at most 2x idle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import TOKEN, build_store, load, pct, start
from bridge.core.times import NS
from tests.support import LOOPBACK, free_port

DAY = 86400 * NS


def oldest_left(db: Path, old: int) -> int:
    """How many of the first `old` ids (the old episodes) are left, resolved, to delete."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT 1 FROM alerts WHERE status = 'resolved' AND id <= ?"
            " LIMIT 1000)",
            (old,),
        ).fetchone()
    return int(row[0])


async def measure(port: int, clients: int, db: Path, rows: int, limit: float) -> None:
    began = time.monotonic()
    during: list[float] = []
    rounds = 0
    while oldest_left(db, rows) and time.monotonic() - began < limit:
        _, latencies = await load(port, 1, clients, 2.0)
        during += latencies
        rounds += 1
    took = time.monotonic() - began
    if oldest_left(db, rows):
        print(f"the prune was not done after {limit:.0f} s: stopped")
    _, idle = await load(port, 1, clients, max(4.0, min(took, 30.0)))
    ratio = pct(during, 0.99) / pct(idle, 0.99) if during else float("nan")
    print(f"prune of {rows:,} episodes: {took:.1f} s ({rows / took:,.0f} episodes/s, webhook load"
          f" on); webhook during p50 {pct(during, 0.5):.2f} ms p99 {pct(during, 0.99):.2f} ms"
          f" ({len(during)} notifications); idle after p50 {pct(idle, 0.5):.2f} ms p99"
          f" {pct(idle, 0.99):.2f} ms ({len(idle)}); p99 during {ratio:.1f}x idle")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--limit", type=float, default=600.0, help="seconds of prune at most")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as name:
        db = Path(name) / "alerts.db"
        began = time.monotonic()
        build_store(db, args.rows, ago=100 * DAY)
        print(f"-- {args.rows:,} episodes ended 100 days ago (retention 90), built in"
              f" {time.monotonic() - began:.0f}s; {args.clients} clients of one-alert"
              " notifications")  # fmt: skip
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
        env.update(
            ALERTBRIDGE_WEBHOOK_TOKEN=TOKEN, ALERTBRIDGE_ALERTMANAGER_URL="http://127.0.0.1:9"
        )
        argv = [sys.executable, "-m", "bridge", "serve", "--host", LOOPBACK, "--port", str(port),
                "--db", str(db)]  # fmt: skip
        server = start(argv, port, env)
        try:
            asyncio.run(measure(port, args.clients, db, args.rows, args.limit))
        finally:
            server.terminate()
            server.wait(30)
    print("target (issue 35): webhook p99 during the prune <= 2x idle")


if __name__ == "__main__":
    main()
