"""Benchmark: event-stream readers that never read, against this tree's `serve` and the
baseline commit's (a git worktree of REF, default the commit before issue 30), in one run.

    .venv/bin/python -m bench.stalled [--readers 1024] [--baseline REF] [--wait 120]

Each reader opens `GET /api/v1/events/stream` with a 4 KiB receive buffer and reads nothing.
Then alerts whose labels (random, incompressible) make each event about 120 KiB are posted
until every reader is a few MiB behind. Printed, for each tree: how many readers the server
cut (their TCP state CLOSE: a reset) and when, after the last post, up to --wait seconds;
the stream worker's resident size once the readers are open and its peak (VmHWM) after;
and whether the webhook still answered. Target (issue 30): every reader dropped at the
promised bound (30 s of not reading), 1,024 of them costing the worker at most 300 MiB.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import string
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from bench.hostile import API, launch, stop, this_tree_and_baseline
from bench.ingest import TOKEN
from tests.support import LOOPBACK

DEFAULT_BASELINE = "035b361"  # main before issues 29 and 30
TCP_CLOSE = 7  # tcp_info's state of a reset connection (linux/tcp_states.h)
MIB = 1024 * 1024


def _worker(server: psutil.Process) -> psutil.Process:
    for child in server.children(recursive=True):
        if "stream-worker" in " ".join(child.cmdline()):
            return child
    raise SystemExit("no stream worker found")


def _memory(pid: int) -> tuple[int, int]:
    """(resident, high-water mark) in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines())  # fmt: skip
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


def _readers(port: int, count: int) -> list[socket.socket]:
    request = (f"GET /api/v1/events/stream HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
               f"Authorization: Bearer {API}\r\n\r\n").encode()  # fmt: skip
    readers = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((LOOPBACK, port))
        sock.sendall(request)
        readers.append(sock)
    return readers


def _post(port: int, alerts: int, round_: int) -> int:
    """A notification of `alerts` new alerts of about 120 KiB of labels each; its status."""
    letters = string.ascii_letters
    items = []
    for i in range(alerts):
        labels = {"alertname": "fat", "n": f"{round_}-{i}"}
        labels |= {f"l{k}": "".join(random.choices(letters, k=4000)) for k in range(30)}
        items.append({"status": "firing", "labels": labels, "annotations": {},
                      "startsAt": "2026-12-07T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                      "fingerprint": f"{round_:08x}{i:08x}"})  # fmt: skip
    body = json.dumps({"version": "4", "status": "firing", "receiver": "b", "alerts": items,
                       "groupKey": "{}", "truncatedAlerts": 0}).encode()  # fmt: skip
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/api/v1/alertmanager",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _cut(readers: list[socket.socket]) -> int:
    return sum(
        1 for s in readers if s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_CLOSE
    )


def case(name: str, tree: Path | None, args: argparse.Namespace, tmp: Path) -> None:
    port, proc = launch(name, tree, tmp / f"{name.split()[0]}.db")
    readers: list[socket.socket] = []
    try:
        time.sleep(1)  # the worker up (it is started beside the server)
        worker = _worker(psutil.Process(proc.pid))
        readers = _readers(port, args.readers)
        time.sleep(2)  # handed over
        ready_rss, _ = _memory(worker.pid)
        statuses = [_post(port, 5, r) for r in range(args.posts)]
        posted = time.monotonic()
        times: list[float] = []
        deadline = posted + args.wait
        while time.monotonic() < deadline:  # bounded: --wait
            cut = _cut(readers)
            while len(times) < cut:
                times.append(time.monotonic() - posted)
            if cut == len(readers):
                break
            time.sleep(0.5)
        rss, peak = _memory(worker.pid)
        webhook = _post(port, 1, 10_000)
        half = f"{times[len(times) // 2]:.0f} s" if times else "-"
        last = f"not within {args.wait:.0f} s"
        if len(times) == len(readers):
            last = f"{times[-1]:.0f} s"
        print(f"{name:22} cut {len(times):5}/{len(readers)} readers  (half by {half}, all:"
              f" {last})  worker RSS {ready_rss} MiB with them open, {rss} MiB after,"
              f" peak {peak} MiB  posts {sorted(set(statuses))}, then the webhook"
              f" {webhook}")  # fmt: skip
    finally:
        for sock in readers:
            sock.close()
        stop(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--readers", type=int, default=1024)
    parser.add_argument("--posts", type=int, default=6,
                        help="notifications of 5 fat alerts (600 KiB: the baseline's 1 MiB"
                        " limit takes them)")  # fmt: skip
    parser.add_argument("--wait", type=float, default=120.0)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    print(f"{args.readers} stream readers that never read (4 KiB receive buffers),"
          f" {args.posts} x 5 alerts of ~120 KiB each posted")  # fmt: skip
    this_tree_and_baseline("bench-stalled-", args, case)
    print("target: all cut within ~30 s of not reading; worker at most 300 MiB (issue 30)")


if __name__ == "__main__":
    main()
