"""Property: whatever Alertmanager could send (UTF-8 label names, sizes up to twice the
limits, newer versions' extra fields, firing and resolved mixed) is answered 2xx and every
alert stored exactly once."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.config import Secret, load_settings
from bridge.core.alerts import AlertLimits
from bridge.http.app import create_app
from bridge.http.keys import STORE
from bridge.store import AlertQuery
from tests.test_receiver import BEARER, WEBHOOK, Client, MakeClient

LIMITS = AlertLimits(max_labels=6, max_label_name=16, max_label_value=24, max_annotations=4,
                     max_annotation_value=40, max_generator_url=40, max_alert_size=150)  # fmt: skip
_fingerprints = itertools.count(1)
text = st.characters(exclude_categories=["Cs"])  # any code point JSON can carry
names = st.text(text, min_size=1, max_size=2 * LIMITS.max_label_name)


@st.composite
def am_alerts(draw: st.DrawFn) -> dict[str, Any]:
    labels = draw(st.dictionaries(names, st.text(text, max_size=2 * LIMITS.max_label_value),
                                  min_size=1, max_size=2 * LIMITS.max_labels))  # fmt: skip
    annotations = draw(st.dictionaries(
        names, st.text(text, max_size=2 * LIMITS.max_annotation_value),
        max_size=2 * LIMITS.max_annotations))  # fmt: skip
    seconds = draw(st.integers(1_700_000_000, 1_900_000_000))
    fraction = draw(st.sampled_from(["", ".5", ".123", ".894696746"]))
    resolved = draw(st.booleans())
    alert = {
        "status": "resolved" if resolved else "firing",
        "labels": labels,
        "annotations": annotations,
        "startsAt": _rfc(seconds, fraction),
        "endsAt": _rfc(seconds + 60, "") if resolved else "0001-01-01T00:00:00Z",
        "generatorURL": draw(st.text(text, max_size=2 * LIMITS.max_generator_url)),
        "fingerprint": f"{next(_fingerprints) + (9 << 56):016x}",
    }
    if draw(st.booleans()):  # what a newer Alertmanager adds
        alert["notification_reason"] = "first notification"
    return alert


def _rfc(seconds: int, fraction: str) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + fraction + "Z"


async def _client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    base = load_settings(None, {}, db=str(tmp_path / "alerts.db"))
    server = dataclasses.replace(base.server, webhook_token=Secret("webhook-secret"))
    app = create_app(dataclasses.replace(base, server=server, limits=LIMITS), background=False)
    return await aiohttp_client(app)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])  # fmt: skip
@given(groups=st.lists(st.lists(am_alerts(), min_size=1, max_size=8), min_size=1, max_size=3))
async def test_whatever_alertmanager_sends_is_taken_and_stored_once(
    aiohttp_client: MakeClient, tmp_path_factory: Any, groups: list[list[dict[str, Any]]]
) -> None:
    client = await _client(aiohttp_client, tmp_path_factory.mktemp("senders"))
    for alerts in groups:
        body = {"version": "4", "status": "firing", "receiver": "alertbridge", "alerts": alerts,
                "groupKey": "{}:{}", "truncatedAlerts": 0, "groupLabels": {},
                "commonLabels": {}, "commonAnnotations": {}, "externalURL": "",
                "notification_reason": "new alerts added"}  # fmt: skip
        answer = await client.post(WEBHOOK, data=json.dumps(body), headers={
            **BEARER, "Content-Type": "application/json"})  # fmt: skip
        assert answer.status == 200, await answer.text()
    stored = await client.app[STORE].list_alerts(AlertQuery(limit=1000))
    sent = [a["fingerprint"] for alerts in groups for a in alerts]
    assert sorted(a.fingerprint for a in stored) == sorted(sent)
    for alert in stored:
        assert len(alert.labels) <= LIMITS.max_labels
        assert all(len(v) <= LIMITS.max_label_value for v in alert.labels.values())
