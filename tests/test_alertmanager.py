"""Silences and reconciliation against a stand-in Alertmanager API (aiohttp test server)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge.alertmanager.client import AlertmanagerClient, AlertmanagerCluster
from bridge.alertmanager.reconciler import Reconciler
from bridge.core.alerts import ReceivedAlert
from bridge.core.times import NS, now_ns
from bridge.store import AlertQuery, AlertStore
from bridge.store.sqlite.store import SqliteStore
from tests.stores import sqlite_of

_INFERRED = (
    "Alertmanager no longer lists it, and it was muted (silenced or inhibited), so no"
    " resolved notification comes"
)


class FakeAlertmanager:
    """The v2 endpoints the reconciler uses, with switchable failure."""

    def __init__(self) -> None:
        self.silences: dict[str, dict[str, Any]] = {}
        self.alerts: list[dict[str, Any]] = []
        self.down = False
        self.started = "2026-01-01T00:00:00.000Z"  # up for long: its list is trusted
        self.app = web.Application()
        self.app.router.add_post("/api/v2/silences", self.post_silence)
        self.app.router.add_delete("/api/v2/silence/{id}", self.delete_silence)
        self.app.router.add_get("/api/v2/alerts", self.get_alerts)
        self.app.router.add_get("/api/v2/status", self.get_status)

    async def get_status(self, request: web.Request) -> web.Response:
        self._check()
        return web.json_response({"uptime": self.started, "cluster": {"status": "disabled"}})

    def _check(self) -> None:
        if self.down:
            raise web.HTTPServiceUnavailable(text="down")

    async def post_silence(self, request: web.Request) -> web.Response:
        self._check()
        body = await request.json()
        silence_id = body.get("id") or str(uuid.uuid4())
        self.silences[silence_id] = {**body, "state": "active"}
        return web.json_response({"silenceID": silence_id})

    async def delete_silence(self, request: web.Request) -> web.Response:
        self._check()
        silence = self.silences.get(request.match_info["id"])
        if silence is None:
            return web.json_response("silence not found", status=500)
        silence["state"] = "expired"
        return web.Response()

    async def get_alerts(self, request: web.Request) -> web.Response:
        self._check()
        return web.json_response(self.alerts)


LABELS = {"alertname": "high_cpu", "instance": "a:1", "job": "app", "severity": "warning"}


def whole_seconds(ns: int) -> int:
    """The stand-in prints whole seconds, so keys must be whole seconds to match."""
    return ns // NS * NS


def firing(starts: int, fingerprint: str = "0123456789abcdef") -> ReceivedAlert:
    return ReceivedAlert(fingerprint, "firing", starts, None, LABELS, {"summary": "s"}, "")


def am_view(alert: ReceivedAlert, ends: int) -> dict[str, Any]:
    def rfc(ns: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // NS)) + "Z"

    return {"fingerprint": alert.fingerprint, "startsAt": rfc(alert.starts_at),
            "endsAt": rfc(ends), "labels": dict(alert.labels), "annotations": {},
            "status": {"state": "active"}}  # fmt: skip


Env = tuple[FakeAlertmanager, AlertStore, Reconciler, list[float]]


@pytest.fixture
async def env(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[Env]:
    fake = FakeAlertmanager()
    server = await aiohttp_server(fake.app)
    clock = [0.0]
    async with aiohttp.ClientSession() as session, SqliteStore(tmp_path / "a.db") as store:
        cluster = AlertmanagerCluster([AlertmanagerClient(str(server.make_url("/")), session)])
        reconciler = Reconciler(store, cluster, silence_seconds=600, backoff_base=10,
                                clock=lambda: clock[0])  # fmt: skip
        yield fake, store, reconciler, clock


async def events(store: AlertStore, alert_id: int) -> list[tuple[str, str, str]]:
    return [(e.kind, e.actor, e.detail) for e in await store.events(alert_id)]


async def acked_and_silenced(env: Env, am_seconds: int = 60, acked_ago: int = 0) -> None:
    """Alert 1 firing in Alertmanager (for `am_seconds` more) and the store, acknowledged by
    alice `acked_ago` seconds ago, its silence made."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns())
    fake.alerts = [am_view(firing(starts), now_ns() + am_seconds * NS)]
    await store.ingest([firing(starts)], starts)
    await store.acknowledge(1, "alice", "", now_ns() - acked_ago * NS)
    await reconciler.run_once()
    assert len(fake.silences) == 1


