"""Benchmark: the receiver under hostile load, beside a baseline measured in the same run.

    .venv/bin/python -m bench.hostile [--baseline REF] [--seconds 5] [--rounds 3]
                                      [--rows 1000000] [--skip-baseline]

1. One-alert notifications/s (32 clients) of this tree's `alertbridge serve` and of the
   baseline commit's (a git worktree of REF, default the commit before issue 14), rounds
   interleaved, medians compared (target: this tree at least 95 % of the baseline).
2. Webhook latency (4 clients, 1-alert notifications) on a store of --rows alerts, idle and
   while two clients list with the pathological matcher instance=~"(a+)+$" (1 row in 1000
   has 26 a's and a b: 3 s each for a backtracking engine): p50/p99 of both, and how the
   listings ended (target: p99 during at most 2x idle). The baseline's figures are shown
   too (its listings never finish; it is stopped after); each phase lasts 8 s at least,
   longer than this tree's 5 s read budget.
3. Peak RSS of the server while four clients each list 100 stored alerts of the maximal
   size (~256 KiB each), once with limit=100 and then following next_cursor to the end
   (target: at most 200 MiB); the baseline stores and lists the same alerts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.ingest import TOKEN, load, pct, send
from tests.support import LOOPBACK, free_port

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "38818b1"  # main before issue 14
API = "bench-api-token"


@contextlib.contextmanager
def worktree(ref: str, tmp: Path) -> Iterator[Path]:
    """A checkout of `ref` in tmp (removed afterwards)."""
    path = tmp / "baseline"
    git = ["git", "-C", str(REPO), "worktree"]
    subprocess.run([*git, "add", "--detach", "-q", str(path), ref], check=True)
    try:
        yield path
    finally:
        subprocess.run([*git, "remove", "--force", str(path)], check=False)


def this_tree_and_baseline(
    prefix: str,
    args: argparse.Namespace,
    case: Callable[[str, Path | None, argparse.Namespace, Path], None],
) -> None:
    """Run `case` on this tree, then (unless --skip-baseline) on a worktree of --baseline,
    in one temporary directory, with the open-files limit raised to its hard limit (the
    benches open a connection per stream or reader)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix=prefix) as work:
        tmp = Path(work)
        case("this tree", None, args, tmp)
        if not args.skip_baseline:
            with worktree(args.baseline, tmp) as base:
                case(f"baseline {args.baseline}", base, args, tmp)


def serve_argv(port: int, db: Path) -> list[str]:
    return [sys.executable, "-m", "bridge", "serve", "--host", LOOPBACK, "--port", str(port),
            "--db", str(db)]  # fmt: skip


