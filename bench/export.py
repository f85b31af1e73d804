"""Benchmark: exporting 1,000,000 stored alerts to each format; time and peak RSS.

    .venv/bin/python -m bench.export [--rows 1000000]

Each export runs in its own process so its peak RSS (ru_maxrss) is its own. The baseline, in
the same run and also in its own process, is reading every row through the same keyset batches
without writing anything: what the export adds on top of the reads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ingest import build_store


def child(db: str, fmt: str, out: str) -> None:
    """Runs in the measured process: one export (or the read-only baseline), then its figures."""
    import resource

    from bridge.export import Anonymizer, _batches, export_alerts
    from bridge.store import Store

    store = Store(db)
    began = time.perf_counter()
    if fmt == "read-only":
        records = sum(len(batch) for batch in _batches(store, None, None, 10_000))
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
        for fmt in ("read-only", "parquet", "csv", "json"):
            out = Path(tmp) / f"out.{fmt}"
            proc = subprocess.run(
                [sys.executable, "-m", "bench.export", "--child", str(db), fmt, str(out)],
                capture_output=True, text=True, check=True, timeout=600,
            )  # fmt: skip
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            label = "baseline: read only" if fmt == "read-only" else fmt
            written = r["bytes"] / 2**20
            print(
                f"{label:<20} {r['records']:>8} rows  {r['seconds']:6.2f} s  "
                f"peak RSS {r['rss_mib']:6.0f} MiB  {written:7.1f} MiB written"
            )


if __name__ == "__main__":
    main()
