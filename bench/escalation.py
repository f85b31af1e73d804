"""Benchmark: 10,000 unacknowledged alerts escalating under a policy with short waits, and
ingestion beside them, against the same bridge without escalation.

    .venv/bin/python -m bench.escalation [--alerts 10000] [--rounds 5] [--clients 32]
                                         [--wait 10] [--seconds 10] [--burst]

Each round starts, in turn, two `alertbridge serve` processes on fresh databases, each with
a fresh real Alertmanager (the Debian binary, on a free loopback port, routing everything to
a receiver with no integrations): one without escalation policies (the baseline), one whose
policy every alert gets: level 0, wait, level 1, wait, level 2, wait, repeated from the
start 10 times (--wait seconds each: a step per alert every --wait seconds, 1,000 steps/s
at the defaults; CPU seconds of a bridge include its escalation worker process). Both
bridges get the same load, as Alertmanager would send it, over
--clients connections:

1. start: --alerts new alerts, one per notification, spread evenly over --wait seconds (with
   escalation, each starts its policy at once, so that from then on a step is due for an
   alert every --wait / --alerts seconds); with --burst, as fast as the bridge takes them
   instead (level 0 of every alert at once: the worst case), its rate compared;
2. steady: for --seconds, while the escalation of those alerts runs, the same alerts sent
   again with a new value (what Alertmanager re-sends every repeat_interval: the common
   traffic); the ingest rate of each bridge is compared (target: with >= 90% of without).

Each step's lateness is read back from the database: the `escalated` event's time minus the
copy's startsAt, which is the step's due time (level 0 is due when the alert was stored).
Target: p99 at most 1 s. CPU seconds of the bridge and of Alertmanager are shown per phase.

--schedules N (issue 32): N on-call schedules (of 100 people, each a rotation of three with
hourly shifts and a weekday-hours layer above it); each level of the policy pages
--per-step of them besides its receiver, resolved when the step is taken. The lateness is
then that of steps that page people; the time to resolve one schedule is also measured in
this process, over the same schedules (target: at most 1 ms a step).
Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.ingest import TOKEN, payload, send, start
from bridge.core.times import NS
from tests.support import LOOPBACK, Proc, free_port, start_alertmanager

AM_CONFIG = """
route:
  receiver: nowhere
  group_by: ['...']
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 4h
receivers:
  - name: nowhere
"""

BRIDGE_CONFIG = """
alertmanager:
  url: "http://{loop}:{am}"
  receivers:
    - {{name: level-0, type: webhook, severities: [warning, critical],
        config: {{url: "http://{loop}:9/0"}}}}
    - {{name: level-1, type: webhook, severities: [warning, critical],
        config: {{url: "http://{loop}:9/1"}}}}
    - {{name: level-2, type: webhook, severities: [warning, critical],
        config: {{url: "http://{loop}:9/2"}}}}
"""
POLICY = """
escalation:
  policies:
    - name: fast
      steps:
        - notify: [level-0{paged0}]
        - wait: {wait}s
        - notify: [level-1{paged1}]
        - wait: {wait}s
        - notify: [level-2{paged2}]
        - wait: {wait}s
        - repeat: 10
  routes:
    - {{policy: fast}}
