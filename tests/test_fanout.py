"""The live streams served by the stream worker (bridge.http.fanout), as `serve` runs them: the
server hands each stream's connection to the worker's process, which serves it exactly as the
server's hub would (live, resumed with Last-Event-ID, gzip, HTTP/1.0); a worker killed ends
its streams, which resume without a gap (served by the server until the worker is back); a
server shutting down ends them."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.config import Secret, load_settings
from bridge.host import apikeys
from bridge.http.app import create_app
from bridge.http.fanout import StreamWorker, _in_force, settle_in
from bridge.http.keys import HUB, STREAM_WORKER
from tests.support import until
from tests.test_stream import API, TIMEOUT, Client, MakeClient, Watcher, fire
from tests.test_web import sign_in


async def with_worker(aiohttp_client: MakeClient, tmp_path: Path, **server: Any) -> Client:
    """A server as `serve` runs it, its stream worker started; `server`: its settings."""
    base = load_settings(None, {}, db=str(tmp_path / "a.db"))
    settings = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"),
                                   api_token=Secret("api-secret"), **server)  # fmt: skip
    app = create_app(dataclasses.replace(base, server=settings), background=False,
                     stream_worker=True)  # fmt: skip
    made = await aiohttp_client(app)
    await until(lambda: made.app[STREAM_WORKER].alive, "the stream worker started")
    return made


@pytest.fixture
async def client(aiohttp_client: MakeClient, tmp_path: Path) -> Client:
    return await with_worker(aiohttp_client, tmp_path)


async def rest_of(watcher: Watcher) -> bytes:
    """What the stream sends until it ends (cut short, as a killed process leaves it, or
    ended with its last chunk)."""
    try:
        return await asyncio.wait_for(watcher.response.content.read(), TIMEOUT)
    except aiohttp.ClientPayloadError:  # a chunked body cut off
        return b""


def worker_of(client: Client) -> StreamWorker:
    worker: StreamWorker = client.app[STREAM_WORKER]
    return worker


async def open_stream(client: Client, **headers: str) -> Watcher:
    response = await client.get("/api/v1/events/stream", headers={**API, **headers})
    assert response.status == 200, await response.text()
    return Watcher(response)


async def test_a_stream_is_served_by_the_worker_live_and_resumed_exactly(client: Client) -> None:
    worker = worker_of(client)
    watcher = await open_stream(client)
    await until(lambda: worker.handed == 1, "the stream handed over")
    assert client.app[HUB].watchers == 0  # not the server's hub
    for n in range(1, 4):
        await fire(client, n)
    seen = await watcher.messages(3)
    assert [data["alert_id"] for _, data in seen] == [1, 2, 3]
    assert all(data["kind"] == "fired" for _, data in seen)
    watcher.response.close()
    for n in range(4, 6):
        await fire(client, n)
    again = await open_stream(client, **{"Last-Event-ID": str(seen[-1][0])})
    missed = await again.messages(2)
    assert [data["alert_id"] for _, data in missed] == [4, 5]
    assert [i for i, _ in missed] == sorted(i for i, _ in missed)
    assert missed[0][0] > seen[-1][0]
    await fire(client, 6)
    _, live = await again.message()
    assert live["alert_id"] == 6
    assert worker.handed == 2
    again.response.close()


async def test_gzip_and_http_1_0_streams_from_the_worker(client: Client) -> None:
    worker = worker_of(client)
    gz = await open_stream(client, **{"Accept-Encoding": "gzip"})  # (aiohttp inflates it)
    assert gz.response.headers["Content-Encoding"] == "gzip"
    await until(lambda: worker.handed == 1, "the gzip stream handed over")
    assert client.server.port is not None
    raw = socket.create_connection(("127.0.0.1", client.server.port), timeout=TIMEOUT)
    try:
        raw.sendall(b"GET /api/v1/events/stream HTTP/1.0\r\nHost: 127.0.0.1\r\n"
                    b"Authorization: Bearer api-secret\r\n\r\n")  # fmt: skip
        await until(lambda: worker.handed == 2, "the HTTP/1.0 stream handed over")
        await fire(client, 1, team="<b>web</b>")
        _, data = await gz.message()
        assert data["alert"]["labels"]["team"] == "<b>web</b>"
        received = b""
        deadline = time.monotonic() + TIMEOUT
        while b"\ndata: " not in received and time.monotonic() < deadline:
            received += await asyncio.to_thread(raw.recv, 65536)
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200")
        assert b"Transfer-Encoding" not in head  # HTTP/1.0: the bytes as they are
        assert body.startswith(b"retry: ")
        assert b'"alert_id":1' in body
    finally:
        raw.close()
        gz.response.close()


async def test_a_killed_worker_ends_its_streams_which_resume_without_a_gap(
    client: Client,
) -> None:
    worker = worker_of(client)
    watcher = await open_stream(client)
    await until(lambda: worker.handed == 1, "the stream handed over")
    await fire(client, 1)
    last, _ = await watcher.message()
    assert worker.proc is not None
    worker.proc.kill()
    assert b"data: " not in await rest_of(watcher)  # the stream ended, with nothing more
    await until(lambda: not worker.alive, "the server saw the worker go")
    await fire(client, 2)
    await fire(client, 3)
    # While the worker restarts, the server serves the stream itself.
    here = await open_stream(client, **{"Last-Event-ID": str(last)})
    missed = await here.messages(2)
    assert [data["alert_id"] for _, data in missed] == [2, 3]
    assert worker.handed == 1
    here.response.close()
    await until(lambda: worker.alive, "the stream worker started again")
    back = await open_stream(client, **{"Last-Event-ID": str(missed[-1][0])})
    await until(lambda: worker.handed == 2, "the stream handed to the new worker")
    await fire(client, 4)
    _, data = await back.message()
    assert data["alert_id"] == 4
    back.response.close()


async def test_a_server_shutting_down_ends_the_workers_streams(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    base = load_settings(None, {}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, api_token=Secret("api-secret"))
    made = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                           background=False, stream_worker=True))  # fmt: skip
    worker = worker_of(made)
    await until(lambda: worker.alive, "the stream worker started")
    watcher = await open_stream(made)
    await until(lambda: worker.handed == 1, "the stream handed over")
    proc = worker.proc
    assert proc is not None
    await made.server.close()  # the app's cleanup: the worker stopped, its streams ended
    # ended, not cut: the last chunk came (a cut-off body raises ClientPayloadError here)
    rest = await asyncio.wait_for(watcher.response.content.read(), TIMEOUT)
    assert b"data: " not in rest
    assert proc.returncode is not None
    await made.close()


async def test_the_worker_is_woken_once_per_read_it_asks_for_not_per_write(
    client: Client,
) -> None:
    worker = worker_of(client)
    for n in range(1, 21):  # nobody watches: the worker's hub reads nothing, asks nothing
        await fire(client, n)
    assert worker.told == 0
    watcher = await open_stream(client)
    await until(lambda: worker.handed == 1, "the stream handed over")
    began = time.monotonic()
    for n in range(21, 81):  # 60 writes, one after the other
        await fire(client, n)
    elapsed = time.monotonic() - began
    seen = await watcher.messages(60)
    assert [data["alert_id"] for _, data in seen] == list(range(21, 81))
    # At most one wake-up per read of the hub (one read per `every` at most), never one per
    # write (60).
    assert worker.told < 60
    assert worker.told <= elapsed / 0.04 + 3


@pytest.mark.parametrize(("priority", "policy"), [("idle", 5), ("normal", 0)])
async def test_the_worker_runs_at_sched_idle_unless_told_normal(
    aiohttp_client: MakeClient, tmp_path: Path, priority: str, policy: int
) -> None:
    """server.stream_priority: the worker's process (and the threads it starts) at
    SCHED_IDLE (5) by default, at SCHED_OTHER (0) when told "normal"; it serves either way."""
    base = load_settings(None, {"ALERTBRIDGE_STREAM_PRIORITY": priority},
                         db=str(tmp_path / "a.db"))  # fmt: skip
    server = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"),
                                 api_token=Secret("api-secret"))  # fmt: skip
    made = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                           background=False, stream_worker=True))  # fmt: skip
    worker = worker_of(made)
    await until(lambda: worker.alive, "the stream worker started")
    assert worker.proc is not None
    assert os.sched_getscheduler(worker.proc.pid) == policy
    watcher = await open_stream(made)
    await until(lambda: worker.handed == 1, "the stream handed over")
    await fire(made, 1)
    _, data = await watcher.message()
    assert data["alert_id"] == 1
    watcher.response.close()


def test_settling_in_lowers_the_priority_and_quiets_the_collector() -> None:
    """In a process of its own (what it changes is process-wide): SCHED_IDLE, start-up's
    objects frozen, young collections every 50,000 allocations rather than 700."""
    code = ("import gc, os; from bridge.http.fanout import settle_in; settle_in('idle');"
            " print(os.sched_getscheduler(0), gc.get_freeze_count() > 1000,"
            " gc.get_threshold())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    assert out.stdout.split(None, 2) == ["5", "True", "(50000, 20, 100)\n"]


def test_a_worker_that_may_not_lower_its_priority_says_so_and_runs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refused(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    frozen: list[bool] = []
    monkeypatch.setattr(os, "sched_setscheduler", refused)
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(gc, "set_threshold", lambda *args: None)
    settle_in("idle")
    assert "cannot run at SCHED_IDLE" in caplog.text
    assert "Operation not permitted" in caplog.text
    assert frozen == [True]


@pytest.mark.parametrize("by", ["bearer", "session"])
@pytest.mark.parametrize("in_worker", [True, False], ids=["worker", "server"])
async def test_a_revoked_keys_streams_end_and_the_others_go_on(
    aiohttp_client: MakeClient, tmp_path: Path, in_worker: bool, by: str
) -> None:
    """Revoking a key ends the streams it opened (within a few seconds: the keys file is
    looked at once a second), whether the worker or the server serves them and whether the
    key came as a bearer token or signed in the page's session (which an EventSource sends);
    another key's stream goes on."""
    keys = tmp_path / "keys.json"
    tokens = {name: apikeys.add(keys, name, "read")[1] for name in ("rita", "sam")}
    base = load_settings(None, {"ALERTBRIDGE_KEYS_FILE": str(keys)}, db=str(tmp_path / "a.db"))
    server = dataclasses.replace(base.server, webhook_token=Secret("hook-secret"))
    made = await aiohttp_client(create_app(dataclasses.replace(base, server=server),
                                           background=False, stream_worker=in_worker))  # fmt: skip
    if in_worker:
        await until(lambda: worker_of(made).alive, "the stream worker started")
    if by == "session":
        await sign_in(made, tokens["rita"])
        response = await made.get("/api/v1/events/stream")  # (the cookie only)
        assert response.status == 200, await response.text()
        rita = Watcher(response)
    else:
        rita = await open_stream(made, Authorization=f"Bearer {tokens['rita']}")
    sam = await open_stream(made, Authorization=f"Bearer {tokens['sam']}")
    if in_worker:
        await until(lambda: worker_of(made).handed == 2, "the streams handed over")
    else:
        await until(lambda: made.app[HUB].watchers == 2, "the server's hub serves both")
    await fire(made, 1)
    assert (await rita.message())[1]["alert_id"] == 1
    assert (await sam.message())[1]["alert_id"] == 1
    apikeys.revoke(keys, "rita")
    ended = await rest_of(rita)  # (bounded by TIMEOUT: it fails if the stream goes on)
    assert b"data: " not in ended
    await fire(made, 2)
    assert (await sam.message())[1]["alert_id"] == 2
    sam.response.close()


