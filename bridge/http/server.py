"""The HTTP server: aiohttp's protocol with the limits a hostile or broken client meets.

aiohttp alone closes a connection that never completes its request only at the keep-alive
timer, has no cap on connections, and answers a malformed request line or header in plain
text while logging a traceback. Here each connection is a `GuardedHandler`:

- a request's head must arrive within `header_timeout` of its first byte (or of the
  connection's opening; checked a few times per timeout, so cut within 1.25 times it); the
  body within `body_timeout` (`bridge.http.util.read_json`);
- at most `max_connections` are open: at the cap the oldest connection idle between requests
  is closed to make room, else the new one is answered 503 and closed (both counted);
- what aiohttp's parser refuses is answered as every other error, JSON naming the problem,
  and logged at debug level without a traceback (it is the client's, not ours).

`serve()` runs the app like `web.run_app`, binding before it reports itself listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_runner import GracefulExit

from bridge.http.errors import error_response

log = logging.getLogger(__name__)

# A connection's phase: opened and nothing received / between requests / reading a request's
# head / serving it. The head is due header_timeout after the opening or its first byte.
_NEW, _IDLE, _HEAD, _BUSY = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Timeouts (seconds) and the connection cap of the server."""

    max_connections: int = 1024
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    keepalive_timeout: float = 30.0


class ConnectionGuard:
    """Counts the open connections, decides who may open one, and closes those whose request
    head is overdue (one sweep every quarter of the head timeout, while any is open: no timer
    per request). Shared by all handlers."""

    def __init__(self, limits: ConnectionLimits, on_event: Callable[[str], None] | None = None):
        self.limits = limits
        self._open: dict[GuardedHandler, None] = {}  # insertion order: oldest first
        self._on_event = on_event or (lambda kind: None)
        self._sweeper: asyncio.Task[None] | None = None
        self.refused = 0
        self.evicted = 0
        self.header_timeouts = 0

    @property
    def open(self) -> int:
        return len(self._open)

    @property
    def idle(self) -> int:
        """Open connections with nothing of a request received."""
        return sum(1 for h in self._open if h.idle)

    def admit(self, handler: GuardedHandler) -> bool:
        if len(self._open) >= self.limits.max_connections:
            victim = next((h for h in self._open if h.idle), None)
            if victim is None:
                self.refused += 1
                self._on_event("refused")
                return False
            self._open.pop(victim)
            victim.force_close()
            self.evicted += 1
            self._on_event("evicted")
        self._open[handler] = None
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return True

    def release(self, handler: GuardedHandler) -> None:
        self._open.pop(handler, None)

    async def stop(self) -> None:
        """Stop sweeping (the server is shutting down)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        tick = max(0.05, self.limits.header_timeout / 4)
        while self._open:
            await asyncio.sleep(tick)
            now = loop.time()
            for handler in [h for h in self._open if h.overdue(now)]:
                self.header_timeouts += 1
                self._on_event("header_timeout")
                handler.head_timed_out()


def raw_response(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 JSON error response that closes the connection, as bytes."""
    body = orjson.dumps({"error": code, "message": message})
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    return head.encode() + b"\r\n" + body


_TOO_MANY = raw_response(
    503, "Service Unavailable", "too_many_connections", "too many open connections; retry later"
)
_HEAD_TIMEOUT = raw_response(
    408, "Request Timeout", "header_timeout", "the request head did not arrive in time"
)


def _parser_error(exc: BaseException | None, message: str | None) -> tuple[int, str, str]:
    """(status, code, message) for what aiohttp's parser refused."""
    if isinstance(exc, http_exceptions.LineTooLong):
        limit = exc.args[1] if len(exc.args) > 1 else "the limit of"
        return 431, "line_too_long", f"a line of the request head exceeds {limit} bytes"
    return 400, "bad_request", (message or getattr(exc, "message", "") or "bad request")[:300]


class GuardedHandler(RequestHandler):
    """aiohttp's protocol handler with a head timeout, the connection cap, JSON errors."""

    __slots__ = ("_deadline", "_guard", "_phase", "_refused")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._phase = _NEW
        self._deadline = 0.0
        self._refused = False

    @property
    def idle(self) -> bool:
        """Nothing of a request received (new, or between requests): safe to close."""
        return self._phase <= _IDLE

    def overdue(self, now: float) -> bool:
        """A request head (or a new connection's first request) is late."""
        return (self._phase == _HEAD or self._phase == _NEW) and now > self._deadline

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._guard.admit(self):
            self._refused = True
            if isinstance(transport, asyncio.Transport):  # a socket's: always
                transport.write(_TOO_MANY)
            transport.close()
            return
        super().connection_made(transport)
        # A new connection must send its request head in time, as with Go's servers.
        self._deadline = self._loop.time() + self._guard.limits.header_timeout

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase == _IDLE:  # the first bytes of the next request: its head is due
            self._phase = _HEAD
            self._deadline = self._loop.time() + self._guard.limits.header_timeout
        elif self._phase == _NEW:
            self._phase = _HEAD
        RequestHandler.data_received(self, data)  # not super(): this runs for every read

    def request_started(self) -> None:
        """The head is in: the handler runs (the app's outermost middleware calls this, and
        request_done when the handler returned)."""
        self._phase = _BUSY

    def request_done(self) -> None:
        # Idle again (closable at the cap; aiohttp's keep-alive timer closes it in time),
        # while the response is written: the oldest idle connection is closed first, never
        # the one that just answered.
        self._phase = _IDLE

    def head_timed_out(self) -> None:
        if self.transport is not None and self._phase == _HEAD:
            self.transport.write(_HEAD_TIMEOUT)  # part of a request arrived: say why it is cut
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        if status >= 500:
            if status == 500:  # a bug of ours that escaped the error middleware
                log.error("unhandled error answering %s", request.remote, exc_info=exc)
            if status == 500:
                response = error_response(500, "internal", "internal error")
            else:
                response = error_response(status, "timeout", "timed out")
        else:
            status, code, text = _parser_error(exc, message)
            log.debug("refused a malformed request from %s: %s", request.remote, text)
            response = error_response(status, code, text)
        response.force_close()
        return response


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are GuardedHandlers."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._host, self._port, self._guard = host, port, guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:  # set by the runner's setup, which start() follows
            raise RuntimeError("the app runner was not set up")
        loop = asyncio.get_running_loop()
        # aiohttp's Server passes its keyword arguments on to each RequestHandler it makes;
        # the same arguments make ours (the private attribute is pinned by test_server).
        kwargs = server._kwargs

        def factory() -> GuardedHandler:
            return GuardedHandler(self._guard, server, loop=loop, **kwargs)

        self._server = await loop.create_server(
            factory, self._host, self._port, backlog=self._backlog, reuse_address=True
        )


