"""`GET /api/v1/events/stream`: the feed of changes as Server-Sent Events (bridge.feed.hub).

Each event is one SSE message whose `id` is the event's id and whose data is the event with a
snapshot of its alert. A client that reconnects with `Last-Event-ID` (an EventSource does it by
itself) gets exactly the events after that id, in order; `?after=ID` does the same for a first
connection; with neither the stream starts at the newest event. Query parameters filter as the
alert list does (status, severity, rule, filter, acknowledged), plus kind (event kinds,
comma-separated) and alert_id. A comment line every 15 s of quiet keeps proxies from cutting
the stream.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

from aiohttp import HttpVersion11, web

from bridge.feed.hub import GZIP_HEADER, EventHub, WatchFilter, deflated, parse_position
from bridge.host.aio import stop_task
from bridge.http.auth import authorize
from bridge.http.errors import HttpError
from bridge.http.fanout import StreamWorker
from bridge.http.keys import HUB, KEYRING, SETTINGS, STORE, STREAM_WORKER
from bridge.http.peers import TransportPeer

routes = web.RouteTableDef()
RETRY_MS = 2000
#: The server serves event streams itself on at most 1/STREAMS_HERE of its connections (no
#: stream worker: it serves them all, by configuration)...
STREAMS_HERE = 4
#: ... and on at most 1/STREAMS_DURING_RESTART of them while its stream worker restarts (two
#: seconds): the streams it holds meanwhile share its loop with the webhook and are handed
#: back at once (bench.restart: a quarter, 256 streams, kept the webhook's p99 at 2.2-2.8x its
#: idle p99 during a restart under 1,024 reconnecting streams).
STREAMS_DURING_RESTART = 16


def streams_here(worker: object | None, limit: int) -> int:
    """How many streams the server may serve itself: with no worker configured, or while the
    one configured restarts."""
    return max(1, limit // (STREAMS_HERE if worker is None else STREAMS_DURING_RESTART))


#: The server's own hub writes to its streams at most this often a second (EventHub.pause),
#: a fifth of the stream worker's: it shares its loop with the webhook. While the worker
#: restarts, 256 streams served here each 0.04 s took 14 % of the loop's samples and the
#: webhook's p99 went to 16 ms (bench.restart); at this budget they get a batch each 0.13 s.
SERVER_WRITES_PER_SECOND = 2_000.0


class Turns:
    """Stream opens one per turn of the event loop: a reconnecting crowd (every stream of a
    restarted worker, hundreds within a second) then delays the webhook's next request by
    one stream open (about 0.3 ms), not by all of those that arrived before it."""

    def __init__(self) -> None:
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._scheduled = False

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        ours = loop.create_future()
        self._waiting.append(ours)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._next)
        await ours

    def _next(self) -> None:
        self._scheduled = False
        while self._waiting:
            ours = self._waiting.popleft()
            if not ours.done():  # (cancelled: its client went away)
                ours.set_result(None)
                break
        if self._waiting:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._next)


TURNS = web.AppKey("stream_turns", Turns)


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding names gzip (and not with q=0).

    >>> accepts_gzip("gzip, deflate, br"), accepts_gzip("gzip;q=0"), accepts_gzip("")
    (True, False, False)
    """
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().lower().removeprefix("q=")
            return not (params and q.replace(".", "").strip("0") == "")
    return False