async def test_ack_creates_exact_silence_and_unack_expires_it(env: Env) -> None:
    """Pending -> a silence with exact matchers on the full label set -> expired on unack."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns())
    fake.alerts = [am_view(firing(starts), now_ns() + 60 * NS)]
    await store.ingest([firing(starts)], starts)
    acked = await store.acknowledge(1, "alice", "disk", now_ns())
    assert acked.silence_state == "pending"
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert alert.silence_state == "active"
    silence = fake.silences[alert.silence_id or ""]
    assert silence["matchers"] == [
        {"name": k, "value": v, "isRegex": False, "isEqual": True}
        for k, v in sorted(LABELS.items())
    ]
    assert (silence["createdBy"], silence["comment"]) == ("alice", "disk (alertbridge alert 1)")
    await store.unacknowledge(1, "alice", "", now_ns())
    await reconciler.run_once()
    assert fake.silences[alert.silence_id or ""]["state"] == "expired"
    assert (await store.get_alert(1)).silence_state == "expired"
    assert [k for k, _, _ in await events(store, 1)] == [
        "fired", "acknowledged", "silenced", "unacknowledged", "expired"]  # fmt: skip


async def test_silenced_alert_resolution_is_learnt_and_silence_expired(env: Env) -> None:
    """Alertmanager stops listing a silenced alert: resolved in the store, silence expired."""
    fake, store, reconciler, _ = env
    await acked_and_silenced(env)
    fake.alerts = []
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert (alert.status, alert.silence_state) == ("resolved", "expired")
    assert fake.silences[alert.silence_id or ""]["state"] == "expired"
    assert alert.resolution == "inferred"
    resolved = [e for e in await events(store, 1) if e[0] == "resolved"]
    assert resolved == [("resolved", "reconciler", _INFERRED)]


async def test_past_ends_at_counts_as_over(env: Env) -> None:
    """A muted alert listed with an endsAt in the past: resolved too."""
    fake, store, reconciler, _ = env
    await acked_and_silenced(env)
    fake.alerts[0]["endsAt"] = "2026-01-01T00:00:00Z"
    await reconciler.run_once()
    assert (await store.get_alert(1)).status == "resolved"


async def test_an_active_alert_missing_from_a_trusted_list_is_resolved(env: Env) -> None:
    """A firing alert that a trusted Alertmanager no longer lists is over, muted or not: its
    resolved notification was lost (the bridge down past the retries). Resolved
    provisionally, by the reconciler, saying so."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns())
    fake.alerts = [am_view(firing(starts), now_ns() + 60 * NS)]
    await store.ingest([firing(starts)], starts)
    await reconciler.run_once()
    assert (await store.get_alert(1)).am_state == "active"
    fake.alerts = []
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert (alert.status, alert.resolution) == ("resolved", "inferred")
    (resolved,) = [e for e in await events(store, 1) if e[0] == "resolved"]
    assert resolved[1] == "reconciler"
    assert "no resolved notification of it was stored" in resolved[2]


async def test_an_alert_these_replicas_never_listed_is_left_alone(env: Env) -> None:
    """Stored by the webhook, never listed by the configured Alertmanager (another cluster
    notifies this bridge too): no round resolves it."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns())
    await store.ingest([firing(starts)], starts)
    fake.alerts = []
    await reconciler.run_once()
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert (alert.status, alert.am_state) == ("firing", None)


async def test_missing_firing_alerts_are_inserted(env: Env) -> None:
    """An alert firing in Alertmanager but absent from the store (bridge was down) is added."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns()) - 30 * NS
    fake.alerts = [am_view(firing(starts, "fedcba9876543210"), now_ns() + 60 * NS)]
    await reconciler.run_once()
    await reconciler.run_once()  # idempotent
    alert = await store.get_alert(1)
    assert (alert.fingerprint, alert.status, alert.alertname) == (
        "fedcba9876543210", "firing", "high_cpu")  # fmt: skip
    assert await events(store, 1) == [("fired", "reconciler", "")]


