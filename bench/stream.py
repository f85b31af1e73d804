"""Benchmark: ingestion with 200 live watchers of the event stream, against the same bridge
with none, and how late the events reach the watchers.

    .venv/bin/python -m bench.stream [--watchers 200] [--probes 4] [--checks 16] [--rounds 3]
                                     [--seconds 8] [--clients 32] [--filter] [--plain]
                                     [--priority idle|19|0] [--worker-priority idle|normal]

Each round starts, in turn, two `alertbridge serve` processes on fresh databases: one with
nobody watching (the baseline), one with --watchers connections to GET /api/v1/events/stream
held open by a child process (all accept gzip, as browsers do, unless --plain). Both get the
same load from this process: one-alert notifications of new alerts (each a `fired` event)
over --clients connections for --seconds; the ingest rates are compared (target: with >= 90%
of without).

The watchers stand in for browsers on other machines, so on this 2-core machine they do as
little as they can while the load runs: the first --probes and the next --checks keep what
they read, each read stamped with the kernel's time of its arrival (SO_TIMESTAMPNS), and
decode it after the load (the probes parse every event, the checks count them); the others
are protocols that count bytes, woken when 32 kB wait rather than at every batch. The child
runs under SCHED_IDLE (--priority idle: only when nothing else wants a core; --priority 19 or
0 for that nice value): a process at nice 19 that burns a quarter of a core beside an
unpinned server still costs it 15-20 % of its ingest rate, one under SCHED_IDLE about 7 %.

The bridges' own stream worker runs as `server.stream_priority` says (--worker-priority, given
to both bridges of a round: SCHED_IDLE by default, as `serve` runs it); --worker-priority normal
shows what it costs the webhook at the server's own priority.

Delivery: the arrival of the read that completed an event at a probe minus the event's own
time (`at`, when the bridge recorded it), p50/p99 over every event of every probe (target: p99
<= 100 ms). With --filter the watchers ask for `severity=critical` only (the load is warnings:
they get nothing), the case of a filtered page. Every decoding watcher must have received
every event (they count them); the bench says so when one did not.
Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import psutil

from bench.ingest import TOKEN, load, start
from bridge.core.times import NS, parse_rfc3339
from tests.support import LOOPBACK, free_port

API = "bench-api-token"
DRAIN_LOWAT = 32 * 1024
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # (Linux)


class _Drain(asyncio.Protocol):
    """A watcher that reads and counts bytes, as cheaply as Python can (a protocol, no task
    and no timeout per read): the stand-in for a browser elsewhere should not take this
    machine's CPU from the server measured."""

    def __init__(self, request: bytes, out: dict[str, Any], ready: asyncio.Event) -> None:
        self.request, self.out, self.ready = request, out, ready
        self.head = b""
        self.closed = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.out["bytes"] = self.out.get("bytes", 0) + len(data)
        if not self.ready.is_set():
            self.head += data
            if b"\r\n\r\n" in self.head:
                if b" 200 " not in self.head.split(b"\r\n", 1)[0]:
                    raise SystemExit(f"stream refused: {self.head[:200]!r}")
                self.ready.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def _watch(port: int, role: str, query: str, gzip: bool, out: dict[str, Any],
                 ready: asyncio.Event, stop: asyncio.Event) -> None:  # fmt: skip
    """One watcher: "probe" parses every message (its delivery time), "check" decodes and
    counts them, "drain" reads and counts bytes."""
    if role == "drain":
        encoding = "Accept-Encoding: gzip\r\n" if gzip else ""
        request = (f"GET /api/v1/events/stream{query} HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
                   f"Authorization: Bearer {API}\r\n{encoding}\r\n").encode()  # fmt: skip
        loop = asyncio.get_running_loop()
        drain = _Drain(request, out, ready)
        transport, _ = await loop.create_connection(lambda: drain, LOOPBACK, port)
        await asyncio.wait_for(ready.wait(), 60)
        # Woken when 32 kB are waiting, not at every batch (about 5 times a second at this
        # load instead of 25; the server's writes are not held back: the socket's buffer
        # is larger): this process does the least it can beside the server measured.
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT,
                                                      DRAIN_LOWAT)  # fmt: skip
        out["messages"] = 0
        await stop.wait()
        transport.close()
        return
    # Probes and checks keep what they receive, each read with the kernel's time of its
    # arrival (SO_TIMESTAMPNS), and decode it after the load: while it runs they only read,
    # and how late an event is does not include how late this process got to read it.
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setblocking(False)
    await loop.sock_connect(sock, (LOOPBACK, port))
    encoding = "Accept-Encoding: gzip\r\n" if gzip else ""
    await loop.sock_sendall(sock, f"GET /api/v1/events/stream{query} HTTP/1.1\r\nHost:"
                            f" {LOOPBACK}\r\nAuthorization: Bearer {API}\r\n{encoding}\r\n"
                            .encode())  # fmt: skip
    reads: list[tuple[int, bytes]] = []
    closed = asyncio.Event()

    def readable() -> None:
        for _ in range(64):
            try:
                data, ancillary, _, _ = sock.recvmsg(1 << 16, 64)
            except BlockingIOError:
                return
            if not data:
                loop.remove_reader(sock.fileno())
                closed.set()
                return
            at = time.time_ns()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanoseconds = struct.unpack("qq", value[:16])
                    at = seconds * NS + nanoseconds
            reads.append((at, data))

    loop.add_reader(sock.fileno(), readable)
    head = b""
    for _ in range(600):  # the head: within 60 s
        head = b"".join(data for _, data in reads)
        if b"\r\n\r\n" in head or closed.is_set():
            break
        await asyncio.sleep(0.1)
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"stream refused: {head[:200]!r}")
    ready.set()
    await stop.wait()
    with contextlib.suppress(ValueError):
        loop.remove_reader(sock.fileno())
    sock.close()
    _decode(role, reads, gzip, out)


