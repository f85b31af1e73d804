"""Benchmark: what a busy neighbour process costs the server on this machine.

    .venv/bin/python -m bench.neighbour [--share 0.25] [--rounds 3] [--seconds 8]

Rounds of one-alert notifications (32 clients, as bench.stream) against a fresh `serve`,
alternately alone and beside a process that burns --share of a core in 10 ms slices, at nice
19 and under SCHED_IDLE. It is why bench.stream runs its watchers (stand-ins for browsers on
other machines) under SCHED_IDLE and as idle as they can be: on a 2-core machine, a neighbour
at nice 19 still takes the server's CPU when its two threads (event loop, SQLite writer) would
run on both cores. Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile

from bench.ingest import TOKEN, load, start
from tests.support import LOOPBACK, free_port

BURN = """
import os, sys, time
policy, share = sys.argv[1], float(sys.argv[2])
if policy == "idle":
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
else:
    os.nice(19)
end = time.monotonic() + 600
while time.monotonic() < end:
    began = time.monotonic()
    while time.monotonic() - began < share * 0.01:
        pass
    time.sleep((1 - share) * 0.01)
"""


async def main_async(args: argparse.Namespace) -> None:
    rates: dict[str, list[int]] = {"alone": [], "nice 19": [], "SCHED_IDLE": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALERTBRIDGE_")}
    env.update(ALERTBRIDGE_WEBHOOK_TOKEN=TOKEN, ALERTBRIDGE_API_TOKEN="bench")
    with tempfile.TemporaryDirectory(prefix="bench-neighbour-") as tmp:
        for n in range(args.rounds):
            for case in rates:
                port = free_port()
                db = f"{tmp}/{n}-{case[0]}.db"
                argv = [sys.executable, "-m", "bridge", "serve", "--host", LOOPBACK,
                        "--port", str(port), "--db", db]  # fmt: skip
                server = start(argv, port, env)
                burner = None
                if case != "alone":
                    policy = "idle" if case == "SCHED_IDLE" else "nice"
                    burner = subprocess.Popen([sys.executable, "-c", BURN, policy,
                                               str(args.share)])  # fmt: skip
                try:
                    done, _ = await load(port, 1, 32, args.seconds)
                finally:
                    if burner is not None:
                        burner.kill()
                        burner.wait(10)
                    server.terminate()
                    server.wait(30)
                rates[case].append(done)
                print(f"round {n + 1}: {case:<10} {done:6d} notifications/s", flush=True)
    alone = statistics.median(rates["alone"])
    for case, values in rates.items():
        median = statistics.median(values)
        print(f"{case:<10} median {median:7.0f}/s: {median / alone:.0%} of alone"
              f" (a neighbour burning {args.share:.0%} of a core)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--share", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