async def test_unreachable_alertmanager_keeps_ack_pending_with_backoff(env: Env) -> None:
    """While Alertmanager is down the ack stands, pending; retries back off; then it works."""
    fake, store, reconciler, clock = env
    starts = whole_seconds(now_ns())
    await store.ingest([firing(starts)], starts)
    fake.alerts = [am_view(firing(starts), now_ns() + 60 * NS)]
    fake.down = True
    await store.acknowledge(1, "alice", "", now_ns())
    await reconciler.run_once()
    await reconciler.run_once()  # within backoff: no second attempt
    alert = await store.get_alert(1)
    assert (alert.acknowledged, alert.silence_state) == (True, "pending")
    attempts = reconciler.failures
    fake.down = False
    await reconciler.run_once()
    assert (await store.get_alert(1)).silence_state == "pending"  # still backing off
    clock[0] += 10
    await reconciler.run_once()
    assert (await store.get_alert(1)).silence_state == "active"
    assert attempts == 3  # sync failed twice, silence creation once (then backed off)


async def test_silence_is_extended_before_it_ends(env: Env) -> None:
    """With under half its duration left, an active silence is updated in place (same id)."""
    fake, store, reconciler, _ = env
    await acked_and_silenced(env, am_seconds=3600)
    first = await store.get_alert(1)
    reconciler.silence_seconds = 10_000  # now 600 s left is less than half of 10,000 s
    await reconciler.run_once()
    second = await store.get_alert(1)
    assert second.silence_id == first.silence_id
    assert (second.silenced_until or 0) > (first.silenced_until or 0)
    assert len(fake.silences) == 1


async def test_max_ack_duration_lets_the_silence_run_out(env: Env) -> None:
    """Past the maximum ack duration the silence is not extended, then recorded as expired."""
    _, store, reconciler, _ = env
    await acked_and_silenced(env, am_seconds=3600, acked_ago=100)
    created = await store.get_alert(1)
    reconciler.max_ack_seconds = 50
    reconciler.silence_seconds = 10_000  # extension would be due now
    await reconciler.run_once()
    assert (await store.get_alert(1)).silenced_until == created.silenced_until
    await sqlite_of(store).writer.submit(
        lambda c: c.execute("UPDATE alerts SET silenced_until = 1")
    )
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert alert.silence_state == "expired"
    assert (await events(store, 1))[-1] == (
        "expired",
        "alertbridge",
        "maximum acknowledgement duration reached",
    )


async def test_local_alerts_need_no_silence(env: Env) -> None:
    """An alert from the embedded evaluator is acknowledged without any silence."""
    fake, store, reconciler, _ = env
    await store.ingest([firing(whole_seconds(now_ns()))], now_ns(), source="local")
    acked = await store.acknowledge(1, "alice", "", now_ns())
    assert acked.silence_state is None
    await reconciler.run_once()
    assert fake.silences == {}


async def test_expiring_a_silence_alertmanager_forgot_counts_as_done(env: Env) -> None:
    """0.25 answers 500 "silence not found" for an unknown id: the unack still completes."""
    fake, store, reconciler, _ = env
    await acked_and_silenced(env)
    fake.silences.clear()  # e.g. Alertmanager lost its state
    await store.unacknowledge(1, "alice", "", now_ns())
    await reconciler.run_once()
    assert (await store.get_alert(1)).silence_state == "expired"
    assert reconciler.failures == 0