"""
PEOPLE = 100


def oncall_yaml(schedules: int) -> str:
    """PEOPLE people (webhooks to a closed port) and `schedules` schedules: a rotation of
    three with hourly shifts (begun yesterday), a weekday-hours layer of one above it."""
    lines = ["people:"]
    lines += [f'  p{n}: {{contacts: [{{type: webhook, config: {{url: "http://{LOOPBACK}:9/p"}}}}]}}'
              for n in range(PEOPLE)]  # fmt: skip
    lines.append("schedules:")
    start = 'start: "2026-12-01T00:00"'
    weekdays = '[{days: [mon, tue, wed, thu, fri], hours: "09:00-18:00"}]'
    for n in range(schedules):
        trio = ", ".join(f"p{(n + k) % PEOPLE}" for k in range(3))
        lines += [f"  s{n}:", "    timezone: Europe/Paris", "    layers:",
                  f"      - rotation: {{participants: [{trio}], shift: 1h, {start}}}",
                  f"      - rotation: {{participants: [p{(n + 5) % PEOPLE}], shift: 1w, {start}}}",
                  f"        restrict: {weekdays}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def paged(args: argparse.Namespace, level: int) -> str:
    if not args.schedules:
        return ""
    first = level * args.per_step
    return "".join(f", {{schedule: s{(first + k) % args.schedules}}}" for k in range(args.per_step))


def resolution(args: argparse.Namespace) -> None:
    """The time to resolve who is on call in one schedule, as a step does, in this
    process over the same schedules."""
    from bridge.config import load_settings

    with tempfile.TemporaryDirectory(prefix="bench-oncall-") as tmp:
        path = Path(tmp) / "c.yml"
        path.write_text(oncall_yaml(args.schedules))
        schedules = list(load_settings(path, {}).oncall.schedules.values())
    now = time.time_ns()
    calls = 10_000
    began = time.perf_counter()
    for n in range(calls):  # bounded: calls
        schedules[n % len(schedules)].who(now + n * 60 * NS)
    each = (time.perf_counter() - began) / calls
    print(
        f"resolving who is on call: {each * 1e6:.1f} us a schedule over {len(schedules)}"
        f" schedules ({args.per_step} a step: {each * args.per_step * 1e3:.3f} ms a step;"
        " target at most 1 ms)"
    )


def alertmanager(tmp: Path) -> tuple[str, Proc]:
    """A fresh Alertmanager (the tests' start_alertmanager) with AM_CONFIG; its URL."""
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = tmp / "alertmanager.yml"
    config.write_text(AM_CONFIG)
    return f"http://{LOOPBACK}:{port}", start_alertmanager(tmp, config, port)


def steps_taken(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT count(*) FROM events WHERE kind = 'escalated'").fetchone()
        return int(row[0])
    except sqlite3.OperationalError:  # not migrated yet
        return 0
    finally:
        conn.close()


def lateness(db: Path) -> list[float]:
    """Seconds each step was taken after its due time."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")  # one snapshot: the server may still be writing
        due: dict[tuple[int, int, int], int] = {}
        for alert_id, copies in conn.execute("SELECT alert_id, copies FROM escalations"):
            for copy in json.loads(copies):
                due[(alert_id, copy["level"], copy["round"])] = copy["starts_at"]
        out = []
        sql = "SELECT alert_id, at, detail FROM events WHERE kind = 'escalated'"
        for alert_id, at, detail in conn.execute(sql):
            # "level 1: level-1" or "level 1: level-1 (round 2)"
            level = int(detail.split(":")[0].split()[1])
            rnd = int(detail.rsplit("(round ", 1)[1].rstrip(")")) if "(round " in detail else 1
            out.append((at - due[(alert_id, level, rnd)]) / NS)
        return out
    finally:
        conn.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Round:
    burst: float  # alerts/s ingested, new alerts
    steady: float  # alerts/s ingested, repeats while the escalations run
    late: list[float]  # lateness of every step, seconds
    steps: int  # steps taken during the steady phase
    cpu: dict[str, tuple[float, float, float]]  # phase -> CPU s of bridge, AM, load client


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def one_round(args: argparse.Namespace, tmp: Path, escalate: bool, round_no: int) -> Round:
    name = f"{'with' if escalate else 'without'}-{round_no}"
    am, am_proc = alertmanager(tmp / name)
    port = free_port()
    db = tmp / f"{name}.db"
    config = tmp / f"{name}.yml"
    text = BRIDGE_CONFIG.format(loop=LOOPBACK, am=am.rsplit(":", 1)[1])
    if escalate:
        text += POLICY.format(wait=args.wait, paged0=paged(args, 0), paged1=paged(args, 1),
                              paged2=paged(args, 2))  # fmt: skip
        if args.schedules:
            text += oncall_yaml(args.schedules)
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env["ALERTBRIDGE_WEBHOOK_TOKEN"] = TOKEN
    argv = [sys.executable, "-m", "bridge", "--config", str(config), "serve", "--host",
            LOOPBACK, "--port", str(port), "--db", str(db)]  # fmt: skip
    proc = start(argv, port, env)
    processes = psutil.Process(proc.pid), psutil.Process(am_proc.popen.pid)
    cpu: dict[str, tuple[float, float, float]] = {}

    def mark() -> tuple[float, float, float]:
        """CPU seconds of the bridge (its escalation worker process included), of AM and of
        this process (the load client)."""
        bridge = _cpu(processes[0])
        for child in processes[0].children(recursive=True):
            with contextlib.suppress(psutil.Error):
                bridge += _cpu(child)
        return bridge, _cpu(processes[1]), time.process_time()

    try:
        # Fixed fingerprints and startsAt (repeat groups): the steady phase re-sends them.
        bodies = [payload(1, group) for group in range(args.alerts)]
        before = mark()
        began = time.monotonic()
        if args.burst:
            await send(port, bodies, args.clients, 600)
        else:  # a second's share at the start of each second (bounded: --wait rounds)
            share = -(-len(bodies) // args.wait)
            for second in range(args.wait):
                await send(port, bodies[second * share : (second + 1) * share], args.clients, 60)
                left = began + second + 1 - time.monotonic()
                if left > 0:
                    await asyncio.sleep(left)  # pacing the load, not waiting for an event
        burst = args.alerts / (time.monotonic() - began)
        after = mark()
        cpu["burst"] = (after[0] - before[0], after[1] - before[1], after[2] - before[2])
        steps_before = steps_taken(db)
        # More than --seconds can take: the phase ends on time, not on running out.
        again = [payload(1, n % args.alerts, n % 100) for n in range(args.alerts * 30)]
        done, _ = await send(port, again, args.clients, args.seconds)
        steady = float(done)
        steps = steps_taken(db) - steps_before
        end = mark()
        cpu["steady"] = (end[0] - after[0], end[1] - after[1], end[2] - after[2])
        return Round(burst, steady, lateness(db) if escalate else [], steps, cpu)
    finally:
        proc.terminate()
        proc.wait(30)
        am_proc.stop()


async def main_async(args: argparse.Namespace) -> None:
    rounds: dict[bool, list[Round]] = {False: [], True: []}
    start = "as fast as taken" if args.burst else f"spread over {args.wait}s"
    print(f"-- {args.alerts} alerts ({start}), one per notification, {args.clients} clients;"
          f" policy: a level every {args.wait}s, repeated (~{args.alerts / args.wait:.0f}"
          f" steps/s); steady phase {args.seconds:g}s; {args.rounds} rounds")  # fmt: skip
    if args.schedules:
        print(f"-- {args.schedules} on-call schedules, {args.per_step} paged by each step")
        resolution(args)
    with tempfile.TemporaryDirectory(prefix="bench-escalation-") as name:
        for round_no in range(args.rounds):
            order = (False, True) if round_no % 2 == 0 else (True, False)
            for escalate in order:
                done = await one_round(args, Path(name), escalate, round_no)
                rounds[escalate].append(done)
                what = "with escalation   " if escalate else "without escalation"
                (bb, ba, _), (sb, sa, sc) = done.cpu["burst"], done.cpu["steady"]
                line = (f"round {round_no + 1}: {what} start {done.burst:6.0f} alerts/s"
                        f" (CPU s bridge {bb:4.1f}, AM {ba:4.1f}), steady {done.steady:6.0f}"
                        f" alerts/s (CPU s bridge {sb:4.1f}, AM {sa:4.1f},"
                        f" load client {sc:4.1f})")  # fmt: skip
                if escalate:
                    line += (f"; {done.steps} steps in the steady phase,"
                             f" p99 lateness {pct(done.late, 0.99):.3f} s")  # fmt: skip
                print(line)
    for phase in ("burst", "steady") if args.burst else ("steady",):
        without = statistics.median(getattr(r, phase) for r in rounds[False])
        with_ = statistics.median(getattr(r, phase) for r in rounds[True])
        target = " (target >= 90%)" if phase == "steady" else ""
        print(f"{phase} ingest median: without {without:.0f} alerts/s, with escalation"
              f" {with_:.0f} alerts/s: {with_ / without:.0%}{target}")  # fmt: skip
    every = [v for r in rounds[True] for v in r.late]
    print(f"all steps: {len(every)}, lateness p50 {pct(every, 0.5):.3f} s, p99"
          f" {pct(every, 0.99):.3f} s, max {max(every):.3f} s (target p99 <= 1 s)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--wait", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    worst = "send the first alerts as fast as possible (the worst case)"
    parser.add_argument("--burst", action="store_true", help=worst)
    parser.add_argument(
        "--schedules",
        type=int,
        default=0,
        help="on-call schedules defined; each step pages --per-step of them",
    )
    parser.add_argument("--per-step", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
