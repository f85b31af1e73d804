"""The enrichment map: config errors, matching, and the server applying it from the feed of
changes to every new episode, in a field of its own (labels untouched); rule annotations
(runbooks) in the generated rules."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from bridge.config import Secret, load_settings
from bridge.core.errors import ConfigError, RuleError
from bridge.core.model import AlertRule, Condition, Severity
from bridge.generate import RULES_PATH, render_all
from bridge.http.app import create_app
from bridge.http.keys import ENRICH_FEED, STORE
from tests.payloads import am_alert, notification

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
HOOK = {"Authorization": "Bearer hook-secret"}
ENRICHMENT = [
    {"matchers": ['team="db"'], "fields": {"owner": "dba-oncall", "runbook": "https://w/db"}},
    {"matchers": ['team="db"', 'severity="critical"'], "fields": {"owner": "dba-lead"}},
]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"matchers": ["team"], "fields": {"a": "b"}}, r"enrichment\[0\].matchers: not a label"),
        ({"matchers": [], "fields": {}}, r"enrichment\[0\].fields: must be a non-empty"),
        ({"fields": {"bad name": "x"}}, r"enrichment\[0\].fields: 'bad name' is not a field"),
        ({"fields": {"a": 1}}, r"enrichment\[0\].fields.a: must be a text"),
        ({"fields": {"a": "b"}, "labels": {}}, r"enrichment\[0\]: must be \{matchers"),
    ],
)
def test_enrichment_config_errors(tmp_path: Path, entry: dict[str, Any], message: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"enrichment": [entry]}))
    with pytest.raises(ConfigError, match=message):
        load_settings(path, {})


async def test_new_episodes_get_the_fields_of_every_entry_they_match(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"enrichment": ENRICHMENT}))
    base = load_settings(path, {}, db=str(tmp_path / "a.db"))
    settings = dataclasses.replace(
        base, server=dataclasses.replace(base.server, webhook_token=Secret("hook-secret"))
    )
    client = await aiohttp_client(create_app(settings, background=False))
    payload = notification(
        am_alert("0000000000000001", team="db", severity="critical"),
        am_alert("0000000000000002", team="db", severity="warning"),
        am_alert("0000000000000003", team="web"),
    )
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200
    await client.app[ENRICH_FEED].catch_up()
    alerts = {a.fingerprint: a for a in await client.app[STORE].get_alerts([1, 2, 3])}
    assert alerts["0000000000000001"].enrichment == {"owner": "dba-lead",
                                                     "runbook": "https://w/db"}  # fmt: skip
    assert alerts["0000000000000002"].enrichment == {"owner": "dba-oncall",
                                                     "runbook": "https://w/db"}  # fmt: skip
    assert alerts["0000000000000003"].enrichment == {}
    assert "owner" not in alerts["0000000000000001"].labels  # labels stay Alertmanager's


def test_rule_annotations_flow_into_the_generated_rules(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    rule = {"name": "high_cpu", "labels": {"team": "infra"},
            "annotations": {"runbook_url": "https://w/cpu"}}  # fmt: skip
    path.write_text(yaml.safe_dump({"rules": [rule]}))
    rules = yaml.safe_load(render_all(load_settings(path, {})).files[RULES_PATH])
    [high] = [r for r in rules["groups"][0]["rules"] if r["alert"] == "high_cpu"]
    assert high["annotations"]["runbook_url"] == "https://w/cpu"
    assert high["labels"]["team"] == "infra"
    with pytest.raises(RuleError, match="'summary' is written by alertbridge itself"):
        AlertRule(
            "x",
            "system.cpu.percent",
            Condition.GT,
            1,
            Severity.WARNING,
            annotations={"summary": "s"},
        )
    bad: Any = {"runbook_url": 1}
    with pytest.raises(RuleError, match="value of 'runbook_url' must be a string"):
        AlertRule("x", "system.cpu.percent", Condition.GT, 1, Severity.WARNING, annotations=bad)