def env_for(tree: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env.update(ALERTBRIDGE_WEBHOOK_TOKEN=TOKEN, ALERTBRIDGE_API_TOKEN=API,
               ALERTBRIDGE_ALERTMANAGER_URL="http://127.0.0.1:9")  # fmt: skip
    if tree is not None:  # the worktree's package shadows the installed one
        env["PYTHONPATH"] = str(tree)
    return env


def launch(name: str, tree: Path | None, db: Path) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    cwd = tree if tree is not None else REPO
    argv = serve_argv(port, db)
    proc = subprocess.Popen(argv, env=env_for(tree), cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        start_wait(port)
    except BaseException:
        proc.kill()
        raise
    return port, proc


def start_wait(port: int) -> None:
    from tests.support import http_text, wait_for

    wait_for("server", lambda: http_text(f"http://{LOOPBACK}:{port}/-/ready"), 30)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# --- 1. throughput, this tree beside the baseline -----------------------------------------


async def throughput(args: argparse.Namespace, tmp: Path, base: Path | None) -> None:
    trees = {"this tree": None, **({"baseline": base} if base else {})}
    print(f"-- 1-alert notifications/s, 32 clients, {args.rounds} rounds of {args.seconds:g}s")
    servers = {name: launch(name, tree, tmp / f"rate-{i}.db")
               for i, (name, tree) in enumerate(trees.items())}  # fmt: skip
    rates: dict[str, list[int]] = {name: [] for name in servers}
    lat: dict[str, list[float]] = {name: [] for name in servers}
    cpu = dict.fromkeys(servers, 0.0)
    try:
        for round_no in range(args.rounds):
            line = [f"round {round_no + 1}:"]
            for name, (port, proc) in servers.items():
                before = psutil.Process(proc.pid).cpu_times()
                rate, latencies = await load(port, 1, 32, args.seconds)
                after = psutil.Process(proc.pid).cpu_times()
                cpu[name] += after.user + after.system - before.user - before.system
                rates[name].append(rate)
                lat[name] += latencies
                line.append(f"{name} {rate}/s")
            print("  ".join(line))
    finally:
        for _, proc in servers.values():
            stop(proc)
    for name in servers:
        print(f"{name:<10} median {int(statistics.median(rates[name])):>6} notifications/s  "
              f"p99 {pct(lat[name], 0.99):6.2f} ms  server CPU "
              f"{cpu[name] / len(lat[name]) * 1e6:4.0f} us/notification")  # fmt: skip
    if "baseline" in rates:
        ratios = [a / b for a, b in zip(rates["this tree"], rates["baseline"], strict=True)]
        print(f"this tree / baseline: median {statistics.median(ratios):.0%} "
              f"(rounds {', '.join(f'{r:.0%}' for r in ratios)}; target >= 95%)")  # fmt: skip


# --- 2. webhook latency while pathological listings run -----------------------------------


def build_rows(db: Path, rows: int) -> None:
    """`rows` resolved alerts of the last `rows` seconds (within retention: the server prunes
    older ones at start) made by SQLite; 1 in 1000 has instance "a" * 26 + "b"."""
    from bridge.core.times import NS, now_ns
    from bridge.store.sqlite.schema import connect, migrate

    conn = connect(db)
    migrate(conn)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)"
        " INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity,"
        " labels, annotations, generator_url, source, first_received_at, last_received_at,"
        " receive_count, updated_at) SELECT printf('%016x', i), ?2 + i * ?3, ?2 + i * ?3 + ?3,"
        " 'resolved', 'bulk', 'info', json_object('alertname', 'bulk', 'instance',"
        " CASE WHEN i % 1000 = 0 THEN 'aaaaaaaaaaaaaaaaaaaaaaaaaab' ELSE 'host-' || i END),"
        " '{}', '', 'alertmanager', ?2 + i * ?3, ?2 + i * ?3, 1, ?2 + i * ?3 FROM n",
        (rows, now_ns() - (rows + 1) * NS, NS),
    )
    from bridge.store.sqlite import schema

    if hasattr(schema, "build_label_index"):  # (a baseline before issue 35 has none)
        schema.build_label_index(conn, 0)
    conn.execute("PRAGMA synchronous = FULL")
    conn.close()


async def _listings(port: int, stop_at: float, outcomes: list[tuple[int, float]]) -> None:
    """List with the pathological matcher until stop_at (each request bounded by it too)."""
    url = f"http://{LOOPBACK}:{port}/api/v1/alerts"
    params = {"filter": 'instance=~"(a+)+$"', "limit": "50"}
    headers = {"Authorization": f"Bearer {API}"}
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < stop_at:
            began = time.perf_counter()
            timeout = aiohttp.ClientTimeout(total=max(0.1, stop_at - time.monotonic()))
            try:
                async with session.get(url, params=params, headers=headers,
                                       timeout=timeout) as response:  # fmt: skip
                    await response.read()
                    outcomes.append((response.status, time.perf_counter() - began))
            except TimeoutError:
                outcomes.append((0, time.perf_counter() - began))  # still running server-side


async def regex_case(args: argparse.Namespace, tmp: Path, name: str, tree: Path | None) -> None:
    db = tmp / f"regex-{name.replace(' ', '-')}.db"
    build_rows(db, args.rows)
    port, proc = launch(name, tree, db)
    try:
        _, idle = await load(port, 1, 4, args.seconds)
        outcomes: list[tuple[int, float]] = []
        # Longer than the server's 5 s read budget, so that listings end while measured.
        stop_at = time.monotonic() + max(args.seconds, 8.0)
        listers = [asyncio.ensure_future(_listings(port, stop_at, outcomes)) for _ in range(2)]
        await asyncio.sleep(0.2)  # the listings are running
        _, during = await load(port, 1, 4, max(0.5, stop_at - time.monotonic()))
        await asyncio.gather(*listers)
    finally:
        stop(proc)
    done = {status: [s for st, s in outcomes if st == status] for status, _ in outcomes}
    ends = ", ".join(
        f"{len(v)} x {'unfinished' if k == 0 else k} ({statistics.median(v):.2f} s median)"
        for k, v in sorted(done.items())
    )
    ratio = pct(during, 0.99) / pct(idle, 0.99)
    print(f"{name:<10} webhook idle p50 {pct(idle, 0.5):6.2f} ms p99 {pct(idle, 0.99):7.2f} ms"
          f" | during listings p50 {pct(during, 0.5):7.2f} ms p99 {pct(during, 0.99):8.2f} ms"
          f" ({len(during)} sent; p99 {ratio:.1f}x idle)  listings: {ends or 'none'}")  # fmt: skip


