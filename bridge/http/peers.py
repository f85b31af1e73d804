"""A stream's connection as the event hub writes to it (bridge.feed.hub.Peer), over an
asyncio transport: the server's (bridge.http.stream) and the stream worker's
(bridge.http.fanout)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

#: A live watcher whose peer has more than this unread falls back to catching up on its own;
#: it goes live again below LOW_WATER, and is cut when it does not read down to LOW_WATER
#: within its drain timeout (server.stream_drain_timeout; DRAIN_TIMEOUT by default).
#: What a stream can hold here is so bounded: 1,024 stalled readers, 128 MiB at most (the
#: kernel's socket buffers are beside it, not in the process).
HIGH_WATER = 1 << 17
LOW_WATER = 1 << 14
DRAIN_TIMEOUT = 30.0
DRAIN_POLL = 0.05


def cut(transport: asyncio.BaseTransport | None) -> None:
    """Reset a connection now: its unsent data dropped here and in the kernel (SO_LINGER 0:
    an RST, where a close would leave the kernel sending to a peer that does not read)."""
    if not isinstance(transport, asyncio.Transport) or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class TransportPeer:
    """A stream's connection for the hub, over an asyncio transport: `send` writes a chunk
    straight to the transport when it fits (the hub's loop over live watchers: no task
    switch, no await); `write` feeds it in slices as the peer reads (catching up)."""

    def __init__(self, chunked: bool, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        self.chunked = chunked  # HTTP/1.1: chunked transfer encoding; 1.0: the bytes as they are
        self.drain_timeout = drain_timeout

    def _transport(self) -> asyncio.BaseTransport | None:
        raise NotImplementedError

    def _buffered(self) -> int | None:
        """Bytes waiting in the transport; None when the connection is gone."""
        transport = self._transport()
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            return None
        return transport.get_write_buffer_size()

    def _parts(self, data: bytes) -> tuple[bytes, memoryview, bytes]:
        """The chunk around `data`: its head, the data itself (a view: the payload is the
        hub's, shared by every watcher at one position, and is not copied per stream), its
        tail."""
        if not self.chunked:
            return b"", memoryview(data), b""
        return b"%x\r\n" % len(data), memoryview(data), b"\r\n"

    def send(self, data: bytes) -> bool:
        """Write now, if it fits below HIGH_WATER (the hub's loop over live watchers: no
        await); False, and nothing written, when it does not or the peer is gone: the
        watcher then catches up by `write`, in slices."""
        transport = self._transport()
        if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
            return False
        head, body, tail = self._parts(data)
        if transport.get_write_buffer_size() + len(head) + len(body) + len(tail) > HIGH_WATER:
            return False
        for part in (head, body, tail):
            if part:
                transport.write(part)
        return True

    async def write(self, data: bytes) -> None:
        """Write in slices of HIGH_WATER, each once the peer has read what came before
        (LOW_WATER left): what a stream holds here is at most about HIGH_WATER, however
        large the payload; a peer that reads nothing for its drain timeout is cut (it may resume
        by Last-Event-ID)."""
        head, body, tail = self._parts(data)
        slices: list[bytes | memoryview] = [head] if head else []
        slices += [body[i : i + HIGH_WATER] for i in range(0, len(body), HIGH_WATER)]
        slices += [tail] if tail else []
        for piece in slices:
            if not self.ready() and not await self.drained():
                return  # gone, or cut there
            transport = self._transport()
            if not isinstance(transport, asyncio.WriteTransport) or transport.is_closing():
                return
            transport.write(piece)

    def ready(self) -> bool:
        buffered = self._buffered()
        return buffered is not None and buffered <= LOW_WATER

    async def drained(self) -> bool:
        """Wait until the peer read enough; False when it is gone, or read nothing for
        its drain timeout: then its connection is cut (aborted, its unread data dropped; a close
        would wait for the peer to read it, holding the connection and the data for ever)."""
        # The peer's reading is not an event this process can await: polled.
        for _ in range(max(1, int(self.drain_timeout / DRAIN_POLL))):
            if self.gone():
                return False
            if self.ready():
                return True
            await asyncio.sleep(DRAIN_POLL)
        cut(self._transport())
        return False

    def gone(self) -> bool:
        return self._buffered() is None
