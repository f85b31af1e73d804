"""The guarded HTTP server: idle and half-sent connections are closed after the timeouts and
never stop a webhook, the connection cap refuses cleanly (or closes an idle connection), and
floods of repeated log lines are collapsed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from bridge.core.logutil import RepeatFilter, Throttle
from bridge.http.keys import GUARD, REGISTRY
from bridge.http.server import ConnectionLimits, fitted_limits
from tests.httpraw import (
    WEBHOOK_TOKEN,
    guarded_server,
    raw_request,
    read_response,
    request_bytes,
    settings_for,
)
from tests.payloads import am_alert, notification
from tests.support import LOOPBACK

HOOK = {"Authorization": f"Bearer {WEBHOOK_TOKEN}", "Content-Type": "application/json"}


def probe(n: int) -> bytes:
    body = json.dumps(notification(am_alert(f"{n:016x}"))).encode()
    return request_bytes("POST", "/api/v1/alertmanager", body, HOOK)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sent until it closed the connection (bounded in time)."""
    return await asyncio.wait_for(reader.read(), timeout)


def test_the_private_aiohttp_attribute_we_rely_on_is_there() -> None:
    """GuardedSite builds handlers with the Server's own keyword arguments (`_kwargs`)."""

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    async def check() -> None:
        server = web.Server(handler, keepalive_timeout=3)
        assert server._kwargs == {"keepalive_timeout": 3}

    asyncio.run(check())


async def test_idle_and_half_sent_sockets_do_not_stop_a_webhook(tmp_path: Path) -> None:
    """100 sockets that send nothing, half a request line, headers without their end, or
    headers without the body: a webhook sent meanwhile is stored at once; after the timeouts
    the server has closed all of them (408 JSON to those that sent part of a head)."""
    settings = settings_for(tmp_path, header_timeout=1, body_timeout=1)
    async with guarded_server(settings) as server:
        partial = [
            b"",
            b"POST /api/v1/alertm",
            b"POST /api/v1/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le",
            probe(999)[:-20],  # the whole head, the body short of 20 bytes
        ]
        sockets = []
        for i in range(100):
            reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
            writer.write(partial[i % 4])
            await writer.drain()
            sockets.append((i % 4, reader, writer))
        answer = await raw_request(server.port, probe(1), timeout=5)
        assert answer.status == 200
        assert answer.json()["fired"] == 1
        outcomes = await asyncio.gather(*(closed_by_server(r, 10) for _, r, _ in sockets))
        for (kind, _, writer), sent in zip(sockets, outcomes, strict=True):
            if kind == 0:
                assert sent == b""  # nothing to answer: closed quietly
            elif kind in (1, 2):
                assert b"408 Request Timeout" in sent
                assert b'"header_timeout"' in sent
            else:
                assert b" 408 " in sent.split(b"\r\n", 1)[0]
                assert b'"body_timeout"' in sent
            await close(writer)
        guard = server.app[GUARD]
        assert guard.header_timeouts == 75
        assert guard.open == 0


async def test_a_slow_head_is_cut_even_if_bytes_keep_coming(tmp_path: Path) -> None:
    """The head timeout runs from the request's first byte: trickling bytes does not extend
    it (slowloris)."""
    async with guarded_server(settings_for(tmp_path, header_timeout=1)) as server:
        reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        writer.write(b"GET /-/healthy HTTP/1.1\r\n")

        async def trickle() -> None:
            for _ in range(40):  # a header byte every 0.1 s, for up to 4 s
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)

        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.ensure_future(trickle())
        try:
            sent: bytes | None = await closed_by_server(reader, 5)
        except ConnectionResetError:  # closed while our bytes kept coming: TCP resets
            sent = None
        assert loop.time() - started < 3  # cut at ~1 s, not after the 4 s of trickling
        assert sent is None or b"408 Request Timeout" in sent
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await task
        await close(writer)


async def test_keep_alive_connections_serve_several_requests(tmp_path: Path) -> None:
    """A connection reused between requests (as Alertmanager reuses them) is not cut by the
    head timeout while it waits, and then closed by the keep-alive timeout."""
    settings = settings_for(tmp_path, header_timeout=1, keepalive_timeout=2)
    async with guarded_server(settings) as server:
        reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
        for n in range(3):
            writer.write(probe(n + 10))
            await writer.drain()
            assert (await read_response(reader)).status == 200
            await asyncio.sleep(1.2)  # longer than the head timeout, shorter than keep-alive
        assert await closed_by_server(reader, 10) == b""
        await close(writer)


