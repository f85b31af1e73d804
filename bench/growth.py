"""Benchmark: webhook ingestion as the store grows, from empty to --to alerts (issue 35).

    .venv/bin/python -m bench.growth [--to 10000000] [--step 1000000] [--seconds 5]
                                     [--rounds 2] [--fingerprints hashed|sequential]
                                     [--store postgresql [--replicas 2]]

At each size (0, step, 2 x step, ... --to) the receiver (`alertbridge serve`, durable SQLite)
is started on the store and loaded with 100-alert notifications of new alerts for --seconds,
--rounds times, interleaved with the bench's ceiling (a bare aiohttp handler that parses the
body and answers 200, bench.ingest) measured beside it; then stopped, and the store grown to
the next size by direct inserts of alerts shaped as the webhook stores them (one event each,
a label set of their own, the fingerprint a hash of it as Alertmanager makes it: what a
production history looks like; --fingerprints sequential for the old shape). --store
postgresql: the same on a PostgreSQL cluster of the bench's own (tests.pg, durable), grown by
SQL; --replicas 2 splits the load between two servers on it. (--fingerprints applies to
SQLite; PostgreSQL's are hashed.)

Prints, per size: alerts/s (median of the rounds), the share of the ceiling, and the share of
the rate on the empty store: the curve issue 35 asks to keep flat (>= 90 % at 10,000,000).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


#: grow() in PostgreSQL's words: the same alerts (labels, fingerprint a hash of them, texts),
#: made by the server itself, then one event each.
_PG_GROW = """
INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity, labels,
                    annotations, generator_url, source, first_received_at, last_received_at,
                    receive_count, updated_at)
SELECT substr(encode(sha256(convert_to(labels, 'UTF8')), 'hex'), 1, 16), at, at + 60000000000,
       'resolved', 'high_cpu', 'warning', labels,
       '{"summary": "CPU usage is high", "description": "CPU is 91%"}', '', 'alertmanager',
       at, at, 1, at
FROM (
  SELECT $3::bigint - (10000000000 - i) * 1000 AS at,
         '{"alertname": "high_cpu", "instance": "h' || i || ':9100", "job": "app",'
         || ' "metric": "system.cpu.percent", "severity": "warning"}' AS labels
  FROM generate_series($1::bigint, $1::bigint + $2::bigint - 1) AS i
) AS g
"""


def grow_pg(url: str, password: str, start_at: int, rows: int) -> None:
    """grow() on PostgreSQL: `rows` alerts as grow() makes them, their events and their label
    index, then ANALYZE (what autovacuum would have done by then)."""
    import asyncpg

    from bridge.store.postgres import schema

    async def build() -> None:
        conn = await asyncpg.connect(url, password=password)
        try:
            await schema.migrate(conn)
            if rows:
                after = await conn.fetchval("SELECT coalesce(max(id), 0) FROM alerts")
                await conn.execute(_PG_GROW, start_at, rows, now_ns())
                await conn.execute(
                    "INSERT INTO events (alert_id, at, kind, actor, detail) SELECT id,"
                    " starts_at, 'fired', 'alertmanager', '' FROM alerts WHERE id > $1", after
                )  # fmt: skip
                if hasattr(schema, "label_index_build"):  # (a baseline before issue 35)
                    await conn.execute(schema.label_index_build(after))
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()

    asyncio.run(build())


def stored_rows(db: Path | str, password: str = "") -> int:
    if isinstance(db, str):
        import asyncpg

        async def count() -> int:
            conn = await asyncpg.connect(db, password=password)
            try:
                return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM alerts"))
            finally:
                await conn.close()

        return asyncio.run(count())
    import sqlite3

    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT coalesce(max(id), 0) FROM alerts").fetchone()[0])


async def measure(args: argparse.Namespace, db: Path | str, env: dict[str, str],
                  ceiling_port: int) -> tuple[list[int], list[int]]:  # fmt: skip
    """(receiver's alerts/s, ceiling's alerts/s) per round, interleaved; with --replicas 2,
    the receiver's load split between two servers on the store (each its own clients)."""
    ports = [free_port() for _ in range(args.replicas)]
    servers = [start(ingest._argv("receiver", port, db), port, env) for port in ports]
    ours, bare = [], []
    clients = max(1, args.clients // len(ports))
    try:
        for _ in range(args.rounds):
            rate, _ = await load(ceiling_port, ALERTS, args.clients, args.seconds)
            bare.append(rate * ALERTS)
            done = await asyncio.gather(*(load(port, ALERTS, clients, args.seconds)
                                          for port in ports))  # fmt: skip
            ours.append(sum(r for r, _ in done) * ALERTS)
    finally:
        for server in servers:
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
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1)
    args = parser.parse_args()
    if args.replicas > 1 and args.store != "postgresql":
        parser.error("--replicas 2 needs --store postgresql (SQLite is one process's store)")
    ingest.FINGERPRINTS["mode"] = args.fingerprints
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env["ALERTBRIDGE_WEBHOOK_TOKEN"] = TOKEN
    env["ALERTBRIDGE_ALERTMANAGER_URL"] = "http://127.0.0.1:9"  # no embedded evaluator
    ceiling_port = free_port()
    ceiling = start(ingest._argv("ceiling", ceiling_port, ""), ceiling_port, env)
    where = f"{args.store}, {args.replicas} replica{'s' if args.replicas > 1 else ''}"
    print(f"-- {where}: 100-alert notifications of new alerts ({args.fingerprints} fingerprints),"
          f" {args.clients} clients, {args.rounds} rounds of {args.seconds:g}s at each size;"
          f" loopback {LOOPBACK}, {os.cpu_count()} cores")  # fmt: skip
    first: float | None = None
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp,
            contextlib.ExitStack() as stack,
        ):
            db: Path | str = Path(tmp) / "alerts.db"
            password = ""
            if args.store == "postgresql":
                from tests.pg import cluster

                pg = stack.enter_context(cluster())
                db, password = pg.new_database(), pg.password_file.read_text().strip()
                env["ALERTBRIDGE_STORE_PASSWORD_FILE"] = str(pg.password_file)

            def grown_by(start_at: int, rows: int) -> None:
                if isinstance(db, str):
                    grow_pg(db, password, start_at, rows)
                else:
                    grow(db, start_at, rows, args.fingerprints == "hashed")

            grown_by(0, 0)  # the schema
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
                grown_by(grown, args.step)
                grown += args.step
                stored = stored_rows(db, password)  # (the rounds' own alerts included)
                print(f"   grown by {args.step:,} in {time.monotonic() - began:.0f}s", flush=True)
    finally:
        ceiling.terminate()
        ceiling.wait(30)
    print(
        "target (issue 35): at 10,000,000 stored, >= 90 % of the empty store's rate and"
        " >= 30 % of the ceiling (SQLite), >= 15 % (PostgreSQL)"
    )


if __name__ == "__main__":
    main()
