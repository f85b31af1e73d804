"""Benchmark: inserting new episodes in multi-row statements vs. executemany, with a busy GIL.

    .venv/bin/python -m bench.insert [--rows 1500] [--seconds 3]

The writer thread inserts new episodes while the event loop thread runs Python. The sqlite3
module lets go of the GIL around each statement's step and takes it back after it, so the
number of statements decides how often the writer waits for the other thread. Each way (the
baseline `executemany` of one-row inserts, and `_insert_new` of bridge.ingest.episodes, up to
INSERT_ROWS rows a statement) inserts batches of --rows rows into a fresh store, one
transaction per batch, for --seconds each:
- alone: only the writer runs (what each way costs in CPU);
- contended: beside a thread running pure Python, as the event loop does while it parses.
synchronous=OFF: the fsync is the same either way and would only add noise.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bridge.core.alerts import ReceivedAlert
from bridge.core.times import now_ns
from bridge.store.sqlite.ingest import _INSERT, INSERT_ROWS, Row, _insert_new, _row
from bridge.store.sqlite.schema import connect, migrate

MAX_BATCHES = 10_000  # per measurement, beside the time bound
_numbers = itertools.count(1)


def batch(rows: int) -> tuple[list[ReceivedAlert], list[Row]]:
    """`rows` new firing alerts and their rows, as the webhook encodes them."""
    alerts = []
    for _ in range(rows):
        n = next(_numbers)
        labels = {"alertname": "high_cpu", "instance": f"i{n}:9100", "job": "app",
                  "metric": "system.cpu.percent", "severity": "warning"}  # fmt: skip
        annotations = {"description": "CPU is 91%", "summary": "CPU usage is high"}
        alerts.append(ReceivedAlert(f"{n:016x}", "firing", now_ns(), None, labels, annotations, ""))
    received_at = now_ns()
    return alerts, [_row(a, received_at, "alertmanager") for a in alerts]


def busy(stop: threading.Event) -> None:
    """Pure Python with no system call, so it lets go of the GIL only when made to."""
    total = 0
    while not stop.is_set():
        for i in range(1000):
            total += i


def measure(
    insert: Callable[..., object],
    batches: list[tuple[list[ReceivedAlert], list[Row]]],
    seconds: float,
    contended: bool,
    tmp: Path,
) -> tuple[float, float]:
    """Rows per second and the writer thread's CPU microseconds per row, into a fresh store."""
    conn = connect(tmp / f"insert-{next(_numbers)}.db")
    migrate(conn)
    conn.execute("PRAGMA synchronous = OFF")
    stop = threading.Event()
    other = threading.Thread(target=busy, args=(stop,), daemon=True)
    if contended:
        other.start()
    done, began, cpu_began = 0, time.perf_counter(), time.thread_time()
    deadline = time.monotonic() + seconds
    try:
        for alerts, encoded in batches:
            conn.execute("BEGIN")
            insert(conn, alerts, encoded)
            conn.execute("COMMIT")
            done += len(encoded)
            if time.monotonic() > deadline:
                break
    finally:
        stop.set()
        if contended:
            other.join()
        elapsed, cpu = time.perf_counter() - began, time.thread_time() - cpu_began
        conn.close()
    return done / elapsed, cpu / done * 1e6


def executemany(conn: object, alerts: list[ReceivedAlert], rows: list[Row]) -> None:
    conn.executemany(_INSERT, rows)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1500, help="rows per transaction")
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    args = parser.parse_args()
    print(f"-- {args.rows} new episodes a transaction, {args.seconds:g}s each, "
          f"_insert_new: up to {INSERT_ROWS} rows a statement")  # fmt: skip
    # Every measurement inserts the same batches into its own store, until time or batches end.
    batches = [
        batch(args.rows)
        for _ in range(min(MAX_BATCHES, int(args.seconds * 150_000 / args.rows) + 2))
    ]
    with tempfile.TemporaryDirectory(prefix="bench-insert-") as tmp:
        for contended in (False, True):
            where = "beside a busy Python thread" if contended else "alone"
            figures = {}
            for name, insert in (("executemany", executemany), ("_insert_new", _insert_new)):
                rate, cpu = measure(insert, batches, args.seconds, contended, Path(tmp))
                figures[name] = rate
                print(f"{where:<28} {name:<12} {rate:>9.0f} rows/s  writer CPU {cpu:6.1f} us/row")
            ratio = figures["_insert_new"] / figures["executemany"]
            print(f"{where:<28} _insert_new / executemany: {ratio:.1f}x")


if __name__ == "__main__":
    main()