async def regex(args: argparse.Namespace, tmp: Path, base: Path | None) -> None:
    print(f"-- webhook latency while instance=~\"(a+)+$\" lists run, {args.rows} rows "
          f"(target this tree: p99 during <= 2x idle)")  # fmt: skip
    await regex_case(args, tmp, "this tree", None)
    if base is not None:
        await regex_case(args, tmp, "baseline", base)


# --- 3. peak RSS while listing maximal alerts ----------------------------------------------


def maximal_alert(n: int) -> dict[str, Any]:
    """An alert at the default limits: 4 annotations of 65,000 characters (~256 KiB)."""
    text = (f"{n:08d}" * 8125)[:65000]
    return {
        "status": "firing", "fingerprint": f"{0xA << 56 | n:016x}",
        "labels": {"alertname": "big", "instance": f"host-{n}", "severity": "warning"},
        "annotations": {f"a{i}": text for i in range(4)},
        "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "",
    }  # fmt: skip


def _bodies(alerts: int) -> list[bytes]:
    bodies = []
    for first in range(0, alerts, 3):  # three fit in the 1 MiB body limit
        batch = [maximal_alert(n) for n in range(first, min(alerts, first + 3))]
        bodies.append(json.dumps({
            "version": "4", "status": "firing", "receiver": "alertbridge", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "alerts": batch, "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "",
        }).encode())  # fmt: skip
    return bodies


class PeakRss:
    """Samples a process's RSS every 5 ms in a thread; `peak` in MiB."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def _walk(port: int, follow: bool) -> int:
    """List limit=100 (and follow next_cursor to the end); alerts seen."""
    url = f"http://{LOOPBACK}:{port}/api/v1/alerts"
    headers = {"Authorization": f"Bearer {API}"}
    seen, cursor = 0, None
    async with aiohttp.ClientSession() as session:
        for _ in range(1000):
            params = {"limit": "100", **({"cursor": cursor} if cursor else {})}
            async with session.get(url, params=params, headers=headers) as response:
                page = await response.json(content_type=None)
            seen += len(page["alerts"])
            cursor = page.get("next_cursor")
            if not (follow and cursor):
                return seen
    return seen


async def memory_case(tmp: Path, name: str, tree: Path | None) -> None:
    port, proc = launch(name, tree, tmp / f"rss-{name.replace(' ', '-')}.db")
    try:
        await send(port, _bodies(100), 4, 600)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        for follow in (False, True):
            with PeakRss(proc.pid) as peak:
                seen = await asyncio.gather(*(_walk(port, follow) for _ in range(4)))
            how = "following next_cursor" if follow else "one request, limit=100"
            print(f"{name:<10} 4 clients x 100 alerts of ~256 KiB, {how}: peak RSS "
                  f"{peak.peak / 2**20:6.0f} MiB (before {rss:.0f} MiB; alerts seen per client "
                  f"{seen[0]})")  # fmt: skip
    finally:
        stop(proc)


async def memory(tmp: Path, base: Path | None) -> None:
    print("-- peak RSS listing maximal alerts (target this tree: <= 200 MiB)")
    await memory_case(tmp, "this tree", None)
    if base is not None:
        await memory_case(tmp, "baseline", base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref to compare with")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["rate", "memory", "regex"], default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as name:
        tmp = Path(name)
        with contextlib.ExitStack() as stack:
            base = None if args.skip_baseline else stack.enter_context(worktree(args.baseline, tmp))
            if args.only in (None, "rate"):
                asyncio.run(throughput(args, tmp, base))
            if args.only in (None, "memory"):
                asyncio.run(memory(tmp, base))
            if args.only in (None, "regex"):
                asyncio.run(regex(args, tmp, base))


if __name__ == "__main__":
    main()
