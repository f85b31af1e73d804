"""`GET /api/v1/events/ws`: the feed of changes over a WebSocket, for clients that expect one.

The same feed as the event stream (bridge.http.stream), from the same hub: the same filters
(status, severity, rule, filter, acknowledged, kind, alert_id), the same keys (a read key; a
revoked key's socket closes), resumption by `?after=ID` (a WebSocket has no Last-Event-ID),
the same caps. Each event is one text message, `{"id": N, "event": {...}}` where `event` is
what the stream's `data:` carries; the stream's keepalive comment is a ping here. The server
only writes: a message from the client is ignored, a close frame ends it.

WebSockets are served by the server itself (a stream is handed to the stream worker as an
HTTP response it writes; a WebSocket's frames are written here), so they count against the
part of the connections the server keeps for streams (server.max_connections /
STREAMS_HERE), whatever the worker serves: the webhook always finds a connection.

The hub hands a watcher its events as SSE frames, shared by every watcher at one position;
this peer turns each into a WebSocket frame as it writes it (unmasked, as a server's are;
no compression is negotiated), a whole frame per transport write, so that aiohttp's own
frames (a pong, the close) never land inside one of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from aiohttp import WSMsgType, web

from bridge.feed.hub import WatchFilter, parse_position
from bridge.host.aio import stop_task
from bridge.http.auth import authorize
from bridge.http.errors import HttpError
from bridge.http.keys import HUB, SETTINGS, STORE, STREAM_WORKER
from bridge.http.peers import TransportPeer
from bridge.http.stream import STREAMS_HERE, TURNS

routes = web.RouteTableDef()

_TEXT, _PING = 0x81, 0x89  # FIN + opcode


def ws_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked WebSocket frame (RFC 6455 5.2).

    >>> ws_frame(0x81, b"hi")
    b'\\x81\\x02hi'
    >>> len(ws_frame(0x81, bytes(70000)))
    70010
    """
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", opcode, 126, size)
    else:
        head = struct.pack("!BBQ", opcode, 127, size)
    return head + payload


def frames_of(sse: bytes) -> list[bytes]:
    """The WebSocket frames of the hub's SSE frames: a message per event, a ping per comment.

    >>> frames_of(b'id: 7\\ndata: {"kind":"fired"}\\n\\n: keepalive\\n\\n')
    [b'\\x81!{"id":7,"event":{"kind":"fired"}}', b'\\x89\\x00']
    """
    out = []
    for block in sse.split(b"\n\n"):
        if not block:
            continue
        if block.startswith(b":"):
            out.append(ws_frame(_PING, b""))
            continue
        ident, data = b"", b""
        for line in block.split(b"\n"):
            if line.startswith(b"id: "):
                ident = line[4:]
            elif line.startswith(b"data: "):
                data = line[6:]
        if ident and data:
            out.append(ws_frame(_TEXT, b'{"id":%s,"event":%s}' % (ident, data)))
    return out


class WsPeer(TransportPeer):
    """A WebSocket as the hub's peer: SSE frames in, WebSocket frames out."""

    def __init__(self, request: web.Request) -> None:
        super().__init__(False, request.app[SETTINGS].server.stream_drain_timeout)
        self.request = request

    def _transport(self) -> asyncio.BaseTransport | None:
        return self.request.transport

    def send(self, data: bytes) -> bool:
        return super().send(b"".join(frames_of(data)))

    async def write(self, data: bytes) -> None:
        for frame in frames_of(data):  # a whole frame per write, each once the peer read
            if not self.ready() and not await self.drained():
                return
            transport = self._transport()
            if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
                return
            transport.write(frame)


@routes.get("/api/v1/events/ws")
async def events_ws(request: web.Request) -> web.StreamResponse:
    """The feed of changes as WebSocket messages."""
    await request.app[TURNS].turn()
    key_sha256 = authorize(request, "read").key_sha256
    wanted = WatchFilter.parse({key: request.query.getall(key) for key in request.query})
    position = parse_position(None, request.query.get("after"))
    hub = request.app[HUB]
    limit = request.app[SETTINGS].server.max_connections
    worker = request.app.get(STREAM_WORKER)
    handed = worker.open_streams if worker is not None and worker.alive else 0
    if hub.watchers >= max(1, limit // STREAMS_HERE) or handed + hub.watchers >= limit:
        most = f"server.max_connections / {STREAMS_HERE}"
        raise HttpError(503, "too_many_streams",
                        f"{hub.watchers} streams are served by the server itself, the most it"
                        f" serves ({most}); try again later")  # fmt: skip
    if position is None:  # from now: fixed before the upgrade, as the stream's before its 200
        position = await request.app[STORE].last_event_id()
    ws = web.WebSocketResponse(compress=False, max_msg_size=64 * 1024)
    if not ws.can_prepare(request).ok:
        raise HttpError(426, "upgrade_required", "a WebSocket: send the opening handshake"
                        " (Connection: Upgrade, Upgrade: websocket, Sec-WebSocket-Key,"
                        " Sec-WebSocket-Version: 13)",
                        headers={"Upgrade": "websocket"})  # fmt: skip
    await ws.prepare(request)
    peer = WsPeer(request)
    watch = asyncio.create_task(hub.watch(position, wanted, False, peer, key_sha256))
    reader = asyncio.create_task(_until_closed(ws))
    try:  # until the client closes, or the hub ends the watch (shutdown, a revoked key)
        await asyncio.wait({watch, reader}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await stop_task(watch)
        await stop_task(reader)
        with contextlib.suppress(ConnectionError):
            await ws.close()
    return ws


async def _until_closed(ws: web.WebSocketResponse) -> None:
    """Read (and drop) what the client sends until it closes (aiohttp answers its pings)."""
    async for message in ws:
        if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            return