def test_the_workers_view_of_the_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No keys file: nothing to check; an unreadable one: nothing checked, and it says so; a
    good one: in force until revoked."""
    assert _in_force(None) is None
    broken = tmp_path / "broken.json"
    broken.write_text("{broken")
    assert _in_force(str(broken)) is None
    assert "streams will not end when a key is revoked" in caplog.text
    keys = tmp_path / "keys.json"
    key, _ = apikeys.add(keys, "rita", "read")
    in_force = _in_force(str(keys))
    assert in_force is not None
    assert in_force(key.sha256)
    assert not in_force("0" * 64)


async def test_the_workers_streams_count_against_the_connection_cap(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """With server.max_connections streams held by the worker, another is answered 503
    too_many_streams before any 200 (not a 200 and a stream cut at once, which an EventSource
    would retry every 2 s); once one ends, the worker says so and a new one is taken."""
    made = await with_worker(aiohttp_client, tmp_path, max_connections=2)
    worker = worker_of(made)
    first, second = await open_stream(made), await open_stream(made)
    await until(lambda: worker.handed == 2, "the streams handed over")
    assert worker.open_streams == 2
    refused = await made.get("/api/v1/events/stream", headers=API)
    assert refused.status == 503
    body = await refused.json()
    assert body["error"] == "too_many_streams"
    assert body["message"] == ("2 event streams are open (server.max_connections);"
                               " try again later")  # fmt: skip
    first.response.close()
    # at once: the worker's connection_lost, not its next keepalive (15 s on)
    await until(lambda: worker.open_streams == 1, "the worker said a stream ended", 5)
    third = await open_stream(made)
    await until(lambda: worker.handed == 3, "the new stream handed over")
    await fire(made, 1)
    assert (await third.message())[1]["alert_id"] == 1
    assert (await second.message())[1]["alert_id"] == 1
    third.response.close()
    second.response.close()


async def test_a_stream_the_worker_cannot_take_is_served_here(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's queue full (or its socket gone) at the hand-over: the server serves the
    stream itself, and says why."""
    worker = worker_of(client)

    def full(*args: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(socket, "send_fds", full)
    watcher = await open_stream(client)
    await until(lambda: client.app[HUB].watchers == 1, "the server's hub serves it")
    assert worker.handed == 0
    assert "the stream worker did not take a stream" in caplog.text
    await fire(client, 1)
    assert (await watcher.message())[1]["alert_id"] == 1
    watcher.response.close()


async def test_a_worker_that_never_says_ready_is_killed_and_started_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker silent past start_timeout is killed and started again after RESTART_AFTER
    (no stream is handed to it meanwhile)."""
    from bridge.store import open_store

    store = open_store(tmp_path / "a.db")
    await store.start()
    marks = tmp_path / "starts"
    silent = [sys.executable, "-c",
              f"import time; open({str(marks)!r}, 'a').write('x'); time.sleep(60)"]  # fmt: skip
    worker = StreamWorker(silent, store)
    worker.start_timeout = 0.3
    task = asyncio.create_task(worker.run())
    try:
        await until(lambda: marks.exists() and len(marks.read_text()) >= 2,
                    "a second start", seconds=20)  # fmt: skip
        assert "the stream worker did not start within 0.3 s" in caplog.text
        assert not worker.alive
        assert not worker.handover(0, {})
    finally:
        await worker.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


async def test_streams_served_while_the_worker_restarts_are_capped_and_handed_back(
    aiohttp_client: MakeClient, tmp_path: Path
) -> None:
    """With the worker down the server serves streams itself on at most a sixteenth of its
    connections (503 too_many_streams past it: the webhook and the API keep the rest); once
    a worker is up again it ends them, and their clients resume with it, missing nothing."""
    made = await with_worker(aiohttp_client, tmp_path, max_connections=32)
    worker = worker_of(made)
    assert worker.proc is not None
    worker.proc.kill()
    await until(lambda: not worker.alive, "the server saw the worker go")
    here = [await open_stream(made), await open_stream(made)]
    await until(lambda: made.app[HUB].watchers == 2, "the server serves them")
    refused = await made.get("/api/v1/events/stream", headers=API)
    assert refused.status == 503
    said = await refused.json()
    assert said["error"] == "too_many_streams"
    assert "(server.max_connections / 16 while its stream worker restarts)" in said["message"]
    await fire(made, 1)  # the webhook is heard meanwhile
    last = [(await w.message())[0] for w in here]
    await until(lambda: worker.alive, "the stream worker started again")
    for watcher in here:
        assert b"data: " not in await rest_of(watcher)  # ended, to come back to the worker
    # at once (the hub let go of them), not at its next keepalive (15 s on)
    await until(lambda: made.app[HUB].watchers == 0, "the server let them go", 5)
    back = [await open_stream(made, **{"Last-Event-ID": str(n)}) for n in last]
    await until(lambda: worker.handed == 2, "both handed to the new worker")
    await fire(made, 2)
    for watcher in back:
        assert (await watcher.message())[1]["alert_id"] == 2
        watcher.response.close()


async def test_connections_lost_together_are_let_go_of_in_one_sweep(tmp_path: Path) -> None:
    """Each lost connection asks for its watcher to be let go of; those lost in one turn of
    the worker's loop share one sweep of the watchers (not one sweep each: 1,024 streams
    dropping at once would be a million checks)."""
    from bridge.http.fanout import _Worker
    from bridge.store import open_store

    store = open_store(tmp_path / "a.db")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        worker = _Worker(store, 8, ours)
        sweeps: list[int] = []
        worker.hub.let_go_of_gone = lambda: sweeps.append(1)  # type: ignore[method-assign]
        for _ in range(100):
            worker.lost()
        assert sweeps == []  # at the next turn of the loop, not in the callback
        await asyncio.sleep(0)
        assert sweeps == [1]
        worker.lost()
        await asyncio.sleep(0)
        assert sweeps == [1, 1]
    finally:
        ours.close()
        theirs.close()
        await store.close()
