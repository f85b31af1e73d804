"""`rules test` (bridge.generate.ruletest): when a rule would go pending and fire on given
series, with which labels and annotations, as promtool evaluates the generated rule; from
the CLI and the API."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from bridge.cli import main
from bridge.config import Secret, load_settings
from bridge.core.errors import InvalidInput
from bridge.core.rules import RuleSet
from bridge.generate.ruletest import timeline_of
from bridge.http.app import create_app

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
API = {"Authorization": "Bearer api-secret"}
CPU = 'telemetry_system_cpu_usage_ratio{job="app", instance="a:1"}'


def test_pending_firing_and_resolved_as_promtool_evaluates_them() -> None:
    """0.9 from 1m to 9m against high_cpu (> 80 % for 5m): pending at 1m, firing at 6m,
    resolved at 10m; the annotations as Prometheus renders them."""
    rule = RuleSet.default().get("high_cpu")
    assert rule is not None
    answer = timeline_of(rule, "telemetry", [f"{CPU} 0.5 0.9x8 0.5x3"])
    (episode,) = answer["episodes"]
    assert (episode["pending_at"], episode["firing_at"], episode["resolved_at"]) == (
        "1m", "6m", "10m")  # fmt: skip
    assert episode["labels"]["instance"] == "a:1"
    assert episode["annotations"]["description"] == (
        "system.cpu.percent is 90% on a:1 (warning when > 80% for 5m)")  # fmt: skip
    assert [step["at"] for step in answer["timeline"]][:3] == ["0s", "1m", "2m"]
    states = [[a["state"] for a in step["alerts"]] for step in answer["timeline"]]
    assert states[1] == ["pending"]
    assert states[6] == ["firing"]
    assert states[10] == []


def test_each_label_set_has_its_own_course_and_a_quiet_rule_none() -> None:
    rule = RuleSet.default().get("critical_cpu")
    assert rule is not None
    two = timeline_of(rule.replace(for_seconds=0), "telemetry",
                      [f"{CPU} 0.99x3", {"series": CPU.replace("a:1", "b:2"),
                                         "values": "0.1 0.1 0.99"}], "30s")  # fmt: skip
    by_instance = {e["labels"]["instance"]: e for e in two["episodes"]}
    assert (by_instance["a:1"]["pending_at"], by_instance["a:1"]["firing_at"]) == ("0s", "0s")
    assert by_instance["b:2"]["firing_at"] == "1m"  # the third sample, 30 s apart
    quiet = timeline_of(rule, "telemetry", [f"{CPU} 0.1x5"])
    assert quiet["episodes"] == []


@pytest.mark.parametrize(
    ("series", "interval", "duration", "field", "words"),
    [
        ([f"{CPU} 0.5 abc"], "1m", None, "series", 'unexpected identifier "abc"'),
        (["no values"], "1m", None, "series", "promtool"),
        ([], "1m", None, "series", "1 to 100 series"),
        ([f"{CPU} 1"], "1s", "2h", "duration", "at most 720 steps"),
        ([f"{CPU} 1"], "soon", None, "interval", ""),
    ],
)  # fmt: skip
def test_wrong_input_names_its_field(series: list[str], interval: str, duration: str | None,
                                     field: str, words: str) -> None:  # fmt: skip
    rule = RuleSet.default().get("high_cpu")
    assert rule is not None
    with pytest.raises(InvalidInput) as caught:
        timeline_of(rule, "telemetry", series, interval, duration)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_the_cli_prints_the_course_of_each_alert() -> None:
    done = CliRunner().invoke(main, ["rules", "test", "high_cpu", "--series",
                                     f"{CPU} 0.5 0.9x8 0.5x3"])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "pending at 1m, firing at 6m, resolved at 10m" in done.output
    assert "summary: CPU usage is high on a:1" in done.output
    missing = CliRunner().invoke(main, ["rules", "test", "nope", "--series", f"{CPU} 1"])
    assert missing.exit_code == 1
    assert "no rule named 'nope'" in missing.output


async def test_the_api_tests_a_rule_in_force_or_one_not_saved_yet(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    base = load_settings(None, {}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, api_token=Secret("api-secret"))
    client = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                             background=False))  # fmt: skip
    body = {"series": [f"{CPU} 0.5 0.9x8 0.5x3"]}
    response = await client.post("/api/v1/rules/high_cpu/test", json=body, headers=API)
    answer = await response.json()
    assert response.status == 200, answer
    assert answer["episodes"][0]["firing_at"] == "6m"
    unsaved = {**body, "rule": {"metric": "system.cpu.percent", "condition": ">",
                                "threshold": 60, "severity": "warning", "for": "1m"}}  # fmt: skip
    response = await client.post("/api/v1/rules/hot/test", json=unsaved, headers=API)
    answer = await response.json()
    assert response.status == 200, answer
    assert (answer["episodes"][0]["pending_at"], answer["episodes"][0]["firing_at"]) == (
        "1m", "2m")  # fmt: skip
    assert (await client.post("/api/v1/rules/nope/test", json=body, headers=API)).status == 404
    wrong = await client.post("/api/v1/rules/high_cpu/test", json={**body, "x": 1},
                              headers=API)  # fmt: skip
    assert (wrong.status, (await wrong.json())["field"]) == (400, "x")