def _decode(role: str, reads: list[tuple[int, bytes]], gzip: bool, out: dict[str, Any]) -> None:
    """Count the events of a stream's reads; a probe also takes each one's delay: the
    arrival of the read that completed it minus the event's own time."""
    late: list[float] = out.setdefault("late", [])
    out["messages"] = 0
    out["bytes"] = sum(len(data) for _, data in reads)
    stream = b"".join(data for _, data in reads)
    head_end = stream.index(b"\r\n\r\n") + 4
    body = _Chunked()
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
    buffer = b""
    offset = 0
    for at, data in reads:
        offset += len(data)
        if offset <= head_end:
            continue
        data = data[max(0, len(data) - (offset - head_end)) :]
        chunk = body.feed(data)
        buffer += inflate.decompress(chunk) if inflate else chunk
        *messages, buffer = buffer.split(b"\n\n")
        for message in messages:
            if b"\ndata: " not in b"\n" + message:
                continue
            out["messages"] += 1
            if role == "probe":
                line = message[message.index(b"data: ") + 6 :].split(b"\n", 1)[0]
                sent = parse_rfc3339(json.loads(line)["at"]) or at
                late.append((at - sent) / NS)


class _Chunked:
    """HTTP/1.1 chunked transfer decoding, incremental."""

    def __init__(self) -> None:
        self.pending = b""
        self.left = 0  # data bytes of the current chunk still to come
        self.crlf = False  # the CRLF after a chunk's data is still to come
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self.pending += data
        out = []
        while not self.done:
            if self.left:
                take = self.pending[: self.left]
                out.append(take)
                self.pending = self.pending[len(take) :]
                self.left -= len(take)
                if self.left:
                    break
                self.crlf = True
            if self.crlf:
                if len(self.pending) < 2:
                    break
                self.pending, self.crlf = self.pending[2:], False
            size, sep, rest = self.pending.partition(b"\r\n")
            if not sep:
                break
            self.left, self.pending = int(size.split(b";")[0], 16), rest
            self.done = not self.left  # the last chunk: the stream ended
        return b"".join(out)


async def watchers_child(port: int, count: int, probes: int, checks: int, query: str,
                         gzip: bool) -> None:  # fmt: skip
    """The child: open the streams, say "ready", watch until stdin closes; print stats."""
    stop = asyncio.Event()
    outs: list[dict[str, Any]] = [{} for _ in range(count)]
    readies = [asyncio.Event() for _ in range(count)]
    roles = ["probe"] * probes + ["check"] * checks + ["drain"] * (count - probes - checks)
    tasks = [asyncio.create_task(_watch(port, roles[n], query, gzip, outs[n], readies[n], stop))
             for n in range(count)]  # fmt: skip
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes it
    await asyncio.sleep(0)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    late = [v for o in outs[:probes] for v in o.get("late", [])]
    messages = [o["messages"] for o in outs[: probes + checks]]
    print(json.dumps({"late": late, "messages": messages,
                      "bytes": [o.get("bytes", 0) for o in outs]}), flush=True)  # fmt: skip


