"""Benchmark: rules changed while running (issue 33).

    .venv/bin/python -m bench.rules [--changes 20] [--rules 1000] [--skip-stack]

1. **A change, end to end**: the real Prometheus (with --web.enable-lifecycle, evaluating
   every second) and Alertmanager, and `alertbridge serve` writing into their directory, as
   `dev` runs them. --changes times, the threshold of a rule is changed over the API; each
   time is measured from the API call to Prometheus having evaluated the new rule (its
   /api/v1/rules shows the new expression, evaluated after the call), with the API answer's
   own time (checks, files, reloads) beside. Baseline, in the same run: the same change by
   hand as before issue 33 (the configuration edited, `alertbridge rules generate`, `rules
   check`, POST /-/reload to both), timed to the same point. Target: p99 at most 2 s.
2. **A big rule set**: `rules generate` then `rules check` of --rules rules (custom `expr`
   rules, each with labels and annotations), each in its own process: seconds and peak RSS
   (of the process and of the promtool/amtool children); then one of them changed over the
   API of a bridge holding them all (its checks test the changed rule's route only).

Prints every figure; asserts nothing. Loopback only; every loop bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bridge.generate import ALERTMANAGER_PATH, PROMETHEUS_PATH
from bridge.host.tools import find_tool
from tests.support import (
    LOOPBACK,
    bridge_env,
    free_port,
    generate_stack,
    http_json,
    running,
    stack_config,
    start_alertmanager,
    start_bridge,
    start_prometheus,
)

API, HOOK = "bench-api", "bench-hook"


def _prometheus_rule(prometheus: str, name: str) -> tuple[str, float]:
    """The expression Prometheus evaluates for rule `name` and its group's last evaluation
    (epoch seconds)."""
    from bridge.core.times import parse_rfc3339

    body = http_json(f"{prometheus}/api/v1/rules")[1]
    for group in body["data"]["groups"]:
        for rule in group["rules"]:
            if rule["name"] == name:
                when = parse_rfc3339(group["lastEvaluation"]) or 0
                return rule["query"], when / 1e9
    return "", 0.0


def _until_evaluated(prometheus: str, name: str, wanted: str, since: float) -> float:
    """Seconds from `since` until Prometheus evaluated rule `name` as `wanted` (bounded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        query, evaluated = _prometheus_rule(prometheus, name)
        if wanted in query and evaluated > since:
            return time.time() - since
        time.sleep(0.02)
    raise SystemExit(f"Prometheus did not evaluate {name} {wanted!r} within 30 s")


def _reload(url: str) -> None:
    request = urllib.request.Request(url + "/-/reload", data=b"", method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30):  # noqa: S310 - loopback
        pass


def _cli(config: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "bridge", "--config", str(config), *args],
                   check=True, capture_output=True)  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def end_to_end(changes: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-rules-"))
    bridge_port, am_port, prom_port = free_port(), free_port(), free_port()
    gen = tmp / "gen"
    template = stack_config(rest='managed_rules:\n  output: "{gen}"\n')
    config, _ = generate_stack(tmp, template, HOOK, loop=LOOPBACK, bridge=bridge_port,
                               am=am_port, gen=gen)  # fmt: skip
    prometheus = f"http://{LOOPBACK}:{prom_port}"
    am = f"http://{LOOPBACK}:{am_port}"
    base = f"http://{LOOPBACK}:{bridge_port}"
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK,
                     ALERTBRIDGE_PROMETHEUS_URL=prometheus)  # fmt: skip
    with (
        running(start_alertmanager(tmp, gen / ALERTMANAGER_PATH, am_port)),
        running(
            start_prometheus(tmp, gen / PROMETHEUS_PATH, prom_port, ["--web.enable-lifecycle"])
        ),  # fmt: skip
        running(start_bridge(tmp, bridge_port, env, config)),
    ):
        api: list[float] = []
        total: list[float] = []
        for i in range(changes):
            threshold = 50 + i % 40  # a new value each time (a change, never "unchanged")
            begun = time.time()
            status, body = http_json(f"{base}/api/v1/rules/high_cpu",
                                     {"threshold": threshold}, API, method="PATCH")  # fmt: skip
            if status != 200 or not body.get("changed"):
                raise SystemExit(f"the change failed: {status} {body}")
            api.append(time.time() - begun)
            total.append(_until_evaluated(prometheus, "high_cpu", f"> {threshold / 100:g}",
                                          begun))  # fmt: skip
        by_hand: list[float] = []
        text = config.read_text()
        for i in range(max(3, changes // 4)):  # slower: fewer rounds
            threshold = 10 + i
            edited = text + f"rules:\n  - {{name: critical_cpu, threshold: {threshold}}}\n"
            begun = time.time()
            config.write_text(edited)
            _cli(config, "rules", "generate", "--out", str(gen))
            _cli(config, "rules", "check", "--dir", str(gen))
            _reload(prometheus)
            _reload(am)
            by_hand.append(_until_evaluated(prometheus, "critical_cpu",
                                            f"> {threshold / 100:g}", begun))  # fmt: skip
    print(f"a change over the API, call -> Prometheus evaluating it ({changes} changes):")
    print(
        f"  API answer (checks, files, reloads): p50 {statistics.median(api):.2f} s,"
        f" p99 {_pct(api, 0.99):.2f} s"
    )
    print(
        f"  until evaluated:                     p50 {statistics.median(total):.2f} s,"
        f" p99 {_pct(total, 0.99):.2f} s   (target p99 <= 2 s)"
    )
    print(
        f"baseline, by hand (edit, rules generate, rules check, reload; {len(by_hand)}"
        f" changes): p50 {statistics.median(by_hand):.2f} s,"
        f" p99 {_pct(by_hand, 0.99):.2f} s"
    )


def _many_rules(count: int) -> str:
    lines = ["rules:"]
    for i in range(count):
        lines.append(
            f"  - {{name: custom_{i:04d}, metric: custom.m{i}, expr: 'sum by (job, instance)"
            f" (custom_metric_{i})', condition: '>', threshold: {i}, severity: warning,"
            f" for: 1m, labels: {{team: t{i % 10}}}, annotations: {{runbook_url:"
            f" 'https://wiki.example/{i}'}}}}"
        )
    return "\n".join(lines) + "\n"


def big_rule_set(count: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-rules-big-"))
    config = tmp / "alertbridge.yml"
    config.write_text(_many_rules(count))
    out = tmp / "gen"
    figures: dict[str, Any] = {}
    for name, args in (("generate", ["rules", "generate", "--out", str(out)]),
                       ("check", ["rules", "check", "--dir", str(out)])):  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        begun = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "bridge", "--config", str(config), *args],
                              capture_output=True, text=True, check=False)  # fmt: skip
        took = time.perf_counter() - begun
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        figures[name] = (took, after.ru_maxrss / 1024, proc.returncode,
                         before.ru_maxrss / 1024)  # fmt: skip
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
    port = free_port()
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API)
    answers = []
    with running(start_bridge(tmp, port, env, config)):
        for i in range(3):
            begun = time.perf_counter()
            status, body = http_json(f"http://{LOOPBACK}:{port}/api/v1/rules/custom_0007",
                                     {"threshold": 100 + i}, API, method="PATCH")  # fmt: skip
            answers.append(time.perf_counter() - begun)
            if status != 200:
                raise SystemExit(f"the change failed: {status} {body}")
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{count} rules (generated files {size / 1e6:.1f} MB):")
    for name, (took, rss, code, _) in figures.items():
        print(
            f"  rules {name}: {took:.1f} s, peak RSS of the largest process {rss:.0f} MiB,"
            f" exit {code}"
        )
    print(
        f"  one of them changed over the API (its checks included): median"
        f" {statistics.median(answers):.2f} s of {len(answers)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--skip-stack", action="store_true")
    args = parser.parse_args()
    find_tool("prometheus")
    os.environ.pop("ALERTBRIDGE_CONFIG", None)
    if not args.skip_stack:
        end_to_end(max(1, min(args.changes, 200)))
    big_rule_set(max(1, min(args.rules, 20_000)))
    print(json.dumps({"python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
