"""Benchmark: exporting 1,000,000 stored alerts to each format; time and peak RSS.

    .venv/bin/python -m bench.export [--rows 1000000]

Each export runs in its own process so its peak RSS (ru_maxrss) is its own. The baselines, in
the same run and also in their own processes, read every row without writing anything, the way
each path reads: sqlite3 keyset batches (CSV, JSON) and ADBC Arrow batches (Parquet): what an
export adds on top of its reads.

The store is bench/ingest.py's: 500 label sets, so fingerprints and labels repeat as they do
in Alertmanager. Then the worst case for the columnar path: the same store with every alert
its own fingerprint and its own annotation text (nothing repeats), Parquet only.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import build_store


def child(db: str, fmt: str, out: str) -> None:
    """Runs in the measured process: one export (or the read-only baseline), then its figures."""
    import resource

    from bridge.columnar import read_batches
    from bridge.export import COLUMNAR_BATCH, Anonymizer, _batches, export_alerts
    from bridge.store import Store

    store = Store(db)
    began = time.perf_counter()
    if fmt == "read-only":
        records = sum(len(batch) for batch in _batches(store, None, None, 10_000))
        size = 0
    elif fmt == "read-only-arrow":
        records = sum(b.num_rows for b in read_batches(db, None, None, COLUMNAR_BATCH))
        size = 0
    else:
        result = export_alerts(store, Path(out), fmt, anonymizer=Anonymizer(b"bench-key"))
        records, size = result.records, result.bytes
    elapsed = time.perf_counter() - began
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"records": records, "seconds": elapsed, "rss_mib": rss, "bytes": size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        db = Path(tmp) / "alerts.db"
        began = time.monotonic()
        build_store(db, args.rows)
        print(f"-- {args.rows} alerts built in {time.monotonic() - began:.1f}s; anonymised exports")
        for fmt in ("read-only", "read-only-arrow", "parquet", "csv", "json"):
            run(db, fmt, Path(tmp) / f"out.{fmt}")
        conn = sqlite3.connect(db)
        conn.execute(
            "UPDATE alerts SET fingerprint = printf('%016x', id), annotations ="
            " json_object('summary', 'alert ' || id || ' on ' || (labels ->> 'instance'))"
        )
        conn.commit()
        conn.close()
        print("-- worst case: every alert its own fingerprint and annotation text")
        for fmt in ("read-only-arrow", "parquet"):
            run(db, fmt, Path(tmp) / f"worst.{fmt}")


def run(db: Path, fmt: str, out: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.export", "--child", str(db), fmt, str(out)],
        capture_output=True, text=True, check=True, timeout=600,
    )  # fmt: skip
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    label = {"read-only": "baseline: sqlite3", "read-only-arrow": "baseline: ADBC"}.get(fmt, fmt)
    written = r["bytes"] / 2**20
    print(
        f"{label:<20} {r['records']:>8} rows  {r['seconds']:6.2f} s  "
        f"peak RSS {r['rss_mib']:6.0f} MiB  {written:7.1f} MiB written"
    )


if __name__ == "__main__":
    main()
