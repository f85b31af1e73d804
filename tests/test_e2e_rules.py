"""Rules changed while running, end to end on the Debian `prometheus` (with
--web.enable-lifecycle) and `prometheus-alertmanager`: a rule added with `alertbridge rules
add` fires through Alertmanager into the bridge once its metric crosses; its threshold
changed, it resolves without a restart; set back, it fires again; deleted, it resolves and
Prometheus no longer has it. A rule promtool refuses leaves every file as it was; a reload
Prometheus refuses (no lifecycle API) puts the previous files back."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main
from tests.support import (
    LOOPBACK,
    PUSH_TELEMETRY,
    bridge_env,
    free_port,
    generate_stack,
    http_json,
    prom_query,
    running,
    scraped,
    stack_config,
    start_alertmanager,
    start_bridge,
    start_prometheus,
    wait_for,
)

pytestmark = pytest.mark.e2e

API, HOOK = "e2e-api", "e2e-hook"
CONFIG = stack_config(rest=PUSH_TELEMETRY + 'managed_rules:\n  output: "{gen}"\n')


@dataclass
class Stack:
    base: str
    prometheus: str
    gen: Path
    am: str = ""


@contextmanager
def rules_stack(tmp_path: Path, lifecycle: bool = True) -> Iterator[Stack]:
    bridge_port, am_port, prom_port = free_port(), free_port(), free_port()
    gen = tmp_path / "gen"
    config, _ = generate_stack(tmp_path, CONFIG, HOOK, loop=LOOPBACK, bridge=bridge_port,
                               am=am_port, gen=gen)  # fmt: skip
    prometheus = f"http://{LOOPBACK}:{prom_port}"
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK,
                     ALERTBRIDGE_PROMETHEUS_URL=prometheus)  # fmt: skip
    # (resend delay 5 s, not 1 m: for 5 s after a reload Prometheus has no Alertmanager to
    # send to and what it sends is lost; it sends firing alerts again at this delay)
    extra = ["--rules.alert.resend-delay=5s", *(["--web.enable-lifecycle"] if lifecycle else [])]
    with (
        running(start_alertmanager(tmp_path, gen / "alertmanager/alertmanager.yml", am_port)),
        running(start_prometheus(tmp_path, gen / "prometheus/prometheus.yml", prom_port, extra)),
        running(start_bridge(tmp_path, bridge_port, env, config)),
    ):
        yield Stack(
            f"http://{LOOPBACK}:{bridge_port}", prometheus, gen, f"http://{LOOPBACK}:{am_port}"
        )


def cli(stack: Stack, *args: str) -> str:
    result = CliRunner(env={"ALERTBRIDGE_API_TOKEN": API}).invoke(
        main, ["rules", *args, "--url", stack.base]
    )
    assert result.exit_code == 0, result.output
    return result.output


def busy(stack: Stack) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"rule": "busy"})
    status, body = http_json(f"{stack.base}/api/v1/alerts?{query}", token=API)
    assert status == 200, body
    alerts: list[dict[str, Any]] = body["alerts"]
    return alerts[::-1]  # oldest first


def prometheus_rules(stack: Stack) -> list[str]:
    body = http_json(f"{stack.prometheus}/api/v1/rules")[1]
    return [r["name"] for g in body["data"]["groups"] for r in g["rules"]]


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}  # fmt: skip


def test_a_rule_added_changed_and_deleted_over_the_cli_takes_effect_without_a_restart(
    tmp_path: Path,
) -> None:
    with rules_stack(tmp_path) as stack:
        http_json(f"{stack.base}/api/v1/telemetry", {"cpu_usage_ratio": 0.5}, API)
        said = cli(stack, "add", "busy", "--metric", "system.cpu.percent", "--condition", ">",
                   "--threshold", "40", "--severity", "warning", "--for", "0s")  # fmt: skip
        assert said.startswith("version 2: created busy")
        assert f"reloaded: {stack.prometheus}/-/reload" in said
        assert "busy" in prometheus_rules(stack)  # reloaded: Prometheus has it at once
        (first,) = wait_for("busy fired through Alertmanager", lambda: busy(stack), 60)
        assert first["status"] == "firing"
        assert first["source"] == "alertmanager"
        assert first["labels"]["metric"] == "system.cpu.percent"

        cli(stack, "edit", "busy", "--set", "threshold=60")
        wait_for("busy resolved at 60 %",
                 lambda: [a for a in busy(stack) if a["status"] == "resolved"], 60)  # fmt: skip
        cli(stack, "edit", "busy", "--set", "threshold=40")
        wait_for("busy fired again at 40 %", lambda: len(busy(stack)) == 2, 60)

        resolved_by_us = scraped(stack.base, "alertbridge_rules_resolved_after_change")
        said = cli(stack, "rm", "busy")
        assert said.startswith("version 5: deleted busy")
        assert "busy" not in prometheus_rules(stack)
        wait_for("busy resolved once deleted",
                 lambda: all(a["status"] == "resolved" for a in busy(stack)), 60)  # fmt: skip
        # Prometheus never resolves the alert of a rule it no longer has: the bridge did
        after = scraped(stack.base, "alertbridge_rules_resolved_after_change")
        assert after == resolved_by_us + 1
        history = cli(stack, "history")
        rows = [line.split() for line in history.splitlines()[1:] if line[:1].isdigit()]
        assert [row[3] for row in rows] == [
            "deleted", "updated", "updated", "created", "seeded"]  # fmt: skip


def test_what_promtool_or_prometheus_refuses_leaves_the_files_as_they_were(
    tmp_path: Path,
) -> None:
    """Prometheus started without its lifecycle API: a change promtool accepts is written,
    refused at the reload (403), and the previous files are written back; a change promtool
    refuses is never written. Nothing is recorded either time."""
    with rules_stack(tmp_path, lifecycle=False) as stack:
        before = files(stack.gen)
        bad = {"name": "broken", "metric": "x", "expr": "rate(x[5m) > 1", "condition": ">",
               "threshold": 1, "severity": "warning"}  # fmt: skip
        status, body = http_json(f"{stack.base}/api/v1/rules", bad, API)
        assert (status, body["error"]) == (400, "checks_failed"), body
        assert files(stack.gen) == before
        status, body = http_json(f"{stack.base}/api/v1/rules/high_cpu", {"threshold": 70}, API,
                                 method="PATCH")  # fmt: skip
        assert (status, body["error"]) == (502, "reload_failed"), body
        assert "HTTP 403" in body["message"]
        assert "--web.enable-lifecycle" in body["message"]
        assert "the previous files are back" in body["message"]
        assert files(stack.gen) == before
        assert http_json(f"{stack.base}/api/v1/rules/history", token=API)[1]["versions"] == []
        shown = http_json(f"{stack.base}/api/v1/rules/high_cpu", token=API)[1]
        assert shown["rule"]["threshold"] == 80


METRICS = stack_config(
    rules="  - {{name: queue_backlog, metric: queue_depth, condition: '>', threshold: 100,"
          " severity: warning, for: 0s}}\n",
    rest=PUSH_TELEMETRY + "metrics:\n  - {{name: queue_depth, type: gauge, help: Jobs waiting,"
         " labels: [queue]}}\n",
)  # fmt: skip


def test_a_declared_metric_pushed_by_name_is_scraped_and_alerted_on(tmp_path: Path) -> None:
    """`metrics:` declares queue_depth; the application pushes it by name; the real
    Prometheus scrapes it (with the sample's labels) and evaluates the rule written for it
    (per job and instance, as the built-in rules); the alert reaches the bridge through
    Alertmanager."""
    bridge_port, am_port, prom_port = free_port(), free_port(), free_port()
    config, gen = generate_stack(tmp_path, METRICS, HOOK, loop=LOOPBACK, bridge=bridge_port,
                                 am=am_port)  # fmt: skip
    base = f"http://{LOOPBACK}:{bridge_port}"
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)
    with (
        running(start_alertmanager(tmp_path, gen / "alertmanager/alertmanager.yml", am_port)),
        running(start_prometheus(tmp_path, gen / "prometheus/prometheus.yml", prom_port)),
        running(start_bridge(tmp_path, bridge_port, env, config)),
    ):
        sample = {"name": "queue_depth", "value": 150, "labels": {"queue": "mail"}}
        status, body = http_json(f"{base}/api/v1/telemetry", {"metrics": [sample]}, API)
        assert status == 200, body
        prometheus = f"http://{LOOPBACK}:{prom_port}"

        def scraped_by_prometheus() -> list[dict[str, Any]]:
            return prom_query(prometheus, 'telemetry_queue_depth{queue="mail"}')

        (series,) = wait_for("queue_depth scraped", scraped_by_prometheus, 60)
        assert series["value"][1] == "150"

        def stored() -> list[dict[str, Any]]:
            query = urllib.parse.urlencode({"rule": "queue_backlog"})
            alerts: list[dict[str, Any]] = http_json(f"{base}/api/v1/alerts?{query}",
                                                     token=API)[1]["alerts"]  # fmt: skip
            return alerts

        (alert,) = wait_for("queue_backlog through Alertmanager", stored, 60)
        assert alert["source"] == "alertmanager"
        assert (alert["labels"]["metric"], alert["severity"]) == ("queue_depth", "warning")


def _windows_config() -> str:
    """Three rules on one condition: open every day, open but 3 s later (the control), and
    closed today and tomorrow (UTC)."""
    import datetime as dt

    today = dt.datetime.now(dt.UTC).weekday()
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    closed = [names[d] for d in range(7) if d not in (today, (today + 1) % 7)]
    always = "{{timezone: UTC, hours: '00:00-24:00'}}"
    rule = ("  - {{{{name: {name}, metric: system.cpu.percent, condition: '>', threshold: 40,"
            " severity: warning, for: {wait}, when: {when}}}}}\n")  # fmt: skip
    rules = (rule.format(name="open_rule", wait="0s", when=always)
             + rule.format(name="later_rule", wait="3s", when=always)
             + rule.format(name="closed_rule", wait="0s",
                           when=f"{{{{timezone: UTC, days: [{', '.join(closed)}]}}}}"))  # fmt: skip
    return stack_config(rules=rules, rest=PUSH_TELEMETRY)


def test_a_rule_outside_its_window_fires_in_prometheus_and_is_held_by_alertmanager(
    tmp_path: Path,
) -> None:
    """The real Alertmanager, configured by `rules generate`: the rule whose window is open
    reaches the bridge; the one whose window is closed fires in Prometheus and is active in
    Alertmanager, yet never reaches the bridge (a rule 3 s later reaching it shows that
    Alertmanager flushed its groups meanwhile)."""
    bridge_port, am_port, prom_port = free_port(), free_port(), free_port()
    config, gen = generate_stack(tmp_path, _windows_config(), HOOK, loop=LOOPBACK,
                                 bridge=bridge_port, am=am_port)  # fmt: skip
    base, am = f"http://{LOOPBACK}:{bridge_port}", f"http://{LOOPBACK}:{am_port}"
    env = bridge_env(ALERTBRIDGE_API_TOKEN=API, ALERTBRIDGE_WEBHOOK_TOKEN=HOOK)
    with (
        running(start_alertmanager(tmp_path, gen / "alertmanager/alertmanager.yml", am_port)),
        running(start_prometheus(tmp_path, gen / "prometheus/prometheus.yml", prom_port)),
        running(start_bridge(tmp_path, bridge_port, env, config)),
    ):
        http_json(f"{base}/api/v1/telemetry", {"cpu_usage_ratio": 0.5}, API)

        def stored(rule: str) -> list[dict[str, Any]]:
            query = urllib.parse.urlencode({"rule": rule})
            found: list[dict[str, Any]] = http_json(f"{base}/api/v1/alerts?{query}",
                                                    token=API)[1]["alerts"]  # fmt: skip
            return found

        def in_alertmanager(rule: str) -> list[dict[str, Any]]:
            query = urllib.parse.urlencode({"filter": f'alertname="{rule}"'})
            found: list[dict[str, Any]] = http_json(f"{am}/api/v2/alerts?{query}")[1]
            return found

        wait_for("open_rule stored", lambda: stored("open_rule"), 60)
        wait_for("closed_rule active in Alertmanager", lambda: in_alertmanager("closed_rule"), 60)
        rounds = scraped(base, "alertbridge_reconcile_rounds_total", outcome="trusted") + scraped(
            base, "alertbridge_reconcile_rounds_total", outcome="untrusted")  # fmt: skip
        wait_for("later_rule stored (the control)", lambda: stored("later_rule"), 60)
        wait_for("two reconciler rounds since", lambda: sum(
            scraped(base, "alertbridge_reconcile_rounds_total", outcome=o)
            for o in ("trusted", "untrusted")) >= rounds + 2, 30)  # fmt: skip
        assert stored("closed_rule") == []  # neither by the webhook nor by the reconciler