def _rfc(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // NS)) + ".000Z"


async def test_a_restarted_alertmanagers_empty_list_resolves_nothing(env: Env) -> None:
    """Alertmanager keeps alerts in memory only: after a restart it answers [] until
    Prometheus resends. Within the resend window even a silenced (acked) alert stays firing;
    past it, the absence counts."""
    fake, store, reconciler, _ = env
    await acked_and_silenced(env)
    fake.alerts = []
    fake.started = _rfc(now_ns() - 10 * NS)  # up for 10 s, the window is 90 s
    await reconciler.run_once()
    assert (await store.get_alert(1)).status == "firing"
    fake.started = _rfc(now_ns() - 200 * NS)
    await reconciler.run_once()
    assert (await store.get_alert(1)).status == "resolved"


async def test_alertmanagers_view_is_stored_and_follows(env: Env) -> None:
    """Suppressed with the silences and the inhibiting alerts (their ids when stored), then
    active again when Alertmanager says so."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns())
    warning, critical = firing(starts), firing(starts, "fedcba9876543210")
    await store.ingest([warning, critical], starts)
    view = am_view(warning, now_ns() + 60 * NS)
    view["status"] = {"state": "suppressed", "silencedBy": ["s-1"],
                      "inhibitedBy": ["fedcba9876543210", "00000000000000ff"]}  # fmt: skip
    fake.alerts = [view, am_view(critical, now_ns() + 60 * NS)]
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert (alert.am_state, alert.am_silenced_by) == ("suppressed", ("s-1",))
    assert alert.am_inhibited_by == (("00000000000000ff", None), ("fedcba9876543210", 2))
    assert (await store.get_alert(2)).am_state == "active"
    fake.alerts[0]["status"] = {"state": "active", "silencedBy": [], "inhibitedBy": []}
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert (alert.am_state, alert.am_silenced_by, alert.am_inhibited_by) == ("active", (), ())


async def test_an_inhibited_alert_gone_from_the_list_is_resolved(env: Env) -> None:
    """Inhibited alerts send no resolved either: when it disappears it is inferred over."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns())
    await store.ingest([firing(starts)], starts)
    view = am_view(firing(starts), now_ns() + 60 * NS)
    view["status"] = {"state": "suppressed", "silencedBy": [], "inhibitedBy": ["ab" * 8]}
    fake.alerts = [view]
    await reconciler.run_once()
    fake.alerts = []
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert (alert.status, alert.resolution) == ("resolved", "inferred")


@pytest.fixture
async def pair(
    tmp_path: Path, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> AsyncIterator[tuple[FakeAlertmanager, FakeAlertmanager, AlertStore, Reconciler]]:
    """Two stand-in replicas behind one reconciler."""
    first, second = FakeAlertmanager(), FakeAlertmanager()
    servers = [await aiohttp_server(f.app) for f in (first, second)]
    async with aiohttp.ClientSession() as session, SqliteStore(tmp_path / "a.db") as store:
        cluster = AlertmanagerCluster.of([str(s.make_url("/")) for s in servers], session)
        yield first, second, store, Reconciler(store, cluster)


async def test_with_one_replica_down_the_other_makes_the_silence(pair: Any) -> None:
    """An ack while the first replica is down: the silence is made on the second (replicas
    gossip), once; the alert listed only by the answering replica is not resolved."""
    first, second, store, reconciler = pair
    starts = whole_seconds(now_ns())
    second.alerts = [am_view(firing(starts), now_ns() + 60 * NS)]
    await store.ingest([firing(starts)], starts)
    first.down = True
    await store.acknowledge(1, "alice", "", now_ns())
    await reconciler.run_once()
    alert = await store.get_alert(1)
    assert (alert.status, alert.silence_state) == ("firing", "active")
    assert (len(first.silences), len(second.silences)) == (0, 1)


async def test_an_alert_any_replica_lists_is_not_resolved(pair: Any) -> None:
    """A trusted replica without it and a restarted one listing it: it stays firing (the
    first one may have lost it, or not received it yet). Gone from both: resolved."""
    first, second, store, reconciler = pair
    starts = whole_seconds(now_ns())
    await store.ingest([firing(starts)], starts)
    await store.acknowledge(1, "alice", "", now_ns())
    view = am_view(firing(starts), now_ns() + 60 * NS)
    first.alerts, second.alerts = [view], [view]
    await reconciler.run_once()
    first.alerts = []
    second.started = _rfc(now_ns() - 5 * NS)  # just restarted: untrusted, but it lists it
    await reconciler.run_once()
    assert (await store.get_alert(1)).status == "firing"
    second.alerts = []
    await reconciler.run_once()
    assert (await store.get_alert(1)).status == "resolved"


async def test_expiry_reaches_the_replica_that_knows_the_silence(pair: Any) -> None:
    """The first replica never heard of the silence (not found): it is expired on the
    second; only when every replica says not found is it taken as done."""
    first, second, store, reconciler = pair
    starts = whole_seconds(now_ns())
    await store.ingest([firing(starts)], starts)
    view = am_view(firing(starts), now_ns() + 60 * NS)
    first.alerts = second.alerts = [view]
    first.down = True
    await store.acknowledge(1, "alice", "", now_ns())
    await reconciler.run_once()
    first.down = False
    (silence_id,) = second.silences
    await store.unacknowledge(1, "alice", "", now_ns())
    await reconciler.run_once()
    assert second.silences[silence_id]["state"] == "expired"
    assert (await store.get_alert(1)).silence_state == "expired"


async def test_a_listed_alert_reopens_a_provisional_resolution_only(env: Env) -> None:
    """Listed active by a trusted Alertmanager: a hand-resolved episode is reopened (by the
    reconciler); one Alertmanager itself resolved is left alone, its receive count too."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns())
    first, second = firing(starts), firing(starts, "fedcba9876543210")
    await store.ingest([first, second], starts)
    await store.resolve(1, "ann", "", now_ns())
    ended = ReceivedAlert(second.fingerprint, "resolved", starts, now_ns(), LABELS, {}, "")
    await store.ingest([ended], now_ns())
    fake.alerts = [am_view(first, now_ns() + 60 * NS), am_view(second, now_ns() + 60 * NS)]
    await reconciler.run_once()
    await reconciler.run_once()
    assert (await store.get_alert(1)).status == "firing"
    assert (await events(store, 1))[-1][:2] == ("reopened", "reconciler")
    final = await store.get_alert(2)
    assert (final.status, final.receive_count) == ("resolved", 2)


async def test_a_kick_during_a_round_starts_the_next_round_at_once() -> None:
    """An ack while a round talks to Alertmanager kicks the reconciler: that round ends, and
    the next begins at once, not after the interval (the kick was cleared after the round,
    and the ack's silence waited 30 s: found by the browser test under load)."""
    reconciler = Reconciler.__new__(Reconciler)  # only its loop: run_once is the test's
    reconciler.wake = asyncio.Event()
    rounds = 0
    first_round_running = asyncio.Event()
    release = asyncio.Event()

    async def run_once() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            first_round_running.set()
            await release.wait()

    reconciler.run_once = run_once  # type: ignore[method-assign]
    task = asyncio.create_task(reconciler.run_forever(interval=3600))
    try:
        await asyncio.wait_for(first_round_running.wait(), 5)
        reconciler.kick()  # during the round
        release.set()
        for _ in range(500):  # bounded: 5 s, far below the interval
            if rounds >= 2:
                break
            await asyncio.sleep(0.01)
        assert rounds == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _inhibited_by_a_copy(env: Env) -> Any:
    """A warning inhibited by its critical's escalation copy (the copy is what Alertmanager
    names, and the bridge never stores it), after a round: the warning as stored."""
    fake, store, reconciler, _ = env
    starts = whole_seconds(now_ns())
    warning, critical = firing(starts), firing(starts, "fedcba9876543210")
    await store.ingest([warning, critical], starts)
    view = am_view(warning, now_ns() + 60 * NS)
    view["status"] = {"state": "suppressed", "silencedBy": [],
                      "inhibitedBy": ["c0c0c0c0c0c0c0c0"]}  # fmt: skip
    copy = am_view(critical, now_ns() + 60 * NS)
    copy["fingerprint"] = "c0c0c0c0c0c0c0c0"
    copy["labels"] = {**copy["labels"], "escalation_policy": "page", "escalation_level": "0"}
    copy["annotations"] = {**copy.get("annotations", {}), "alertbridge_id": "2"}
    fake.alerts = [view, am_view(critical, now_ns() + 60 * NS), copy]
    await reconciler.run_once()
    return await store.get_alert(1)


async def test_an_alert_inhibited_by_an_escalation_copy_names_the_copied_alert(
    env: Env,
) -> None:
    """Shown inhibited by the critical's number, which the copy's alertbridge_id annotation
    gives; the copy itself is no alert."""
    alert = await _inhibited_by_a_copy(env)
    assert alert.am_inhibited_by == (("c0c0c0c0c0c0c0c0", 2),)
    assert len(await env[1].list_alerts(AlertQuery())) == 2


async def test_the_page_names_the_inhibiting_alert_by_its_number(env: Env) -> None:
    """The alert's page: "inhibited by #2", linked."""
    from bridge.http.pages import ENV

    alert = await _inhibited_by_a_copy(env)
    html = ENV.get_template("_detail.html").render(alert=alert, events=[], when=str,
                                                   escalations=[])  # fmt: skip
    assert 'inhibited by <a href="/alerts/2">#2</a>' in html