class ListenError(Exception):
    """The address could not be bound (in use, not local, not permitted)."""


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard limit, as Go programs do; the result."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    return soft


#: Connections the kernel queues for accept(), and the most asyncio accepts in one go.
BACKLOG = 128
#: Descriptors kept beside the cap: the database's connections (three each), logs, the
#: event loop; plus what one accept() burst opens before the cap can refuse it, and the
#: sockets of closed connections asyncio releases a turn of the loop later.
RESERVED_FILES = 128 + 2 * BACKLOG


def fitted_limits(
    limits: ConnectionLimits, open_files: int, reserve: int = RESERVED_FILES
) -> ConnectionLimits:
    """The limits with the connection cap lowered to leave `reserve` descriptors free."""
    cap = max(1, min(limits.max_connections, open_files - reserve))
    if cap < limits.max_connections:
        log.warning(
            "at most %d connections (open files limit %d, %d kept for the database, logs and"
            " accepting)", cap, open_files, reserve,
        )  # fmt: skip
    return ConnectionLimits(cap, limits.header_timeout, limits.body_timeout,
                            limits.keepalive_timeout)  # fmt: skip


def serve(
    app: web.Application,
    host: str,
    port: int,
    guard: ConnectionGuard,
    *,
    access_log: logging.Logger | None,
    on_listening: Callable[[str], None],
) -> None:
    """Run the app until SIGINT or SIGTERM: start-up (storage) first, then bind, then report.

    Raises ListenError when the address cannot be bound, after shutting the app down.
    """
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    task = loop.create_task(_serve(app, host, port, guard, access_log, on_listening))
    try:
        loop.run_until_complete(task)
    except (GracefulExit, KeyboardInterrupt):
        task.cancel()  # runs _serve's cleanup: the app's shutdown, storage closed last
        # Until the cleanup is over: a signal that comes before _serve noted it is stopping
        # breaks this run off too, and closing the async generators while the cleanup still
        # runs them broke it with tracebacks (SIGINT to the process group and SIGTERM from
        # `dev`, as Ctrl-C does). Bounded: a signal a round at most.
        for _ in range(1000):
            with contextlib.suppress(asyncio.CancelledError, GracefulExit, KeyboardInterrupt):
                loop.run_until_complete(task)
            if task.done():
                break
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


async def start(
    app: web.Application,
    host: str,
    port: int,
    guard: ConnectionGuard,
    access_log: logging.Logger | None = None,
    handle_signals: bool = False,
) -> web.AppRunner:
    """Start the app (its cleanup contexts: storage), then bind; the runner to clean up.

    Raises ListenError when the address cannot be bound, after shutting the app down.
    """
    runner = web.AppRunner(
        app,
        handle_signals=handle_signals,
        access_log=access_log,
        keepalive_timeout=guard.limits.keepalive_timeout,
        shutdown_timeout=5.0,
    )
    await runner.setup()
    try:
        await GuardedSite(runner, host, port, guard).start()
    except OSError as exc:
        await runner.cleanup()
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        if isinstance(exc, socket.gaierror):
            reason = f"cannot resolve the host name ({exc.strerror})"
        raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    guard: ConnectionGuard,
    access_log: logging.Logger | None,
    on_listening: Callable[[str], None],
) -> None:
    runner = await start(app, host, port, guard, access_log, handle_signals=True)
    try:
        on_listening(f"http://{host}:{port}")
        while True:
            await asyncio.sleep(3600)
    finally:
        _stopping(asyncio.get_running_loop())
        try:
            await runner.cleanup()
        finally:  # (the runner removed every handler: the process only exits from here)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_IGN)


def _stopping(loop: asyncio.AbstractEventLoop) -> None:
    """Once stopping, a second SIGTERM or SIGINT (a second Ctrl-C, or one sent to the whole
    process group as `timeout` does) is noted, not raised again inside the cleanup (it
    broke it off halfway, with tracebacks)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, log.warning, "already stopping: %s ignored", sig.name)
