"""`alertbridge rules check`: promtool and amtool judge the generated artefacts."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Receiver, Settings
from bridge.core.expressions import alert_labels
from bridge.core.model import AlertRule, Severity
from bridge.core.policies import (
    LABEL_FALLBACK,
    LABEL_HELD,
    LABEL_LEVEL,
    LABEL_PEOPLE,
    LABEL_POLICY,
    LABEL_ROUND,
    PERSON_RECEIVER,
)
from bridge.generate import (
    ALERTMANAGER_PATH,
    PROMETHEUS_PATH,
    RULES_PATH,
    TEMPLATES_PATH,
    TESTS_PATH,
)
from bridge.generate.alertmanager import (
    NULL_RECEIVER,
    copy_receivers,
    level_receivers,
    people_of_step,
    routed_receivers,
)
from bridge.host.tools import run_tool


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: a name, whether it passed, and the tool's own output."""

    name: str
    ok: bool
    output: str


def _quiet(output: str) -> str:
    # amtool warns that --config.file overrides a URL nobody gave; that is noise.
    lines = [ln for ln in output.splitlines() if "flag overrides the --alertmanager.url" not in ln]
    return "\n".join(lines).strip()


def run_checks(
    settings: Settings, root: Path, routes_of: Collection[str] | None = None
) -> Iterator[CheckResult]:
    """Check the generated tree under `root` for `settings`; yields one result per check.
    `routes_of`: test the routes of these rules only (a change of some rules: the others'
    routes, one per alertname, are the same). The independent tool runs (one amtool a
    route) go on as many at once as there are cores, in the order given."""
    rules = root / RULES_PATH
    run = run_tool("promtool", "check", "rules", str(rules))
    yield CheckResult(f"promtool check rules {RULES_PATH}", run.ok, run.output)
    run = run_tool("promtool", "test", "rules", str(root / TESTS_PATH), timeout=300)
    yield CheckResult(f"promtool test rules {TESTS_PATH}", run.ok, run.output)
    run = run_tool("promtool", "check", "config", str(root / PROMETHEUS_PATH))
    yield CheckResult(f"promtool check config {PROMETHEUS_PATH}", run.ok, run.output)
    am = root / ALERTMANAGER_PATH
    run = run_tool("amtool", "check-config", str(am))
    yield CheckResult(f"amtool check-config {ALERTMANAGER_PATH}", run.ok, _quiet(run.output))
    chosen = [r for r in settings.rules.enabled if routes_of is None or r.name in routes_of]

    def route_test(rule: AlertRule) -> CheckResult:
        expected = routed_receivers(rule, settings.alertmanager, settings.escalation)
        labels = {"alertname": rule.name, **alert_labels(rule)}
        run = run_tool(
            "amtool",
            "config",
            "routes",
            "test",
            f"--config.file={am}",
            f"--verify.receivers={','.join(expected)}",
            *(f"{k}={v}" for k, v in labels.items()),
        )
        return CheckResult(
            f"amtool config routes test {rule.name} -> {','.join(expected)}",
            run.ok,
            _quiet(run.output),
        )

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        yield from pool.map(route_test, chosen)
    yield from _escalation_checks(settings, am)
    yield from _template_checks(root)


