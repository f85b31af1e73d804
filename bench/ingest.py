"""Benchmark: webhook ingestion vs. a bare parse-and-200 ceiling; listing and acking at 1M rows.

    .venv/bin/python -m bench.ingest [--seconds 5] [--rounds 3] [--clients 32] [--rows 1000000]
                                     [--sizes 1 100] [--repeats 100] [--skip-queries]

1. Ingestion: three server processes on free loopback ports, loaded in turn by the same client
   (this process, `--clients` concurrent connections, bounded by --seconds and a request cap),
   interleaved for --rounds rounds; medians reported:
   - ceiling: a bare aiohttp handler that json-parses the body and answers 200;
   - no-fsync: the receiver with SQLite's synchronous=OFF (not durable; a baseline only, to
     show what waiting for the disk costs);
   - receiver: `alertbridge serve` (auth, validation, durable group-committed SQLite).
   Each notification carries new fingerprints, so every alert is an insert plus an event; they
   are hashes of the label sets, as Alertmanager makes them (--fingerprints sequential: each
   after the last, the old shape, which hides the cost of a growing store: bench.growth).
   --repeats: also notifications that re-send stored alerts with a new $value, as Alertmanager
   does every repeat_interval (the common case in production): an update of each episode.
2. A store of --rows alerts (1% firing): list 50 firing alerts with filters, beside the bare
   SQL floor (ids only, same WHERE); ack one alert (a durable transaction), beside the floor
   of an empty durable transaction on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from aiohttp import web

from bridge.core.matchers import Matcher
from bridge.core.times import NS, now_ns
from bridge.store import AlertQuery
from bridge.store.sqlite.actions import acknowledge
from bridge.store.sqlite.database import Database
from bridge.store.sqlite.queries import list_alerts
from tests.support import LOOPBACK, free_port, http_text, wait_for

TOKEN = "bench-token"
_fingerprints = itertools.count(1)
_REPEATS_STARTED = now_ns()
#: The alert groups the repeat case re-sends in turn (enough for every client to send another).
REPEAT_GROUPS = 256
#: How the alerts' fingerprints are made: "hashed" as Alertmanager does (a hash of the label
#: set: new alerts land anywhere in the store's indexes), or "sequential" (each after the last:
#: what this bench generated before issue 35, which hid a slowdown as the store grows).
FINGERPRINTS: dict[str, Any] = {"mode": "hashed", "label_sets": 0}


def fingerprint(n: int, labels: dict[str, str]) -> str:
    if FINGERPRINTS["mode"] == "sequential":
        return f"{n:016x}"
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def _label_set(n: int) -> int:
    """The label set of new alert n: its own, or one of --label-sets in turn."""
    count = FINGERPRINTS["label_sets"]
    return n % count if count else n


def _rfc3339_ms(at: int) -> str:
    """RFC 3339 to the millisecond, as Alertmanager writes a start it did not set itself."""
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at // NS))
        + f".{at // 1_000_000 % 1000:03d}Z"
    )


def payload(alerts: int, group: int | None = None, value: int = 91) -> bytes:
    """A firing notification of `alerts` new alerts, or those of repeat `group` (same
    fingerprints and startsAt every time) with a description carrying `value`."""
    base = _REPEATS_STARTED if group is not None else now_ns()
    items = []
    for i in range(alerts):
        n = next(_fingerprints) if group is None else (1 << 48) + group * alerts + i
        starts = base
        if group is None and FINGERPRINTS["label_sets"]:  # a new episode of a known label set
            starts = _REPEATS_STARTED - 86400 * NS + n * 1_000_000  # each its own millisecond
        labels = {
            "alertname": "high_cpu",
            "severity": "warning",
            "instance": f"i{_label_set(n)}:9100",
            "job": "app",
            "metric": "system.cpu.percent",
        }
        items.append(
            {
                "status": "firing",
                "labels": labels,
                "annotations": {"summary": "CPU usage is high", "description": f"CPU is {value}%"},
                "startsAt": _rfc3339_ms(starts if group is None else base),
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://127.0.0.1:9090/graph",
                "fingerprint": fingerprint(n, labels),
            }
        )
    body = {
        "receiver": "alertbridge",
        "status": "firing",
        "alerts": items,
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "version": "4",
        "groupKey": "{}:{}",
        "truncatedAlerts": 0,
    }
    return json.dumps(body).encode()


def serve_bare(port: int) -> None:
    """The ceiling: parse the JSON, answer 200."""

    async def handler(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response({"ok": True})

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/api/v1/alertmanager", handler)
    app.router.add_get("/-/ready", ready)
    web.run_app(app, host=LOOPBACK, port=port, print=None, access_log=None)


def start(argv: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for("server", lambda: http_text(f"http://{LOOPBACK}:{port}/-/ready"), 20)
    return proc


def bodies(alerts: int, count: int, repeat: bool) -> list[bytes]:
    """`count` notification bodies: new alerts each, or the repeat groups in turn."""
    if repeat:
        return [payload(alerts, n % REPEAT_GROUPS, n % 100) for n in range(count)]
    return [payload(alerts) for _ in range(count)]


async def load(
    port: int, alerts: int, clients: int, seconds: float, repeat: bool = False
) -> tuple[int, list[float]]:
    """Requests done and their latencies, `clients` connections for `seconds` (capped)."""
    # Enough distinct bodies for the whole run at up to 10,000 notifications or 60,000 alerts/s
    count = int(seconds * min(10_000, 60_000 / alerts)) + clients
    return await send(port, bodies(alerts, count, repeat), clients, seconds)


async def send(
    port: int, bodies: list[bytes], clients: int, seconds: float
) -> tuple[int, list[float]]:
    """POST the bodies in order over `clients` keep-alive connections, until done or `seconds`
    passed; (requests per second, each one's latency).

    HTTP/1.1 written by hand, not aiohttp's client: the load generator shares the two cores
    with the servers it measures, and aiohttp's client took about a core at 6,000 requests/s;
    this one takes a third of that, so that the figures are the server's, not the client's
    (Alertmanager, the real sender, is Go and usually elsewhere)."""
    head = (f"POST /api/v1/alertmanager HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
            "Content-Length: ").encode()  # fmt: skip
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    body_iter = iter(bodies)

    async def post(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes
    ) -> tuple[int, bool]:
        """One request; (status, whether the server keeps the connection open)."""
        writer.write(head + b"%d\r\n\r\n" % len(body) + body)
        header = (await reader.readuntil(b"\r\n\r\n")).lower()
        status = int(header[9:12])
        at = header.find(b"\r\ncontent-length:")
        if at < 0:
            raise SystemExit(f"a response without Content-Length: {header[:200]!r}")
        length = int(header[at + 17 : header.index(b"\r\n", at + 2)])
        await reader.readexactly(length)
        return status, b"\r\nconnection: close" not in header

    async def client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        try:
            for body in body_iter:
                if time.monotonic() > deadline:
                    return
                start_at = time.perf_counter()
                status, keep = await asyncio.wait_for(post(reader, writer, body), 60)
                if status != 200:
                    errors += 1
                latencies.append(time.perf_counter() - start_at)
                if not keep:
                    writer.close()
                    reader, writer = await asyncio.open_connection(LOOPBACK, port)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    began = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.monotonic() - began
    if errors:
        raise SystemExit(f"{errors} requests failed")
    return int(len(latencies) / elapsed), latencies


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _loop_thread_cpu(server: psutil.Process) -> float:
    """CPU seconds of the server's main thread, which runs the event loop (Linux: tid = pid).

    The receiver's Python runs there and on its writer thread, under one GIL: this split shows
    where a notification's time goes."""
    for thread in server.threads():
        if thread.id == server.pid:
            return float(thread.user_time + thread.system_time)
    return 0.0


def serve_without_fsync(argv: list[str]) -> None:
    """`alertbridge serve` with synchronous=OFF: what the receiver does without waiting for the
    disk. Not durable, and not a setting of the product: a baseline for this bench only."""
    import bridge.store.sqlite.database
    import bridge.store.sqlite.writer
    from bridge.cli import main as cli
    from bridge.store.sqlite.schema import connect

    def without_fsync(*args: Any, **kwargs: Any) -> Any:
        conn = connect(*args, **kwargs)
        conn.execute("PRAGMA synchronous = OFF")
        return conn

    def nothing_to_sync(conn: Any) -> None:
        """The writer's sync: none (and its connection must not sync either)."""
        if conn.execute("PRAGMA synchronous").fetchone()[0] != 0:
            print("no-fsync baseline: the writer's connection would sync", file=sys.stderr)
            os._exit(70)  # the bench's requests then fail, loudly

    bridge.store.sqlite.database.connect = without_fsync  # type: ignore[attr-defined]
    bridge.store.sqlite.writer.Writer._pipeline = staticmethod(nothing_to_sync)  # type: ignore[method-assign]
    cli.main(argv, prog_name="alertbridge")


#: The servers loaded in turn: the ceiling, the receiver without fsync, the receiver; with
#: --store postgresql also the receiver on PostgreSQL, one replica and two (the load split
#: between them: each replica its own clients).
SERVERS = ("ceiling", "no-fsync", "receiver")
PG_SERVERS = ("postgresql", "postgresql-x2")


def _argv(name: str, port: int, db: Path | str) -> list[str]:
    if name == "ceiling":
        return [sys.executable, "-m", "bench.ingest", "--serve-bare", str(port)]
    # At the default log level, as operators run it.
    serve = ["serve", "--host", LOOPBACK, "--port", str(port), "--db", str(db)]
    if name == "no-fsync":
        return [sys.executable, "-m", "bench.ingest", "--serve-without-fsync", *serve]
    return [sys.executable, "-m", "bridge", *serve]


def _idle_cores() -> float:
    """Idle CPU seconds of the whole machine so far (all cores)."""
    return float(psutil.cpu_times().idle)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def ingestion(args: argparse.Namespace, tmp: Path, pg: Any = None) -> None:
    """Each size: the servers up, then `--rounds` rounds of each in turn, back to back.

    Throughput on a shared two-core machine drifts by tens of percent within minutes, so the
    servers are interleaved and the medians compared, never one run of each. Beside each
    server's CPU per notification, the machine's idle cores show whether the load was bound by
    CPU (near 0) or by waiting (the receiver's clients wait for the disk).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env["ALERTBRIDGE_WEBHOOK_TOKEN"] = TOKEN
    env["ALERTBRIDGE_ALERTMANAGER_URL"] = "http://127.0.0.1:9"  # no embedded evaluator
    if pg is not None:
        env["ALERTBRIDGE_STORE_PASSWORD_FILE"] = str(pg.password_file)
    cases = [(alerts, False) for alerts in args.sizes] + [(alerts, True) for alerts in args.repeats]
    for alerts, repeat in cases:
        kind = "repeats (stored alerts re-sent)" if repeat else "notifications (new alerts)"
        print(f"-- {alerts}-alert {kind}, {args.clients} clients, "
              f"{args.rounds} rounds of {args.seconds:g}s each")  # fmt: skip
        # The repeat case stores the groups once on each server; the rounds re-send them.
        first = [payload(alerts, group) for group in range(REPEAT_GROUPS)] if repeat else []
        names = SERVERS + (PG_SERVERS if pg is not None else ())
        servers: dict[str, list[tuple[int, subprocess.Popen[bytes], psutil.Process]]] = {}
        for name in names:
            db: Path | str = tmp / f"ingest-{alerts}-{'repeat' if repeat else 'new'}-{name}.db"
            if pg is not None and name in PG_SERVERS:
                db = pg.new_database()
            servers[name] = []
            for _ in range(2 if name.endswith("-x2") else 1):
                port = free_port()
                proc = start(_argv(name, port, db), port, env)
                servers[name].append((port, proc, psutil.Process(proc.pid)))
            if first:
                await send(servers[name][0][0], first, args.clients, 600)
        rates: dict[str, list[int]] = {name: [] for name in names}
        latencies: dict[str, list[float]] = {name: [] for name in names}
        cpu = dict.fromkeys(names, 0.0)
        loop_cpu = dict.fromkeys(names, 0.0)
        idle = dict.fromkeys(names, 0.0)
        elapsed = dict.fromkeys(names, 0.0)
        try:
            for round_no in range(args.rounds):
                line = [f"round {round_no + 1}:"]
                for name, replicas in servers.items():
                    procs = [server for _, _, server in replicas]
                    before = sum(_cpu(p) for p in procs)
                    loop_before = sum(_loop_thread_cpu(p) for p in procs)
                    idle_before, began = _idle_cores(), time.monotonic()
                    clients = max(1, args.clients // len(replicas))
                    done = await asyncio.gather(*(load(port, alerts, clients, args.seconds, repeat)
                                                  for port, _, _ in replicas))  # fmt: skip
                    rate = sum(r for r, _ in done)
                    lat = [v for _, values in done for v in values]
                    idle[name] += _idle_cores() - idle_before
                    elapsed[name] += time.monotonic() - began
                    cpu[name] += sum(_cpu(p) for p in procs) - before
                    loop_cpu[name] += sum(_loop_thread_cpu(p) for p in procs) - loop_before
                    rates[name].append(rate)
                    latencies[name] += lat
                    line.append(f"{name} {rate * alerts:>7} alerts/s")
                shares = (f"{rates[name][-1] / rates['ceiling'][-1]:.0%}" for name in names[1:])
                line.append(f"of the ceiling: {' '.join(shares)}")
                print("  ".join(line))
        finally:
            for replicas in servers.values():
                for _, proc, _ in replicas:
                    proc.terminate()
                    proc.wait(10)
        for name in servers:
            rate = int(statistics.median(rates[name]))
            lat = latencies[name]
            # CPU per notification is steadier than throughput on a machine the client shares.
            print(
                f"{name:<9} median {rate:>7} notifications/s  {rate * alerts:>8} alerts/s  "
                f"p50 {pct(lat, 0.5):6.2f} ms  p99 {pct(lat, 0.99):6.2f} ms  "
                f"server CPU {cpu[name] / len(lat) * 1e6:5.0f} us/notification "
                f"(event loop thread {loop_cpu[name] / len(lat) * 1e6:5.0f} us, "
                f"other threads {max(0.0, cpu[name] - loop_cpu[name]) / len(lat) * 1e6:5.0f} us)"
                f"  machine idle {idle[name] / elapsed[name]:.2f} cores"
            )
        for name in names[1:]:
            ratios = [r / c for r, c in zip(rates[name], rates["ceiling"], strict=True)]
            print(f"{name}/ceiling: median {statistics.median(ratios):.0%} "
                  f"(rounds: {', '.join(f'{r:.0%}' for r in ratios)})")  # fmt: skip


def build_store(path: Path, rows: int, ago: int = 0) -> None:
    """rows alerts, 1% firing, 500 label sets (four teams, four severities); one event each;
    the newest began `ago` ns before now, the others a second apart before it.

    As in Alertmanager, the fingerprint is a hash of the label set, so an alert's episodes
    share it; annotations carry the instance and a value (3,500 distinct texts).
    """
    from bridge.store.sqlite.schema import connect, migrate

    conn = connect(path)
    migrate(conn)
    conn.execute("PRAGMA synchronous = OFF")  # building only; measured work runs with FULL
    severities = ["info", "warning", "error", "critical"]
    now = now_ns()
    rng = random.Random(7)
    conn.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    for i in range(rows):
        firing = rng.random() < 0.01
        sev = severities[i % 4]
        instance = f"i{i % 500}:9100"
        labels = json.dumps(
            {"alertname": f"rule_{i % 10}", "instance": instance, "severity": sev,
             "team": f"team{i % 4}"},
            sort_keys=True,
        )  # fmt: skip
        annotations = json.dumps(
            {"description": f"value is {80 + i % 7}%", "summary": f"rule_{i % 10} on {instance}"}
        )
        start_at = now - ago - (rows - i) * NS
        batch.append(
            (
                hashlib.sha256(labels.encode()).hexdigest()[:16],
                start_at,
                None if firing else start_at + 60 * NS,
                "firing" if firing else "resolved",
                f"rule_{i % 10}",
                sev,
                labels,
                annotations,
                "",
                "alertmanager",
                start_at,
                start_at,
                1,
                start_at,
            )
        )
        if len(batch) == 50_000:
            _insert(conn, batch)
            batch = []
    _insert(conn, batch)
    finish_build(conn)
    conn.execute("ANALYZE")
    conn.close()


def finish_build(conn: Any, after: int = 0) -> None:
    """End a store's build: the label index of the alerts above id `after` (where the bridge
    measured has one), the counts the store keeps by state, committed, and durability back on
    for the work that is measured."""
    from bridge.store.sqlite import schema

    if hasattr(schema, "build_label_index"):  # (a baseline before issue 35 has none)
        began = time.monotonic()
        schema.build_label_index(conn, after)  # the SQL of migration 13
        print(f"-- label index of the alerts above id {after:,} built in"
              f" {time.monotonic() - began:.1f} s (as by the migration)", flush=True)  # fmt: skip
    conn.execute(
        "INSERT INTO alert_counts (state, severity, count) SELECT status, severity, count(*)"
        " FROM alerts GROUP BY 1, 2"
        " ON CONFLICT (state, severity) DO UPDATE SET count = excluded.count"
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA synchronous = FULL")


def _insert(conn: Any, batch: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO alerts (fingerprint, starts_at, ends_at, status, alertname, severity, labels,"
        " annotations, generator_url, source, first_received_at, last_received_at,"
        " receive_count, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        batch,
    )
    conn.execute(
        "INSERT INTO events (alert_id, at, kind, actor, detail) SELECT id, starts_at, 'fired',"
        " 'alertmanager', '' FROM alerts WHERE id > (SELECT coalesce(max(alert_id), 0) FROM events)"
    )


def timed(fn: Any, count: int) -> list[float]:
    out = []
    deadline = time.monotonic() + 30
    for _ in range(count):
        began = time.perf_counter()
        fn()
        out.append(time.perf_counter() - began)
        if time.monotonic() > deadline:
            break
    return out


def queries(args: argparse.Namespace, tmp: Path) -> None:
    path = tmp / "million.db"
    began = time.monotonic()
    build_store(path, args.rows)
    print(
        f"-- store of {args.rows} alerts built in {time.monotonic() - began:.1f}s "
        f"({path.stat().st_size / 2**20:.0f} MiB)"
    )
    store = Database(path)
    conn = store.new_connection()
    query = AlertQuery(
        status="firing",
        severities=("critical", "error"),
        matchers=(Matcher.parse('team=~"team[23]"'),),
        limit=50,
    )
    found = store.read(lambda c: list_alerts(c, query))
    assert len(found) == 50, len(found)
    floor = timed(
        lambda: conn.execute(
            "SELECT id FROM alerts WHERE status = 'firing' AND severity IN ('critical', 'error')"
            " AND regexp('team[23]', json_extract(labels, '$.team')) ORDER BY id DESC LIMIT 50"
        ).fetchall(),
        200,
    )
    listing = timed(lambda: store.read(lambda c: list_alerts(c, query)), 200)
    print(
        f"list 50 firing (status+severity+regex matcher): p50 {pct(listing, 0.5):.2f} ms  "
        f"p99 {pct(listing, 0.99):.2f} ms   floor (ids only) p50 {pct(floor, 0.5):.2f} ms"
    )
    firing = [
        r[0]
        for r in conn.execute("SELECT id FROM alerts WHERE status = 'firing' ORDER BY id LIMIT 200")
    ]
    ids = iter(firing)
    acks = timed(lambda: store.run(acknowledge(next(ids), "bench", "", now_ns())), len(firing))

    def empty_commit() -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('bench', 'x')")
        conn.execute("COMMIT")

    fsync = timed(empty_commit, 200)
    print(
        f"ack (durable transaction): p50 {pct(acks, 0.5):.2f} ms  p99 {pct(acks, 0.99):.2f} ms   "
        f"floor (1-row durable commit) p50 {pct(fsync, 0.5):.2f} ms"
    )
    conn.close()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="per round and server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-queries", action="store_true", help="ingestion only")
    parser.add_argument(
        "--sizes", type=int, nargs="*", default=[1, 100], help="alerts per notification"
    )
    parser.add_argument(
        "--repeats", type=int, nargs="*", default=[100], help="alerts per repeat notification"
    )
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--store",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="postgresql: also the receiver on a local PostgreSQL, 1 and 2 replicas",
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--fingerprints", choices=("hashed", "sequential"), default="hashed",
                        help="hashed: as Alertmanager makes them (default)")  # fmt: skip
    parser.add_argument("--label-sets", type=int, default=0,
                        help="new alerts are new episodes of this many label sets in turn (0:"
                             " each its own label set, the default)")  # fmt: skip
    parser.add_argument("--serve-bare", type=int, default=None, help=argparse.SUPPRESS)
    if sys.argv[1:2] == ["--serve-without-fsync"]:
        serve_without_fsync(sys.argv[2:])
        return
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    FINGERPRINTS["mode"] = args.fingerprints
    FINGERPRINTS["label_sets"] = args.label_sets
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        pg = None
        if args.store == "postgresql":  # the bench's own cluster, default durability
            from tests.pg import cluster

            pg = stack.enter_context(cluster())
        asyncio.run(ingestion(args, Path(tmp), pg))
        if not args.skip_queries:
            queries(args, Path(tmp))


if __name__ == "__main__":
    main()