async def test_the_cap_closes_idle_connections_then_refuses(tmp_path: Path) -> None:
    """At the cap, a new connection takes the place of the oldest idle one (closed quietly);
    when every open connection is mid-request, the newcomer is answered 503 JSON and closed;
    both counted."""
    async with guarded_server(settings_for(tmp_path, max_connections=4)) as server:
        guard = server.app[GUARD]
        idle = [await asyncio.open_connection(LOOPBACK, server.port) for _ in range(4)]
        answer = await raw_request(server.port, probe(1))  # evicts the oldest idle one
        assert answer.status == 200
        assert guard.evicted == 1
        assert await closed_by_server(idle[0][0], 5) == b""
        # Now fill the cap with connections that are mid-head (not idle).
        busy = []
        for _ in range(4):
            reader, writer = await asyncio.open_connection(LOOPBACK, server.port)
            writer.write(b"GET /-/healthy HTTP/1.1\r\n")
            await writer.drain()
            busy.append((reader, writer))
        for _ in range(100):  # until the server has read a byte of each (bounded: 5 s)
            if guard.idle == 0:
                break
            await asyncio.sleep(0.05)
        refused = await raw_request(server.port, probe(2))
        assert refused.status == 503
        assert refused.json()["error"] == "too_many_connections"
        assert refused.headers["retry-after"] == "1"
        assert guard.refused == 1
        text = generate_latest(server.app[REGISTRY]).decode()
        assert 'alertbridge_http_connection_events_total{event="refused"} 1.0' in text
        # the probe's connection took idle[0]'s place, three of the mid-head ones the others'
        assert 'alertbridge_http_connection_events_total{event="evicted"} 4.0' in text
        for reader, _ in idle:
            assert await closed_by_server(reader, 5) == b""
        assert "alertbridge_http_connections 4.0" in text
        for _, writer in idle + busy:
            await close(writer)


def test_fitted_limits_leave_descriptors_for_the_rest() -> None:
    """The cap is lowered below the open-files limit (384 kept), never raised."""
    limits = ConnectionLimits(max_connections=1024)
    assert fitted_limits(limits, 1024).max_connections == 640
    assert fitted_limits(limits, 20000).max_connections == 1024
    assert fitted_limits(limits, 100).max_connections == 1


def test_repeated_log_lines_collapse_into_one_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An EMFILE-style flood logs once per interval; the next line says how many were left
    out; other messages pass."""
    now = [0.0]
    log = logging.getLogger("flood-test")
    repeat = RepeatFilter(interval=10, clock=lambda: now[0])
    log.addFilter(repeat)
    try:
        with caplog.at_level(logging.ERROR, logger="flood-test"):
            for _ in range(1000):
                log.error("socket.accept() out of system resource\nsocket: <fd=10>")
            log.error("something else")
            now[0] = 10.5
            log.error("socket.accept() out of system resource\nsocket: <fd=10>")
    finally:
        log.removeFilter(repeat)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert messages[1] == "something else"
    assert "999 similar message(s) suppressed in the last 10s" in messages[2]


def test_throttle_forgets_the_least_recent_keys() -> None:
    """The throttle's memory is bounded."""
    throttle = Throttle(60, max_keys=3, clock=lambda: 0.0)
    for key in "abcd":
        assert throttle.due(key)
    assert throttle.due("a")  # forgotten, so due again
    assert not throttle.due("d")


def test_a_second_stop_signal_does_not_break_off_the_shutdown(tmp_path: Path) -> None:
    """SIGTERMs in a row (a second Ctrl-C, or `timeout` signalling the whole process group):
    the later ones are noted or ignored, the shutdown finishes cleanly (exit 0, no
    traceback). They used to raise again inside the cleanup, which stopped halfway with
    tracebacks, or killed the process once the runner had dropped its handlers."""
    import signal
    import time

    from tests.support import bridge_env, free_port, start_bridge

    port = free_port()
    proc = start_bridge(tmp_path, port, bridge_env(), name="twice")
    deadline = time.monotonic() + 10
    while proc.popen.poll() is None and time.monotonic() < deadline:  # every phase of it
        proc.popen.send_signal(signal.SIGTERM)
        time.sleep(0.005)
    code = proc.stop(signal.SIGTERM)
    output = proc.output()
    assert code == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def test_sigint_and_sigterm_together_stop_cleanly(tmp_path: Path) -> None:
    """Ctrl-C on `dev` sends SIGINT to the process group and `dev` a SIGTERM to the bridge:
    two signals before the cleanup begins. The cleanup still runs to its end, alone (it was
    broken off, and the async generators it was running closed under it: tracebacks, tasks
    destroyed pending). Five rounds: before the fix five of six failed."""
    import signal

    from tests.support import bridge_env, free_port, start_bridge

    for round_ in range(5):
        proc = start_bridge(tmp_path, free_port(), bridge_env(), name=f"both{round_}",
                            db=f"both{round_}.db")  # fmt: skip
        proc.popen.send_signal(signal.SIGINT)
        proc.popen.send_signal(signal.SIGTERM)
        code = proc.stop(signal.SIGTERM)
        output = proc.output()
        assert code == 0, output[-3000:]
        assert "Traceback" not in output, output[-3000:]
        assert "already running" not in output, output[-3000:]
