"""The feed as Server-Sent Events: live delivery, exact resumption with Last-Event-ID (from the
hub's buffer and from the store beyond it), filters, keys, keepalives, events written by
another process, and streams ended at shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import socket
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from bridge.config import Secret, load_settings
from bridge.host import apikeys
from bridge.http import peers
from bridge.http.app import create_app
from bridge.http.keys import HUB
from bridge.store import open_store
from tests.payloads import am_alert, notification

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]
HOOK = {"Authorization": "Bearer hook-secret"}
API = {"Authorization": "Bearer api-secret"}
TCP_CLOSE = 7  # tcp_info's state of a connection reset (linux/tcp_states.h)
TIMEOUT = 10.0  # a bound on every wait for a message, never reached when all is well


async def make_client(aiohttp_client: MakeClient, tmp_path: Path, **server_fields: Any) -> Client:
    base = load_settings(None, {}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"),
                                 api_token=Secret("api-secret"), **server_fields)  # fmt: skip
    return await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                           background=False))  # fmt: skip


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await make_client(aiohttp_client, tmp_path)


async def fire(client: Client, n: int, **labels: str) -> None:
    payload = notification(am_alert(f"{n:016x}", **labels))
    assert (await client.post("/api/v1/alertmanager", json=payload, headers=HOOK)).status == 200


class Watcher:
    """An open stream; `next()` is the next message (id, data) or comment."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def message(self) -> tuple[int, dict[str, Any]]:
        fields: dict[str, str] = {}
        while True:
            raw = await asyncio.wait_for(self.response.content.readline(), TIMEOUT)
            assert raw, "the stream ended"
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line)
                continue
            if not line:
                if "data" in fields:
                    return int(fields["id"]), json.loads(fields["data"])
                fields.clear()
                continue
            name, _, value = line.partition(": ")
            fields[name] = value

    async def messages(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        return [await self.message() for _ in range(n)]

    async def comment(self) -> str:
        while not self.comments:
            raw = await asyncio.wait_for(self.response.content.readline(), TIMEOUT)
            assert raw, "the stream ended"
            if raw.startswith(b":"):
                self.comments.append(raw.decode().strip())
        return self.comments.pop(0)


@pytest.fixture
async def watch(client: Client) -> AsyncIterator[Callable[..., Awaitable[Watcher]]]:
    opened: list[aiohttp.ClientResponse] = []

    async def open_stream(headers: dict[str, str] | None = None, **params: str) -> Watcher:
        response = await client.get("/api/v1/events/stream", params=params,
                                    headers={**API, **(headers or {})})  # fmt: skip
        assert response.status == 200, await response.text()
        assert response.headers["Content-Type"].startswith("text/event-stream")
        opened.append(response)
        hub = client.app[HUB]
        for _ in range(int(TIMEOUT / 0.005)):  # the handler has registered with the hub
            if hub.watchers >= len([r for r in opened if not r.closed]):
                break
            await asyncio.sleep(0.005)  # (it reads the store first: a thread's round trip)
        return Watcher(response)

    yield open_stream
    for response in opened:
        response.close()


async def test_a_watcher_sees_an_alert_as_it_arrives(client: Client, watch: Any) -> None:
    watcher = await watch()
    await fire(client, 1, team="infra")
    event_id, data = await watcher.message()
    assert data["kind"] == "fired"
    assert data["id"] == event_id
    assert data["alert_id"] == 1
    assert data["alert"]["alertname"] == "high_cpu"
    assert data["alert"]["labels"]["team"] == "infra"
    ack = await client.post("/api/v1/alerts/1/ack", json={"by": "alice"}, headers=API)
    assert ack.status == 200
    _, acked = await watcher.message()
    assert (acked["kind"], acked["actor"]) == ("acknowledged", "alice")
    assert acked["alert"]["acked_by"] == "alice"


async def _history(client: Client, n: int) -> list[int]:
    for k in range(n):
        await fire(client, k + 1)
    response = await client.get("/api/v1/events/stream", params={"after": "0"}, headers=API)
    watcher = Watcher(response)
    ids = [i for i, _ in await watcher.messages(n)]
    response.close()
    return ids


@pytest.mark.parametrize("keep", [10_000, 3])
async def test_a_watcher_that_resumes_gets_exactly_what_it_missed(
    client: Client, watch: Any, keep: int
) -> None:
    """From the hub's buffer, and (keep=3) from the store, the buffer having moved on."""
    client.app[HUB].keep = keep
    first = await watch()
    await fire(client, 1)
    await fire(client, 2)
    seen = await first.messages(2)
    first.response.close()
    for n in range(3, 9):  # missed while away
        await fire(client, n)
    again = await watch(headers={"Last-Event-ID": str(seen[-1][0])})
    missed = await again.messages(6)
    assert [d["alert_id"] for _, d in missed] == [3, 4, 5, 6, 7, 8]
    everything = [i for i, _ in seen + missed]
    assert everything == sorted(set(everything))  # in order, none twice
    await fire(client, 9)  # and live again after the catch-up
    _, live = await again.message()
    assert live["alert_id"] == 9
    if keep == 3:
        assert client.app[HUB].floor > seen[-1][0]  # it did come from the store


async def test_after_replays_history_in_order(client: Client) -> None:
    ids = await _history(client, 5)
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


async def test_filters(client: Client, watch: Any) -> None:
    critical = await watch(severity="critical")
    infra = await watch(filter='team="infra"', kind="fired")
    await fire(client, 1, team="web")
    await fire(client, 2, severity="critical", team="infra")
    await fire(client, 3, team="infra")
    _, got = await critical.message()
    assert got["alert_id"] == 2
    assert [d["alert_id"] for _, d in await infra.messages(2)] == [2, 3]
    only_3 = await watch(alert_id="3", after="0")
    _, got = await only_3.message()
    assert got["alert_id"] == 3


@pytest.mark.parametrize(
    ("params", "headers", "field"),
    [
        ({"limit": "5"}, {}, "limit"),
        ({"severity": "critical", "status": "open"}, {}, "status"),
        ({"filter": 'team=~"("'}, {}, "matcher"),  # as the alert list names it
        ({"alert_id": "x"}, {}, "alert_id"),
        ({"kind": "fired,bogus"}, {}, "kind"),
        ({"after": "-1"}, {}, "after"),
        ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
    ],
)
async def test_bad_requests_are_named(
    client: Client, params: dict[str, str], headers: dict[str, str], field: str
) -> None:
    response = await client.get("/api/v1/events/stream", params=params,
                                headers={**API, **headers})  # fmt: skip
    assert response.status == 400
    body = await response.json()
    assert body["field"] == field, body


async def test_keys_and_tokens(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    _, reader = apikeys.add(path, "rita", "read")
    settings = load_settings(None, {"ALERTBRIDGE_KEYS_FILE": str(path)}, db=str(tmp_path / "d"))
    client = await aiohttp_client(create_app(settings, background=False))
    assert (await client.get("/api/v1/events/stream")).status == 401
    response = await client.get("/api/v1/events/stream",
                                headers={"Authorization": f"Bearer {reader}"})  # fmt: skip
    assert response.status == 200
    response.close()


async def test_quiet_streams_get_keepalives(client: Client, watch: Any) -> None:
    client.app[HUB].keepalive = 0.05
    watcher = await watch()
    assert await watcher.comment() == ": keepalive"


async def test_events_of_another_process_arrive(client: Client, watch: Any, tmp_path: Path) -> None:
    """Writes through another store on the same database (the CLI's, the worker's) are
    seen by polling."""
    await fire(client, 1)
    watcher = await watch()
    other = open_store(tmp_path / "a.db")
    await other.start()
    try:
        await other.add_note(1, "cli-user", "from elsewhere", 0)
    finally:
        await other.close()
    _, got = await watcher.message()
    assert (got["kind"], got["actor"], got["detail"]) == ("note", "cli-user", "from elsewhere")


async def test_nobody_watching_nothing_read(client: Client, watch: Any) -> None:
    hub = client.app[HUB]
    await fire(client, 1)
    assert hub.position == 0  # no watcher yet: the hub read nothing
    watcher = await watch()
    await fire(client, 2)
    _, got = await watcher.message()
    assert got["alert_id"] == 2
    assert hub.position > 0


async def test_shutdown_ends_the_streams(aiohttp_client: MakeClient, tmp_path: Path) -> None:
    settings = load_settings(None, {}, db=str(tmp_path / "a.db"))
    client = await aiohttp_client(create_app(settings, background=False))
    response = await client.get("/api/v1/events/stream")
    assert response.status == 200
    await client.app.shutdown()  # what the server's stop runs first: on_shutdown
    # the stream ends by itself, cleanly: the server's stop does not wait out its timeout
    assert await asyncio.wait_for(response.content.read(), TIMEOUT) == b"retry: 2000\n\n"
    assert client.app[HUB].watchers == 0


async def test_without_gzip_the_stream_is_plain(client: Client, watch: Any) -> None:
    watcher = await watch(headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in watcher.response.headers
    await fire(client, 1)
    _, data = await watcher.message()
    assert data["alert_id"] == 1


async def test_the_gzip_stream_is_one_valid_gzip_stream_across_batches(client: Client) -> None:
    """Each batch is compressed once and shared; what a watcher receives must still decode as
    one gzip stream, batch after batch, with other watchers at other positions."""
    url = client.make_url("/api/v1/events/stream")
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        behind = await session.get(url, params={"after": "0"},
                                   headers={**API, "Accept-Encoding": "gzip"})  # fmt: skip
        live = await session.get(url, headers={**API, "Accept-Encoding": "gzip"})
        for response in (behind, live):
            assert response.headers["Content-Encoding"] == "gzip"
        for n in range(1, 31):  # batches of various sizes while both read
            await fire(client, n)
        decoded = {id(behind): b"", id(live): b""}
        inflaters = {id(r): zlib.decompressobj(16 + zlib.MAX_WBITS) for r in (behind, live)}
        for response in (behind, live):
            key = id(response)
            while decoded[key].count(b"\ndata: ") < 30:
                chunk = await asyncio.wait_for(response.content.readany(), TIMEOUT)
                assert chunk, "the stream ended"
                decoded[key] += inflaters[key].decompress(chunk)
        for key, text in decoded.items():
            assert text.startswith(b"retry: 2000\n\n")
            ids = [int(line[4:]) for line in text.split(b"\n") if line.startswith(b"id: ")]
            assert len(ids) == 30
            assert ids == sorted(set(ids))
            assert inflaters[key].unused_data == b""
        behind.close()
        live.close()


async def test_a_live_watcher_gets_a_burst_bigger_than_the_buffer(
    client: Client, watch: Any
) -> None:
    client.app[HUB].keep = 2
    watcher = await watch()
    for n in range(1, 9):
        await fire(client, n)
    assert [d["alert_id"] for _, d in await watcher.messages(8)] == list(range(1, 9))


async def test_a_watcher_that_does_not_read_falls_behind_then_catches_up_exactly(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer whose buffer fills stops being live (the hub no longer writes to it); once it
    reads again it catches up by itself, every event once, in order, and goes live again."""
    monkeypatch.setattr(peers, "HIGH_WATER", 4096)
    monkeypatch.setattr(peers, "LOW_WATER", 1024)
    hub = client.app[HUB]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (client.host, client.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /api/v1/events/stream?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer api-secret\r\n\r\n")  # fmt: skip
    for _ in range(100):  # registered (bounded)
        if hub.watchers:
            break
        await asyncio.sleep(0.01)
    n = 0
    for _ in range(1500):  # until the hub gives up writing to it (bounded)
        n += 1
        await fire(client, n, pad="x" * 4000)
        if hub.watchers and not hub._live and n > 20:
            break
    assert not hub._live, "the hub kept writing to a peer that does not read"
    assert hub.watchers == 1
    body = b""
    while body.count(b"\ndata: ") < n:
        body += await asyncio.wait_for(reader.read(1 << 16), TIMEOUT)
    ids = [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]
    assert len(ids) == n
    assert ids == sorted(set(ids))
    await fire(client, n + 1)  # live again: the next one comes by the hub's push
    while body.count(b"\ndata: ") < n + 1:
        body += await asyncio.wait_for(reader.read(1 << 16), TIMEOUT)
    assert len(hub._live) == 1
    writer.close()


async def test_an_http_1_0_client_gets_the_stream_unchunked(client: Client) -> None:
    """HTTP/1.0 has no chunked encoding: the hub's direct writes must then be the bare
    frames (the connection's end ends the body)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /api/v1/events/stream HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer api-secret\r\n\r\n")  # fmt: skip
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.0 200")
    assert b"chunked" not in head.lower()
    hub = client.app[HUB]
    for _ in range(100):  # registered and live (bounded)
        if hub._live:
            break
        await asyncio.sleep(0.01)
    assert hub._live
    await fire(client, 1)
    body = b""
    while b"\ndata: " not in body or not body.endswith(b"\n\n"):
        body += await asyncio.wait_for(reader.read(1 << 16), TIMEOUT)
    frames = body.replace(b": keepalive\n\n", b"")  # (comments may come first)
    assert frames.startswith(b"retry: 2000\n\nid: ")  # no chunk sizes between frames
    assert json.loads(frames.split(b"data: ", 1)[1].split(b"\n", 1)[0])["alert_id"] == 1
    writer.close()


async def test_a_watcher_that_never_reads_is_disconnected_after_the_drain_timeout(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """Catching up a peer that reads nothing (a resume from far back): its write waits at
    most server.stream_drain_timeout, then it is disconnected (what it does not read must
    not pile up here, nor its task wait forever)."""
    client = await make_client(aiohttp_client, tmp_path, stream_drain_timeout=1)
    for n in range(1, 801):  # ~3 MB of history: more than the kernel's buffers take
        await fire(client, n, pad="x" * 4000)
    hub = client.app[HUB]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (client.host, client.port))
    request = (b"GET /api/v1/events/stream?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Authorization: Bearer api-secret\r\n\r\n")  # fmt: skip
    await loop.sock_sendall(sock, request)
    try:
        for _ in range(int(TIMEOUT / 0.01)):  # registered (bounded)
            if hub.watchers:
                break
            await asyncio.sleep(0.01)
        assert hub.watchers == 1
        for _ in range(int(TIMEOUT / 0.01)):
            if not hub.watchers:
                break
            await asyncio.sleep(0.01)
        assert hub.watchers == 0, "a peer that never reads is still served"
        # and its connection is cut, not closed after a flush it will never read: reset
        # (TCP_CLOSE on this side), which the socket's state shows without reading it
        for _ in range(int(TIMEOUT / 0.01)):
            if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == TCP_CLOSE:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the stalled connection was not cut")
    finally:
        sock.close()


async def test_stream_opens_take_one_turn_of_the_loop_each() -> None:
    """A crowd of stream opens is let through one per turn of the event loop, so that what
    else is ready (the webhook's next request) runs between two of them, not after all."""
    from bridge.http.stream import Turns

    turns = Turns()
    order: list[str] = []
    loop = asyncio.get_running_loop()

    def tick(left: int) -> None:  # marks each turn of the loop
        order.append("turn")
        if left:
            loop.call_soon(tick, left - 1)

    async def opener(n: int) -> None:
        await turns.turn()
        order.append(f"open {n}")

    openers = [asyncio.create_task(opener(n)) for n in range(3)]
    loop.call_soon(tick, 12)
    await asyncio.gather(*openers)
    opened = [i for i, what in enumerate(order) if what.startswith("open")]
    assert [order[i] for i in opened] == ["open 0", "open 1", "open 2"]
    for before, after in itertools.pairwise(opened):
        assert "turn" in order[before:after], order  # a turn of the loop between two opens
    cancelled = asyncio.create_task(turns.turn())
    await asyncio.sleep(0)
    cancelled.cancel()  # a client gone while it waited: the next one is let through
    await asyncio.wait_for(turns.turn(), TIMEOUT)


async def test_a_resume_into_an_idle_hub_after_its_watchers_left(
    client: Client, watch: Any
) -> None:
    """A hub whose watchers all left keeps nothing (its buffer cleared) but had read ahead:
    a watcher resuming from between where it began and where it read to gets what it missed
    from the store (it once found the buffer empty and its position behind the hub's, and
    looked again, and again, never yielding: the server's loop spun)."""
    hub = client.app[HUB]
    first = await watch()
    for n in range(1, 6):
        await fire(client, n)
    ids = [i for i, _ in await first.messages(5)]
    first.response.close()
    for _ in range(int(TIMEOUT / 0.005)):  # bounded: the hub lets go of it, and idles
        if hub.watchers == 0 and not hub._wanted.is_set():
            break
        await asyncio.sleep(0.005)
    assert hub.watchers == 0
    assert not hub._wanted.is_set()
    resumed = await asyncio.wait_for(watch({"Last-Event-ID": str(ids[1])}), TIMEOUT)
    assert [i for i, _ in await resumed.messages(3)] == ids[2:]
    await fire(client, 6)
    _, got = await resumed.message()
    assert got["alert_id"] == 6


async def test_pushes_are_spaced_by_the_hubs_write_budget(client: Client, watch: Any) -> None:
    """With more live watchers than a push each `every` may write to (writes_per_second),
    the hub reads, and pushes, at most each watchers / writes_per_second seconds: events
    that come meanwhile go out together."""
    hub = client.app[HUB]
    hub.writes_per_second = 10.0  # three watchers: a push each 0.3 s at most
    watchers = [await watch() for _ in range(3)]
    for _ in range(int(TIMEOUT / 0.005)):  # bounded: all three went live
        if hub.pause() > hub.every:
            break
        await asyncio.sleep(0.005)
    assert hub.pause() == pytest.approx(0.3)
    pushed: list[float] = []
    push = hub._push

    def timed() -> None:
        pushed.append(asyncio.get_running_loop().time())
        push()

    hub._push = timed
    for n in range(1, 4):
        await fire(client, n)
        for watcher in watchers:
            _, got = await watcher.message()
            assert got["alert_id"] == n
    assert len(pushed) == 3
    assert all(b - a >= 0.3 * 0.99 for a, b in itertools.pairwise(pushed)), pushed


async def test_a_crowd_resuming_from_one_id_reads_the_store_once(
    client: Client, watch: Any
) -> None:
    """Every stream of a killed worker had the same last id: resuming together beyond the
    buffer, they share one read of each page of the store (not one read each)."""
    hub = client.app[HUB]
    hub.keep = 3
    first = await watch()
    await fire(client, 1)
    ((last, _),) = await first.messages(1)
    for n in range(2, 9):  # the buffer moves on beyond `last`
        await fire(client, n)
    await first.messages(7)
    assert hub.floor > last
    reads: list[int] = []
    feed_after = hub.store.feed_after

    async def counted(after_id: int, limit: int = 500) -> Any:
        reads.append(after_id)
        return await feed_after(after_id, limit)

    hub.store.feed_after = counted
    crowd = await asyncio.gather(*(watch({"Last-Event-ID": str(last)}) for _ in range(8)))
    for watcher in crowd:
        assert [d["alert_id"] for _, d in await watcher.messages(7)] == list(range(2, 9))
    assert reads.count(last) == 1, reads