def _lower(priority: str) -> None:
    if priority == "idle":
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(int(priority))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def one_round(args: argparse.Namespace, tmp: Path, watched: bool, n: int) -> dict[str, Any]:
    port = free_port()
    db = tmp / f"{'with' if watched else 'without'}-{n}.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env.update(ALERTBRIDGE_WEBHOOK_TOKEN=TOKEN, ALERTBRIDGE_API_TOKEN=API,
               ALERTBRIDGE_STREAM_PRIORITY=args.worker_priority)  # fmt: skip
    argv = [sys.executable, "-m", "bridge", "serve", "--host", LOOPBACK, "--port", str(port),
            "--db", str(db)]  # fmt: skip
    server = start(argv, port, env)
    child = None
    try:
        if watched:
            query = "?severity=critical" if args.filter else ""
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.stream", "--child", str(port), str(args.watchers),
                 str(args.probes), str(args.checks), "plain" if args.plain else "gzip", query],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                preexec_fn=lambda: _lower(args.priority),
            )  # fmt: skip
            assert child.stdout is not None
            assert child.stdin is not None
            if child.stdout.readline().strip() != "ready":
                raise SystemExit("the watchers did not connect")
        procs = [psutil.Process(server.pid)] + ([psutil.Process(child.pid)] if child else [])

        def cpu() -> list[float]:
            """CPU s of the server, its event loop thread, its stream worker process, the
            load client (this process), the watchers' process; the machine's idle
            core-seconds."""
            server_cpu = procs[0].cpu_times()
            worker = 0.0
            for sub in procs[0].children():
                with contextlib.suppress(psutil.Error):
                    times = sub.cpu_times()
                    worker += times.user + times.system
            loop = next(t for t in procs[0].threads() if t.id == server.pid)
            watchers = procs[1].cpu_times() if len(procs) > 1 else None
            return [server_cpu.user + server_cpu.system, loop.user_time + loop.system_time,
                    worker, time.process_time(),
                    watchers.user + watchers.system if watchers else 0.0,
                    psutil.cpu_times().idle]  # fmt: skip

        before = cpu()
        done, _ = await load(port, 1, args.clients, args.seconds)
        used = [b - a for a, b in zip(before, cpu(), strict=True)]
        result: dict[str, Any] = {"rate": done, "events": done * args.seconds, "cpu": used}
        if child is not None:
            assert child.stdin is not None
            assert child.stdout is not None
            time.sleep(1.0)  # let the last events reach the probes (a bound, not a wait)
            child.stdin.close()
            stats = json.loads(child.stdout.readline())
            child.wait(30)
            result.update(stats)
        return result
    finally:
        if child is not None and child.poll() is None:
            child.kill()
        server.terminate()
        server.wait(30)


async def main_async(args: argparse.Namespace) -> None:
    what = "severity=critical (none match)" if args.filter else "every event"
    print(f"-- one-alert notifications of new alerts, {args.clients} clients, {args.seconds:g}s"
          f" a phase; {args.watchers} watchers ({args.probes} parsing), {what};"
          f" {args.rounds} rounds; stream worker at {args.worker_priority} priority")  # fmt: skip
    rates: dict[bool, list[float]] = {False: [], True: []}
    late: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as name:
        for n in range(args.rounds):
            for watched in (False, True) if n % 2 == 0 else (True, False):
                r = await one_round(args, Path(name), watched, n)
                rates[watched].append(r["rate"])
                line = f"round {n + 1}: {'with' if watched else 'without'} watchers:" \
                       f" {r['rate']:6.0f} notifications/s"  # fmt: skip
                served, loop, worker, client, watching, idle = r["cpu"]
                line += (f" (CPU s: server {served:.1f}, its event loop {loop:.1f}, its stream"
                         f" worker {worker:.1f}, load client {client:.1f}, watchers"
                         f" {watching:.1f};"
                         f" idle {idle:.1f} core-s)")  # fmt: skip
                if watched:
                    late += r["late"]
                    counts = r["messages"] or [0]
                    everyone = "every one got all" if len(set(counts)) == 1 else "NOT ALL THE SAME"
                    line += (f"; {len(counts)} decoding watchers got {min(counts)}-{max(counts)}"
                             f" events ({everyone}), p99 delivery"
                             f" {pct(r['late'], 0.99) * 1000:.1f} ms;"
                             f" {sum(r['bytes']) / 1e6:.0f} MB sent")  # fmt: skip
                print(line, flush=True)
    without, with_ = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"ingest median: without watchers {without:.0f}/s, with {args.watchers}"
          f" {with_:.0f}/s: {with_ / without:.0%} (target >= 90%)")  # fmt: skip
    if late:
        print(f"delivery of {len(late)} events to the probes: p50 {pct(late, 0.5) * 1000:.1f} ms,"
              f" p99 {pct(late, 0.99) * 1000:.1f} ms, max {max(late) * 1000:.1f} ms"
              " (target p99 <= 100 ms)")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        port, count, probes, checks = (int(v) for v in sys.argv[2:6])
        gzip, query = sys.argv[6] == "gzip", sys.argv[7] if len(sys.argv) > 7 else ""
        asyncio.run(watchers_child(port, count, probes, checks, query, gzip))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--watchers", type=int, default=200)
    parser.add_argument("--probes", type=int, default=4)
    parser.add_argument("--checks", type=int, default=16, help="watchers that count messages")
    parser.add_argument("--plain", action="store_true", help="no Accept-Encoding: gzip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--filter", action="store_true", help="watchers that match nothing")
    parser.add_argument("--priority", default="idle", choices=("idle", "19", "0"),
                        help="the watchers' process: SCHED_IDLE, or this nice value")  # fmt: skip
    parser.add_argument("--worker-priority", default="idle", choices=("idle", "normal"),
                        help="the bridges' server.stream_priority")  # fmt: skip
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
