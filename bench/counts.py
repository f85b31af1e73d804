"""Benchmark: the alert counts behind every scrape (`/metrics`) and `/api/v1/status`, on
PostgreSQL, at size, beside the query they replaced.

    .venv/bin/python -m bench.counts [--rows 1000000] [--firing 0.01] [--reads 30]

Starts its own PostgreSQL (tests.pg: initdb on a free loopback port, default durability),
migrates a store into it, and inserts --rows alerts (--firing of them firing, four
severities, a tenth of the firing ones acknowledged) in a few set-based statements, so that
the resolved counts are kept by the schema's statement-level triggers as ingestion keeps them.
Then, after ANALYZE, --reads calls of the store's `counts()` (the firing alerts by their
index, the resolved ones from the per-backend count rows) beside as many runs of the query it
replaced (one GROUP BY over every alert), alternately; the medians and the slowest of each,
and whether both give the same figures. Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from bridge.store import AlertCounts, open_store
from tests.pg import Cluster, cluster

#: The counts as they were read before migration 5 of the PostgreSQL schema: every alert.
GROUP_EVERY_ALERT = (
    "SELECT CASE WHEN status = 'resolved' THEN 'resolved' WHEN acked_at IS NULL THEN 'firing'"
    " ELSE 'acknowledged' END, severity,"
    " CASE am_state WHEN 'suppressed' THEN 'suppressed' ELSE 'active' END,"
    " status = 'firing', count(*) FROM alerts GROUP BY 1, 2, 3, 4"
)
CHUNK = 250_000


#: The alerts from n = first to last: one firing in `every`, a tenth of those acknowledged.
INSERT = """
INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity, labels,
                    annotations, generator_url, source, first_received_at, last_received_at,
                    receive_count, acked_at, acked_by, updated_at)
SELECT lpad(to_hex(n), 16, '0'), n, CASE WHEN n %% %(every)d = 0 THEN NULL ELSE n + 1 END,
       CASE WHEN n %% %(every)d = 0 THEN 'firing' ELSE 'resolved' END, 'rule_' || (n %% 10),
       (ARRAY['info', 'warning', 'error', 'critical'])[1 + n %% 4],
       '{"alertname": "rule_' || (n %% 10) || '"}', '{}', '', 'alertmanager', n, n, 1,
       CASE WHEN n %% (%(every)d * 10) = 0 THEN n END,
       CASE WHEN n %% (%(every)d * 10) = 0 THEN 'bench' END, n
FROM generate_series(%(first)d, %(last)d) AS n
"""


def fill(pg: Cluster, database: str, rows: int, firing: float) -> float:
    """Insert the alerts, CHUNK a statement; seconds taken."""
    every = max(1, round(1 / firing)) if firing > 0 else rows + 1
    began = time.monotonic()
    for start in range(0, rows, CHUNK):
        bounds = {"every": every, "first": start + 1, "last": min(rows, start + CHUNK)}
        pg.psql(INSERT % bounds, database)  # (integers only)
    pg.psql("ANALYZE alerts", database)
    return time.monotonic() - began


def flatten(counts: AlertCounts) -> dict[tuple[str, str], int]:
    return {k: v for k, v in counts.by_state.items() if v}


async def measure(url: str, reads: int) -> dict[str, Any]:
    store = open_store(url, read_only=True)
    await store.start()
    try:
        new: list[float] = []
        old: list[float] = []
        counts = await store.counts()  # (the pool's connections opened, statements prepared)
        pool: Any = store.pool  # type: ignore[attr-defined]
        async with pool.acquire() as conn:
            await conn.fetch(GROUP_EVERY_ALERT)
            for _ in range(reads):
                began = time.perf_counter()
                counts = await store.counts()
                new.append(time.perf_counter() - began)
                began = time.perf_counter()
                rows = await conn.fetch(GROUP_EVERY_ALERT)
                old.append(time.perf_counter() - began)
        grouped: dict[tuple[str, str], int] = {}
        for state, severity, _, _, n in rows:
            grouped[(state, severity)] = grouped.get((state, severity), 0) + n
        return {"new": new, "old": old, "same": flatten(counts) == grouped,
                "total": sum(grouped.values())}  # fmt: skip
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--firing", type=float, default=0.01)
    parser.add_argument("--reads", type=int, default=30)
    args = parser.parse_args()
    with cluster() as pg:
        os.environ["ALERTBRIDGE_STORE_PASSWORD_FILE"] = str(pg.password_file)
        url = pg.new_database()
        database = url.rsplit("/", 1)[1]

        async def migrate() -> None:
            store = open_store(url)
            await store.start()
            await store.close()

        asyncio.run(migrate())
        took = fill(pg, database, args.rows, args.firing)
        firing = pg.psql("SELECT count(*) FROM alerts WHERE status = 'firing'", database)
        print(f"-- {args.rows:,} alerts ({int(firing):,} firing) inserted in {took:.1f} s;"
              f" {args.reads} reads of each")  # fmt: skip
        r = asyncio.run(measure(url, args.reads))
    for name, label in (("new", "counts() (firing by index, resolved by count rows)"),
                        ("old", "baseline: one GROUP BY over every alert")):  # fmt: skip
        times = r[name]
        print(f"{label}: median {statistics.median(times) * 1000:.1f} ms,"
              f" slowest {max(times) * 1000:.1f} ms")  # fmt: skip
    ratio = statistics.median(r["old"]) / statistics.median(r["new"])
    print(f"counts() {ratio:.0f}x faster than the baseline; the same figures:"
          f" {'yes' if r['same'] else 'NO'} ({r['total']:,} alerts counted)")  # fmt: skip


if __name__ == "__main__":
    main()
