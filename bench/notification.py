"""Benchmark: one notification of a big group (default 10,000 alerts, what one group_by
group of a large fleet sends), time to 2xx and the server's peak memory, beside the bare
parse-and-200 ceiling on the same body in the same run.

    .venv/bin/python -m bench.notification [--alerts 10000] [--rounds 3]

The alerts are shaped as Alertmanager makes them: fingerprints hashed from the label sets,
starts to the nanosecond (as when Alertmanager set startsAt itself), a summary and a
description each. Each round starts each server afresh on a new database; the peak is the
server process's VmHWM (its resident high-water mark, read from /proc), and its resident
size once ready is printed beside it. Targets (issue 29): at most 2 s and 200 MiB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.hostile import stop
from bench.ingest import TOKEN, _argv, start
from tests.support import LOOPBACK, free_port

MIB = 1024 * 1024


def group(alerts: int, salt: int) -> bytes:
    """One group's notification: `alerts` firing alerts of one alertname, job and instance."""
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".894696746Z"
    items = []
    for i in range(alerts):
        labels = {"alertname": "node_down", "job": "node", "instance": "fleet",
                  "pod": f"pod-{salt}-{i:06d}", "severity": "critical"}  # fmt: skip
        fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()
        items.append({
            "status": "firing", "labels": labels,
            "annotations": {"summary": f"pod-{i:06d} of the fleet is down",
                            "description": "no scrape answered for 5 minutes"},
            "startsAt": started, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph?g0.expr=up+%3D%3D+0",
            "fingerprint": fingerprint[:16],
        })  # fmt: skip
    body = {"receiver": "alertbridge", "status": "firing", "alerts": items,
            "groupLabels": {"alertname": "node_down"}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093", "version": "4",
            "groupKey": '{}:{alertname="node_down"}', "truncatedAlerts": 0}  # fmt: skip
    return json.dumps(body).encode()


def _memory(pid: int) -> tuple[int, int]:
    """(resident now, resident high-water mark) of a process, in bytes."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def one(name: str, body: bytes, tmp: Path) -> tuple[float, int, int]:
    """(seconds to 2xx, resident MiB when ready, peak MiB) of one server and one body."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env["ALERTBRIDGE_WEBHOOK_TOKEN"] = TOKEN
    env["ALERTBRIDGE_ALERTMANAGER_URL"] = "http://127.0.0.1:9"  # no embedded evaluator
    with tempfile.TemporaryDirectory(dir=tmp) as work:
        proc = start(_argv(name, port, Path(work) / "bench.db"), port, env)
        try:
            ready, _ = _memory(proc.pid)
            request = urllib.request.Request(
                f"http://{LOOPBACK}:{port}/api/v1/alertmanager", data=body, method="POST",
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            )  # fmt: skip
            began = time.perf_counter()
            with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 - loopback
                answer.read()
                status = answer.status
            took = time.perf_counter() - began
            if status != 200:
                raise SystemExit(f"{name}: HTTP {status}")
            _, peak = _memory(proc.pid)
        finally:
            stop(proc)
    return took, ready // MIB, peak // MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-notification-") as tmp:
        figures: dict[str, list[tuple[float, int, int]]] = {"ceiling": [], "receiver": []}
        size = 0
        for number in range(max(1, args.rounds)):
            body = group(args.alerts, number)
            size = len(body)
            for name in figures:
                figures[name].append(one(name, body, Path(tmp)))
        print(f"one notification of {args.alerts} alerts ({size / MIB:.1f} MiB),"
              f" {args.rounds} rounds, medians:")  # fmt: skip
        for name, runs in figures.items():
            took = statistics.median(r[0] for r in runs)
            ready = statistics.median(r[1] for r in runs)
            peak = statistics.median(r[2] for r in runs)
            print(f"  {name:9} time to 2xx {took:6.2f} s  (all: "
                  f"{', '.join(f'{r[0]:.2f}' for r in runs)})   resident when ready"
                  f" {ready:4.0f} MiB, peak {peak:4.0f} MiB")  # fmt: skip
        print("targets: receiver at most 2 s and 200 MiB peak (issue 29)")


if __name__ == "__main__":
    main()
