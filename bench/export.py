"""Benchmark: exporting 1,000,000 stored alerts and 5,000,000 events; time and peak RSS.

    .venv/bin/python -m bench.export [--rows 1000000] [--events 5000000]

Each export runs in its own process, so that its peak RSS (ru_maxrss) is its own, three
times (the median time and the largest RSS are shown): alerts and events in each format,
anonymised (every sensitive value of the store scrubbed from every text) and not, and the
baseline of reading the same rows through ADBC without writing anything (what an export
adds on top of its reads).

The store is bench/ingest.py's: 500 label sets, so fingerprints and labels repeat as they do
in Alertmanager. Its events: one "fired" per alert, then resolutions, acknowledgements with
comments, notes naming hosts, assignments and silences, to --events in all. Then the worst
case for the columnar path: every alert its own fingerprint and annotation text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import build_store

REPEATS = 3  # runs of each case: its median time is shown
TARGETS = {"csv": 5.0, "json": 6.0, "parquet": 3.0, "events": 10.0, "rss_mib": 300.0}


def child(db: str, what: str, fmt: str, anonymise: str, out: str) -> None:
    """Runs in the measured process: one export (or the read-only baseline), then its figures."""
    import resource

    from bridge.export.history import BATCH, anonymizer_for, export_history
    from bridge.export.output import Destination
    from bridge.store import open_store

    store = open_store(db, read_only=True)
    began = time.perf_counter()
    if fmt == "read-only":
        rows = store.alert_batches if what == "alerts" else store.event_batches
        records = sum(b.num_rows for b in rows(None, None, BATCH[what]))
        size = 0
    else:
        anonymizer = asyncio.run(anonymizer_for(store, b"bench")) if anonymise == "yes" else None
        result = export_history(store, Destination.of(out, db), what, fmt, anonymizer=anonymizer)
        records, size = result.records, result.bytes or 0
    elapsed = time.perf_counter() - began
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": records, "seconds": elapsed, "rss_mib": rss, "bytes": size}))


def add_events(db: Path, total: int) -> None:
    """Events up to `total`, beside the one "fired" per alert build_store writes."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    alerts = conn.execute("SELECT max(id) FROM alerts").fetchone()[0]
    have = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    # Kinds in turn; texts repeat as people's do (a few hundred comments, notes naming hosts).
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)"
        " INSERT INTO events (alert_id, at, kind, actor, detail) SELECT 1 + i % ?2,"
        " 1795428000000000000 + i * 1000000,"
        " CASE i % 10 WHEN 0 THEN 'acknowledged' WHEN 1 THEN 'note' WHEN 2 THEN 'assigned'"
        " WHEN 3 THEN 'silenced' ELSE 'resolved' END,"
        " CASE i % 10 WHEN 4 THEN 'alertmanager' WHEN 5 THEN 'alertmanager'"
        " ELSE 'person-' || (i % 40) END,"
        " CASE i % 10 WHEN 0 THEN 'on it, see i' || (i % 500) || ':9100'"
        " WHEN 1 THEN 'checked i' || (i % 500) || ':9100 and team' || (i % 4)"
        " WHEN 2 THEN 'person-' || (i % 40) WHEN 3 THEN 'silence-' || i ELSE '' END FROM n",
        (total - have, alerts),
    )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        db = Path(tmp) / "alerts.db"
        began = time.monotonic()
        build_store(db, args.rows)
        add_events(db, args.events)
        print(f"-- {args.rows} alerts and {args.events} events built in "
              f"{time.monotonic() - began:.1f}s")  # fmt: skip
        times: dict[tuple[str, str, str], float] = {}
        for what in ("alerts", "events"):
            run(db, what, "read-only", "no", Path(tmp) / "x", times)
            for fmt in ("parquet", "csv", "json"):
                for anonymise in ("no", "yes"):
                    run(db, what, fmt, anonymise, Path(tmp) / f"out.{fmt}", times)
        for what in ("alerts", "events"):
            for fmt in ("parquet", "csv", "json"):
                ratio = times[(what, fmt, "yes")] / times[(what, fmt, "no")]
                print(f"{what} {fmt}: anonymised / not: {ratio:.2f}x (target <= 1.25x)")
        conn = sqlite3.connect(db)
        conn.execute(
            "UPDATE alerts SET fingerprint = printf('%016x', id), annotations ="
            " json_object('summary', 'alert ' || id || ' on ' || (labels ->> 'instance'))"
        )
        conn.commit()
        conn.close()
        print("-- worst case: every alert its own fingerprint and annotation text")
        run(db, "alerts", "read-only", "no", Path(tmp) / "x", times)
        run(db, "alerts", "parquet", "yes", Path(tmp) / "worst.parquet", times)


def run(
    db: Path, what: str, fmt: str, anonymise: str, out: Path,
    times: dict[tuple[str, str, str], float],
) -> None:  # fmt: skip
    runs = []
    for _ in range(REPEATS):
        proc = subprocess.run(
            [sys.executable, "-m", "bench.export", "--child", str(db), what, fmt, anonymise,
             str(out)],
            capture_output=True, text=True, check=True, timeout=900,
        )  # fmt: skip
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    # The median time (a 2-core machine writing hundreds of MiB is noisy), the largest RSS.
    r = sorted(runs, key=lambda one: one["seconds"])[len(runs) // 2]
    r["rss_mib"] = max(one["rss_mib"] for one in runs)
    times[(what, fmt, anonymise)] = r["seconds"]
    label = "baseline: ADBC read" if fmt == "read-only" else (
        f"{fmt}, {'anonymised' if anonymise == 'yes' else 'not anonymised'}")  # fmt: skip
    target = TARGETS["events"] if what == "events" else TARGETS.get(fmt)
    goal = f"  (target <= {target:g} s, {TARGETS['rss_mib']:g} MiB)" if target else ""
    print(
        f"{what:<7} {label:<28} {r['records']:>8} rows  {r['seconds']:6.2f} s  "
        f"peak RSS {r['rss_mib']:5.0f} MiB  {r['bytes'] / 2**20:7.1f} MiB written{goal}"
    )


if __name__ == "__main__":
    main()
