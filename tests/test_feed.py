"""The feed of changes and its consumers: notification callbacks see every kind of change in
order, after it is on disk, never hold up the request that made it, and resume after a
restart where they stopped (at least once), a first run starting at the newest event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.core.model import Severity
from bridge.feed.consumer import FeedConsumer
from bridge.feed.notify import CONSUMER, Change, Notifier
from bridge.store import Event
from bridge.store.sqlite.store import SqliteStore
from tests.payloads import am_alert, notification
from tests.stores import T0, Sync, received
from tests.test_receiver import BEARER, WEBHOOK, make_app

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


class Recorder:
    """A callback keeping (alert id, event kind) of each change; `until(n)` awaits n."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []
        self._grew = asyncio.Event()

    async def __call__(self, change: Change) -> None:
        assert change.event.alert_id == change.alert.id
        self.seen.append((change.alert.id, change.event.kind))
        self._grew.set()

    async def until(self, count: int, timeout: float = 10.0) -> list[tuple[int, str]]:
        async with asyncio.timeout(timeout):
            while len(self.seen) < count:
                self._grew.clear()
                await self._grew.wait()
        return self.seen


async def test_callbacks_see_every_kind_of_change_in_order(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """Fired, acknowledged, note, assigned, unacknowledged, resolved: each change reaches the
    callbacks in order, whoever made it (webhook, API); below the threshold nothing; a failing
    or sync callback neither stops the others nor is lost."""
    notifier = Notifier(Severity.WARNING)
    record, threads = Recorder(), []

    def broken(change: Change) -> None:
        raise RuntimeError("pager down")

    notifier.add(broken)
    notifier.add(lambda change: threads.append(change.event.kind))
    notifier.add(record)  # last: once it has seen a change, so have the others
    client = await aiohttp_client(make_app(tmp_path, notifier))
    info = am_alert("fedcba9876543210", severity="info")
    await client.post(WEBHOOK, json=notification(am_alert(), info), headers=BEARER)
    for action, body in (("ack", {"by": "alice"}), ("notes", {"by": "bob", "text": "hm"}),
                         ("assign", {"by": "bob", "assignee": "carol"}),
                         ("unack", {"by": "alice"})):  # fmt: skip
        response = await client.post(f"/api/v1/alerts/1/{action}", json=body)
        assert response.status < 300, await response.text()
    resolved = am_alert(status="resolved", ends_at="2026-11-23T10:05:00Z")
    await client.post(WEBHOOK, json=notification(resolved), headers=BEARER)
    kinds = ["fired", "acknowledged", "note", "assigned", "unacknowledged", "resolved"]
    assert await record.until(6) == [(1, kind) for kind in kinds]
    assert threads == kinds
    assert notifier.errors == 6  # the broken one, each time


async def test_a_stuck_callback_never_holds_up_the_answer(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """While a callback hangs on the first change, notifications and acks are answered and
    stored; the callback then gets the rest, in order."""
    release = asyncio.Event()
    record = Recorder()

    async def stuck(change: Change) -> None:
        await record(change)
        await release.wait()

    notifier = Notifier(Severity.INFO)
    notifier.add(stuck)
    client = await aiohttp_client(make_app(tmp_path, notifier))
    await client.post(WEBHOOK, json=notification(am_alert()), headers=BEARER)
    await record.until(1)
    for i in range(3):
        alert = am_alert(f"{i + 1:016x}")
        response = await client.post(WEBHOOK, json=notification(alert), headers=BEARER)
        assert response.status == 200
    assert (await client.post("/api/v1/alerts/1/ack", json={"by": "a"})).status == 200
    assert record.seen == [(1, "fired")]
    release.set()
    assert await record.until(5) == [(1, "fired"), (2, "fired"), (3, "fired"), (4, "fired"),
                                     (1, "acknowledged")]  # fmt: skip


async def test_callbacks_resume_after_a_restart(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    """What changed while the server was down (an ack from the CLI) is delivered after the
    restart; what was delivered before is not delivered again."""
    first = Recorder()
    notifier = Notifier(Severity.INFO)
    notifier.add(first)
    client = await aiohttp_client(make_app(tmp_path, notifier))
    await client.post(WEBHOOK, json=notification(am_alert()), headers=BEARER)
    assert await first.until(1) == [(1, "fired")]
    await client.close()
    with Sync(SqliteStore(tmp_path / "alerts.db")) as offline:  # the CLI, while it is down
        offline.acknowledge(1, "alice", "", T0)
    second = Recorder()
    notifier = Notifier(Severity.INFO)
    notifier.add(second)
    await aiohttp_client(make_app(tmp_path, notifier))
    assert await second.until(1) == [(1, "acknowledged")]


async def test_a_first_run_starts_at_the_newest_event(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """Callbacks registered on a database with history get what happens from then on."""
    with Sync(SqliteStore(tmp_path / "alerts.db")) as before:
        before.ingest([received(fingerprint=f"{i:016x}") for i in range(5)], T0)
    record = Recorder()
    notifier = Notifier(Severity.INFO)
    notifier.add(record)
    client = await aiohttp_client(make_app(tmp_path, notifier))
    assert (await client.post("/api/v1/alerts/2/ack", json={"by": "a"})).status == 200
    assert await record.until(1) == [(2, "acknowledged")]


async def test_a_callback_past_its_timeout_is_counted_and_the_feed_goes_on(tmp_path: Path) -> None:
    """A callback running longer than the notifier's timeout is abandoned and counted."""
    async with SqliteStore(tmp_path / "a.db") as store:
        await store.ingest([received(), received(fingerprint="f" * 16)], T0)
        notifier = Notifier(Severity.INFO, timeout=0.05)
        record = Recorder()

        async def slow(change: Change) -> None:
            if change.alert.id == 1:
                await asyncio.Event().wait()

        notifier.add(slow)
        notifier.add(record)
        consumer = FeedConsumer(store, CONSUMER, notifier.handler(store))
        consumer.position = 0  # from the start, for the test
        assert await consumer.catch_up() == 2
        assert record.seen == [(1, "fired"), (2, "fired")]
        assert (notifier.errors, notifier.delivered) == (1, 3)


async def test_a_failed_batch_is_handed_again(tmp_path: Path) -> None:
    """At least once: when the handler raises, the position stays; the next round hands the
    same events again, then moves on; the position is kept in the store."""
    async with SqliteStore(tmp_path / "a.db") as store:
        calls: list[list[int]] = []

        async def handle(events: Sequence[Event]) -> None:
            calls.append([e.id for e in events])
            if len(calls) == 1:
                raise RuntimeError("downstream refused")

        consumer = FeedConsumer(store, "test", handle, batch=2)
        assert await consumer.start() == 0  # first run: the newest event, none yet
        await store.ingest([received(fingerprint=f"{i:016x}") for i in range(3)], T0)
        with pytest.raises(RuntimeError):
            await consumer.run_once()
        assert await store.cursor("test") == 0
        assert await consumer.catch_up() == 3
        assert calls == [[1, 2], [1, 2], [3]]
        assert await store.cursor("test") == 3
        again = FeedConsumer(store, "test", handle)
        assert await again.start() == 3


async def test_run_forever_wakes_on_a_write(tmp_path: Path) -> None:
    """A running consumer handles a write at once (well before its poll interval)."""
    async with SqliteStore(tmp_path / "a.db") as store:
        got = asyncio.Event()

        async def handle(events: Sequence[Event]) -> None:
            got.set()

        consumer = FeedConsumer(store, "test", handle, poll=3600)
        await consumer.start()
        task = asyncio.create_task(consumer.run_forever())
        try:
            await store.ingest([received()], T0)
            await asyncio.wait_for(got.wait(), 10)
        finally:
            task.cancel()
        assert consumer.handled == 1
