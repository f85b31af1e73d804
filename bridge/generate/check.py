"""`alertbridge rules check`: promtool and amtool judge the generated artefacts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Settings
from bridge.core.expressions import alert_labels
from bridge.core.model import Severity
from bridge.core.policies import LABEL_LEVEL, LABEL_POLICY, LABEL_ROUND
from bridge.core.tools import run_tool
from bridge.generate import ALERTMANAGER_PATH, PROMETHEUS_PATH, RULES_PATH, TESTS_PATH
from bridge.generate.alertmanager import copy_receivers, level_receivers, routed_receivers


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


def run_checks(settings: Settings, root: Path) -> Iterator[CheckResult]:
    """Check the generated tree under `root` for `settings`; yields one result per check."""
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
    for rule in settings.rules.enabled:
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
        yield CheckResult(
            f"amtool config routes test {rule.name} -> {','.join(expected)}",
            run.ok,
            _quiet(run.output),
        )
    yield from _escalation_checks(settings, am)


def _escalation_checks(settings: Settings, am: Path) -> Iterator[CheckResult]:
    """Each level's copies reach the level's receivers that take their severity, only."""
    for policy, level, receivers in level_receivers(settings.escalation, settings.alertmanager):
        for severity in Severity:
            expected = copy_receivers(receivers, severity)
            labels = {"alertname": "any", "severity": severity.value,
                      LABEL_POLICY: policy, LABEL_LEVEL: str(level), LABEL_ROUND: "1"}  # fmt: skip
            run = run_tool(
                "amtool", "config", "routes", "test", f"--config.file={am}",
                f"--verify.receivers={','.join(expected)}",
                *(f"{k}={v}" for k, v in labels.items()),
            )  # fmt: skip
            yield CheckResult(
                f"amtool config routes test {policy} level {level} {severity.value}"
                f" -> {','.join(expected)}",
                run.ok,
                _quiet(run.output),
            )
