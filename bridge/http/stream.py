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
from collections.abc import AsyncIterator

from aiohttp import HttpVersion11, web

from bridge.core.aio import stop_task
from bridge.feed.hub import GZIP_HEADER, EventHub, WatchFilter, deflated, parse_position
from bridge.http.auth import authorize
from bridge.http.keys import HUB, STORE

routes = web.RouteTableDef()
RETRY_MS = 2000
#: A live watcher whose peer has more than this unread falls back to catching up on its own;
#: it goes live again below LOW_WATER, and is dropped when it reads nothing for DRAIN_TIMEOUT.
HIGH_WATER = 1 << 20
LOW_WATER = 1 << 16
DRAIN_TIMEOUT = 30.0
DRAIN_POLL = 0.05


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


class SsePeer:
    """A stream's connection for the hub: `send` writes a chunk straight to the transport
    (the hub's loop over live watchers: no task switch, no await), `write` goes through the
    response (waiting for the peer when its buffer is full)."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.request = request
        self.response = response
        self.chunked = request.version >= HttpVersion11  # (enable_chunked_encoding: framed)

    def _transport(self) -> asyncio.Transport | None:
        transport = self.request.transport
        return None if transport is None or transport.is_closing() else transport

    def send(self, data: bytes) -> bool:
        transport = self._transport()
        if transport is None:
            return False
        transport.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        return transport.get_write_buffer_size() <= HIGH_WATER

    async def write(self, data: bytes) -> None:
        await self.response.write(data)

    def ready(self) -> bool:
        transport = self._transport()
        return transport is not None and transport.get_write_buffer_size() <= LOW_WATER

    async def drained(self) -> bool:
        for _ in range(int(DRAIN_TIMEOUT / DRAIN_POLL)):  # the peer's reading is not an event
            if self.gone():  # this process can await
                return False
            if self.ready():
                return True
            await asyncio.sleep(DRAIN_POLL)
        return False

    def gone(self) -> bool:
        return self._transport() is None


@routes.get("/api/v1/events/stream")
async def events_stream(request: web.Request) -> web.StreamResponse:
    """The feed of changes, live, as text/event-stream."""
    authorize(request, "read")
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
    response = web.StreamResponse(headers=headers)
    peer = SsePeer(request, response)
    if peer.chunked:
        response.enable_chunked_encoding()
    await response.prepare(request)
    first = b"retry: %d\n\n" % RETRY_MS
    try:
        await response.write(GZIP_HEADER + deflated(first) if gzip else first)
        await hub.watch(position, wanted, gzip, peer)
    except ConnectionResetError:
        pass  # the watcher went away
    return response


async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
    """Run the hub beside the store (it reads nothing while nobody watches); end every
    stream at shutdown, so that the server does not wait on them."""
    hub = app[HUB] = EventHub(app[STORE])
    task = asyncio.create_task(hub.run_forever(), name="alertbridge-event-hub")
    yield
    hub.close()
    await stop_task(task)


async def end_streams(app: web.Application) -> None:
    """on_shutdown: end every stream, so that the server does not wait on them."""
    hub = app.get(HUB)
    if hub is not None:
        hub.close()