SAMPLE = {
    "receiver": "ops", "status": "firing", "externalURL": "http://127.0.0.1:9093",
    "groupLabels": {"alertname": "critical_cpu"},
    "commonLabels": {"alertname": "critical_cpu", "severity": "critical",
                     "escalation_level": "1"},
    "commonAnnotations": {},
    "alerts": [
        {"status": "firing",
         "labels": {"alertname": "critical_cpu", "severity": "critical", "escalation_level": "1",
                    "escalation_policy": "page", "instance": "db-1:9100"},
         "annotations": {"summary": "CPU is saturated on db-1:9100",
                         "description": "system.cpu.percent is 97% on db-1:9100",
                         "runbook_url": "https://wiki.example/cpu",
                         "alertbridge_id": "42", "escalation": "level 1 of page"},
         "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": "0123456789abcdef"},
        {"status": "firing",
         "labels": {"alertname": "disk_full", "severity": "critical", "escalation_level": "0",
                    "escalation_policy": "page", "escalation_people": "alice"},
         "annotations": {"summary": "Disk full on db-3", "alertbridge_id": "43",
                         "escalation": "level 0 of page",
                         "alertbridge_ack_url": "https://bridge.example/ack/43?person=alice"
                                                "&exp=1796634000&sig=00"},
         "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "", "fingerprint": "00000000000000aa"},
        {"status": "firing",
         "labels": {"alertname": "high_cpu", "severity": "warning", "instance": "db-2:9100"},
         "annotations": {"summary": "CPU usage is high on db-2:9100"},
         "startsAt": "2026-11-23T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "", "fingerprint": "fedcba9876543210"},
    ],
}  # fmt: skip
#: What each template must render from SAMPLE.
EXPECTED = {
    "alertbridge.title": ["[FIRING:3] critical_cpu (escalation level 1)"],
    "alertbridge.text": ["CPU is saturated on db-1:9100", "97%", "alertbridge alert 42",
                         "Acknowledge: alertbridge ack 42", "Runbook: https://wiki.example/cpu",
                         "Acknowledge: alertbridge alerts --rule high_cpu",
                         "Acknowledge: https://bridge.example/ack/43?person=alice&exp=1796634000"
                         "&sig=00"],
}  # fmt: skip


def _template_checks(root: Path) -> Iterator[CheckResult]:
    """`amtool template render` of the bridge's templates on sample data."""
    templates = root / TEMPLATES_PATH
    with tempfile.TemporaryDirectory(prefix="alertbridge-tmpl-") as tmp:
        data = Path(tmp) / "sample.json"
        data.write_text(json.dumps(SAMPLE))
        for name, wanted in EXPECTED.items():
            run = run_tool("amtool", "template", "render", f"--template.glob={templates}",
                           f"--template.data={data}",
                           f"--template.text={{{{ template \"{name}\" . }}}}")  # fmt: skip
            missing = [w for w in wanted if w not in run.output]
            output = run.output if not missing else f"missing {missing!r} in:\n{run.output}"
            yield CheckResult(f"amtool template render {name}", run.ok and not missing, output)


def _route_test(am: Path, what: str, expected: list[str], labels: dict[str, str]) -> CheckResult:
    """`amtool config routes test --verify.receivers` of one label set."""
    run = run_tool(
        "amtool", "config", "routes", "test", f"--config.file={am}",
        f"--verify.receivers={','.join(expected)}", *(f"{k}={v}" for k, v in labels.items()),
    )  # fmt: skip
    name = f"amtool config routes test {what} -> {','.join(expected)}"
    return CheckResult(name, run.ok, _quiet(run.output))


def _escalation_checks(settings: Settings, am: Path) -> Iterator[CheckResult]:
    """Each level's copies reach the level's receivers that take their severity, only; a
    copy a receiver's rate limit held back reaches the level's other receivers only."""
    for policy, level, receivers in level_receivers(settings.escalation, settings.alertmanager):
        copy = {"alertname": "any", LABEL_POLICY: policy, LABEL_LEVEL: str(level),
                LABEL_ROUND: "1"}  # fmt: skip
        for severity in Severity:
            yield _route_test(am, f"{policy} level {level} {severity.value}",
                              copy_receivers(receivers, severity),
                              {**copy, "severity": severity.value})  # fmt: skip
        for held in (r for r in receivers if settings.escalation.limit_of(r.name)):
            severity = held.severities[0]
            others = [r for r in receivers if r is not held]
            yield _route_test(am, f"{policy} level {level} held from {held.name}",
                              copy_receivers(others, severity),
                              {**copy, "severity": severity.value,
                               LABEL_HELD: held.name})  # fmt: skip
        yield from _people_checks(settings, am, policy, level, receivers, copy)


def _people_checks(
    settings: Settings,
    am: Path,
    policy: str,
    level: int,
    receivers: list[Receiver],
    copy: dict[str, str],
) -> Iterator[CheckResult]:
    """A copy paging a person reaches the level's receivers and that person's receiver
    (no one else's); one marked for the fallback, the policy's fallback receivers too."""
    escalation = settings.escalation
    found = escalation.policy(policy)
    if found is None:
        return
    step = [s for s in found.steps if s.kind == "notify"][level]
    critical = Severity.CRITICAL
    level_names = [r.name for r in receivers if critical in r.severities]
    for person in people_of_step(escalation, step):
        expected = [*level_names, PERSON_RECEIVER.format(person)]
        yield _route_test(am, f"{policy} level {level} paging {person}", expected,
                          {**copy, "severity": critical.value, LABEL_PEOPLE: person})  # fmt: skip
    fallback = found.fallback if step.schedules else ()
    if fallback:
        by_name = {r.name: r for r in settings.alertmanager.receivers}
        extra = [n for n in fallback if n not in step.receivers
                 and critical in by_name[n].severities]  # fmt: skip
        expected = [*level_names, *extra] or [NULL_RECEIVER]
        yield _route_test(am, f"{policy} level {level} nobody on call", expected,
                          {**copy, "severity": critical.value, LABEL_FALLBACK: "true"})  # fmt: skip
