"""Valid notifications are never refused because of invalid ones sent at the same time."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.alerts import InvalidPayload
from bridge.http.keys import STORE
from bridge.ingest.webhook import parse_notification
from tests.payloads import am_alert, notification
from tests.stores import sqlite_of
from tests.test_receiver import BEARER, WEBHOOK, make_app
from tests.test_webhook import json_values
from tests.test_writer import writer_held

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
_fingerprints = itertools.count(1)

#: Edits that make one alert of a notification invalid, beyond what JSON values give.
POISONS: list[dict[str, Any]] = [
    {"startsAt": "2300-01-01T00:00:00Z"},  # beyond int64 nanoseconds
    {"startsAt": "9999-12-31T23:59:59Z"},
    {"startsAt": "1600-01-01T00:00:00Z"},
    {"startsAt": "0002-01-01T00:00:00Z"},
    {"startsAt": "2026-11-23T10:00:00+99:99"},
    {"status": "resolved", "endsAt": "2300-01-01T00:00:00Z"},
    {"fingerprint": "not-hex-at-all!!"},
    {"labels": {}},
]
#: Edits that make an alert pass a size limit: stored clipped, never refused.
OVERSIZED: list[dict[str, Any]] = [
    {"labels": {"alertname": "x", "big": "v" * 5000}},
    {"labels": {"alertname": "x", **{f"l{i}": "v" for i in range(70)}}},
    {"annotations": {"description": "d" * 70_000}},
]


def valid_alert() -> dict[str, Any]:
    return am_alert(f"{next(_fingerprints) + (7 << 56):016x}")


invalid_alert = st.one_of(
    st.sampled_from(POISONS).map(lambda edit: {**valid_alert(), **edit}),
    st.tuples(st.sampled_from(["startsAt", "endsAt", "labels", "fingerprint", "status"]),
              json_values).map(lambda kv: {**valid_alert(), kv[0]: kv[1]}),
)  # fmt: skip
# Each notification: (valid?, its alerts); an invalid one has one bad alert among good ones.
notifications = st.lists(
    st.one_of(
        st.integers(1, 3).map(lambda n: (True, [valid_alert() for _ in range(n)])),
        st.sampled_from(OVERSIZED).map(
            lambda edit: (True, [valid_alert(), {**valid_alert(), **edit}])
        ),
        st.tuples(st.integers(0, 2), invalid_alert).map(
            lambda t: (False, [valid_alert() for _ in range(t[0])] + [t[1]])
        ),
    ),
    min_size=2,
    max_size=30,
)


async def _held_writer_batch(client: Client, bodies: list[dict[str, Any]]) -> list[int]:
    """POST the bodies while the writer is held, so that all that reach it share one batch;
    their statuses."""
    writer = sqlite_of(client.app[STORE]).writer
    async with writer_held(writer):
        posts = [asyncio.ensure_future(client.post(WEBHOOK, json=b, headers=BEARER))
                 for b in bodies]  # fmt: skip
        deadline = time.monotonic() + 10
        # Until every request is answered (refused by the parser) or queued for the writer.
        while sum(p.done() for p in posts) + writer.queued < len(posts):
            assert time.monotonic() < deadline, "requests neither answered nor queued"
            await asyncio.sleep(0.005)
    responses = await asyncio.gather(*posts)
    statuses = [r.status for r in responses]
    for r in responses:
        r.release()
    return statuses


def _parses(body: dict[str, Any]) -> bool:
    try:
        parse_notification(body)
    except InvalidPayload:
        return False
    return True


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await aiohttp_client(make_app(tmp_path))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batch=notifications)
async def test_valid_notifications_survive_invalid_neighbours(
    client: Client, batch: list[tuple[bool, list[dict[str, Any]]]]
) -> None:
    """Concurrent valid and invalid notifications in one group commit: every valid one is
    answered 200 and stored exactly once, every invalid one 4xx, nothing else stored."""
    bodies = [{**notification(am_alert()), "alerts": alerts} for _, alerts in batch]
    bodies = [json.loads(json.dumps(b)) for b in bodies]
    # An edit meant to spoil an alert may leave it valid (labels without alertname, a start
    # in range): which notifications are valid is the parser's to say (tests/test_webhook.py);
    # this test is about their neighbours in one batch.
    batch = [(_parses(body), alerts) for body, (_, alerts) in zip(bodies, batch, strict=True)]
    statuses = await _held_writer_batch(client, bodies)
    for (valid, _), status in zip(batch, statuses, strict=True):
        assert (status == 200) if valid else (400 <= status < 500), (valid, status)
    wanted = {a["fingerprint"] for valid, alerts in batch if valid for a in alerts}
    sent = {a["fingerprint"] for _, alerts in batch for a in alerts
            if isinstance(a.get("fingerprint"), str)}  # fmt: skip
    counts = dict(
        sqlite_of(client.app[STORE]).db.read(
            lambda c: c.execute(
                "SELECT fingerprint, count(*) FROM alerts WHERE fingerprint IN"
                " (SELECT value FROM json_each(?)) GROUP BY fingerprint",
                (json.dumps(sorted(sent)),),
            ).fetchall()
        )
    )
    assert counts == dict.fromkeys(wanted, 1)