class SsePeer(TransportPeer):
    """A stream of this server's: chunks written to its request's transport (the response's
    headers went through aiohttp; its last chunk, at the end, does too)."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        # (enable_chunked_encoding: framed)
        super().__init__(request.version >= HttpVersion11,
                         request.app[SETTINGS].server.stream_drain_timeout)  # fmt: skip
        self.request = request
        self.response = response

    def _transport(self) -> asyncio.BaseTransport | None:
        return self.request.transport


@routes.get("/api/v1/events/stream")
async def events_stream(request: web.Request) -> web.StreamResponse:
    """The feed of changes, live, as text/event-stream."""
    await request.app[TURNS].turn()
    key_sha256 = authorize(request, "read").key_sha256
    wanted = WatchFilter.parse({key: request.query.getall(key) for key in request.query})
    position = parse_position(request.headers.get("Last-Event-ID"), request.query.get("after"))
    hub = request.app[HUB]
    gzip = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    headers = {
        "Content-Type": "text/event-stream; charset=utf-8",
        "Cache-Control": "no-cache, no-store",
        "X-Accel-Buffering": "no",  # nginx: pass each message on at once
        "Vary": "Accept-Encoding",
    }
    if gzip:
        headers["Content-Encoding"] = "gzip"
    worker = request.app.get(STREAM_WORKER)
    limit = request.app[SETTINGS].server.max_connections
    if worker is not None and worker.alive:
        if worker.open_streams + hub.watchers >= limit:
            raise HttpError(503, "too_many_streams",
                            f"{limit} event streams are open (server.max_connections);"
                            " try again later")  # fmt: skip
    elif hub.watchers >= streams_here(worker, limit):
        # Served by the server itself (no worker, or it restarts): never more than a part of
        # its connections, so that Alertmanager's webhook and the API always find one.
        share = STREAMS_HERE if worker is None else STREAMS_DURING_RESTART
        raise HttpError(503, "too_many_streams",
                        f"{hub.watchers} event streams are served by the server itself, the"
                        f" most it serves (server.max_connections / {share}"
                        f"{'' if worker is None else ' while its stream worker restarts'});"
                        " try again later")  # fmt: skip
    if position is None:  # from now: before the 200, so that what follows it is in the stream
        position = await request.app[STORE].last_event_id()
    response = web.StreamResponse(headers=headers)
    peer = SsePeer(request, response)
    if peer.chunked:
        response.enable_chunked_encoding()
    await response.prepare(request)
    first = b"retry: %d\n\n" % RETRY_MS
    try:
        await response.write(GZIP_HEADER + deflated(first) if gzip else first)
        if _handed_over(request, position, gzip, peer.chunked, key_sha256):
            return response
        here = worker.served_here if worker is not None else set()
        if request.transport is not None:
            here.add(request.transport)
        try:
            await hub.watch(position, wanted, gzip, peer, key_sha256)
        finally:
            here.discard(request.transport)
    except ConnectionResetError:
        pass  # the watcher went away
    return response


def _handed_over(request: web.Request, position: int, gzip: bool, chunked: bool,
                 key_sha256: str | None) -> bool:  # fmt: skip
    """Give the stream to the stream worker (bridge.http.fanout), if it runs and everything
    written so far is in the kernel; then let go of the connection here without closing it
    (the worker's copy of the descriptor keeps it open)."""
    worker = request.app.get(STREAM_WORKER)
    transport = request.transport
    if worker is None or not worker.alive or transport is None or transport.is_closing():
        return False
    if not isinstance(transport, asyncio.WriteTransport) or transport.get_write_buffer_size():
        return False
    sock = transport.get_extra_info("socket")
    query = {key: request.query.getall(key) for key in request.query}
    stream = {"position": position, "query": query, "gzip": gzip, "chunked": chunked,
              "key": key_sha256}  # fmt: skip
    if sock is None or not worker.handover(sock.fileno(), stream):
        return False
    transport.abort()  # (no FIN: the worker holds the connection; nothing more written here)
    return True


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the hub beside the store (it reads nothing while nobody watches); end every
    stream at shutdown, so that the server does not wait on them."""
    ring = app.get(KEYRING)
    hub = app[HUB] = EventHub(app[STORE], in_force=None if ring is None else ring.in_force,
                              writes_per_second=SERVER_WRITES_PER_SECOND)  # fmt: skip
    app[TURNS] = Turns()
    task = asyncio.create_task(hub.run_forever(), name="alertbridge-event-hub")
    yield
    hub.close()
    await stop_task(task)


async def stream_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """`serve`: the stream worker beside the server (bridge.http.fanout), stopped before the
    store closes (its streams end then)."""
    worker = app[STREAM_WORKER] = StreamWorker.for_settings(app[SETTINGS], app[STORE])
    worker.after_hand_back = app[HUB].let_go_of_gone
    task = asyncio.create_task(worker.run(), name="alertbridge-stream-worker")
    yield
    await worker.stop()
    await stop_task(task)


async def end_streams(app: web.Application) -> None:
    """on_shutdown: end every stream, so that the server does not wait on them."""
    hub = app.get(HUB)
    if hub is not None:
        hub.close()
