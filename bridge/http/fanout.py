"""The live streams in a process of their own: `serve` starts a stream worker (and starts it
again if it dies), and hands it each event stream once the server has answered the request.

Why: sending every batch of events to 200 watchers is 200 writes to 200 sockets, plus reading
and encoding the batch; in the server's interpreter that took a third of the webhook's
throughput (bench.stream), since the server's threads share one GIL. The worker runs beside
the server at SCHED_IDLE (server.stream_priority; see settle_in): on a core the webhook leaves
free.

How: the server authenticates the request, validates its filters, answers 200 with the
stream's headers and first line, then passes the connection's file descriptor over a Unix
socket (SCM_RIGHTS) with where the stream starts, its filter and its encoding, and lets go of
the connection without closing it (its copy of the descriptor closes; the worker's keeps the
TCP connection open). The worker follows the feed itself, reading the same database (woken by
a message from the server at its first write after the worker asked, polling for other
processes' writes), and
serves each stream as the server's own hub would: every event after the position, once, in
order, caught up from its buffer or from the store. A stream the worker cannot take (it is
starting, restarting or gone) is served by the server's hub, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bridge.config import Settings
from bridge.feed.hub import EventHub, WatchFilter
from bridge.host.aio import ignore_stop_signals, stop_task
from bridge.host.apikeys import KeyRing, KeysError
from bridge.http.peers import DRAIN_TIMEOUT, TransportPeer, cut
from bridge.store import open_store
from bridge.store.interface import Reads
from bridge.workers.child import die_with_parent, until_stopped
from bridge.workers.supervisor import Supervisor, worker_argv

log = logging.getLogger(__name__)
#: The largest control message (a stream's start: position, filter, encoding).
MAX_MESSAGE = 64 * 1024
READY = b"ready"
CHANGED = b'{"op":"changed"}'
WANT = b"want"
ENDED = b"ended"


class StreamWorker(Supervisor):
    """The server's side: start the worker, hand it streams, tell it of writes."""

    name = "stream worker"
    meanwhile = " (streams are served by the server meanwhile)"

    def __init__(self, argv: Sequence[str], store: Reads) -> None:
        super().__init__(argv)
        self.store = store
        self.control: socket.socket | None = None  # set while the worker is up and ready
        #: Seconds a starting worker has to say it is ready; then it is killed and restarted.
        self.start_timeout = 60.0
        self.handed = 0
        #: Streams the running worker holds: handed over to it and not yet ENDED.
        self.open_streams = 0
        #: Wake-ups sent to the worker (CHANGED), for the tests: one per read it asked for.
        self.told = 0
        #: The connections of the streams the server serves itself (the worker was down):
        #: cut once a worker is up, so that they come back (by Last-Event-ID) to it.
        self.served_here: set[asyncio.BaseTransport] = set()
        #: Called once they are cut: the server's hub lets go of their watchers at once
        #: (a live watcher otherwise learns its peer is gone at the next event or keepalive).
        self.after_hand_back: Callable[[], None] = lambda: None

    @classmethod
    def for_settings(cls, settings: Settings, store: Reads) -> StreamWorker:
        extra = ["--priority", settings.server.stream_priority]
        if settings.server.keys_path is not None:  # its streams end when their key is revoked
            extra += ["--keys", settings.server.keys_path]
        return cls(worker_argv(settings, "stream-worker", *extra), store)

    @property
    def alive(self) -> bool:
        return self.control is not None

    async def run_once(self) -> int | None:
        """One run: the worker started with its end of a control socket; once it says it is
        ready, streams go to it, and while it is up it is told of every write of this
        process. A worker silent past start_timeout is killed."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = await self.spawn("--fd", str(theirs.fileno()),
                                         pass_fds=(theirs.fileno(),))  # fmt: skip
        finally:
            theirs.close()
        ours.setblocking(False)
        notifier = None
        try:
            ready = await asyncio.wait_for(loop.sock_recv(ours, 64), self.start_timeout)
            if ready == READY:
                self.open_streams = 0  # (a new worker: its predecessor's streams ended)
                self.control = ours
                notifier = asyncio.create_task(self._listen(ours))
                self._hand_back()
            return await self.proc.wait()
        except TimeoutError:
            log.error("the stream worker did not start within %g s", self.start_timeout)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            return await self.proc.wait()
        finally:
            self.control = None
            ours.close()  # first: a cancellation may come at the await below
            if notifier is not None:
                await stop_task(notifier)

    async def _listen(self, control: socket.socket) -> None:
        """What the worker says: WANT (it is about to read the feed: tell it of the next
        write) and ENDED (a stream it held is gone: open_streams counts down at once, however
        quiet the store is)."""
        loop = asyncio.get_running_loop()
        asked = asyncio.Event()
        teller = asyncio.create_task(self._notify_writes(control, asked))
        try:
            while True:
                message = await loop.sock_recv(control, 64)
                if not message:
                    return  # the worker closed its end
                if message == WANT:
                    asked.set()
                elif message == ENDED:
                    self.open_streams = max(0, self.open_streams - 1)
        finally:
            await stop_task(teller)

    async def _notify_writes(self, control: socket.socket, asked: asyncio.Event) -> None:
        """Tell the worker of a write when it asks: one message per read of its hub (at most
        25 a second under load), not one per commit, and none while nobody watches.
        `pending` was taken when the last CHANGED went: set, there was a write since, which
        the worker's read may have missed (it may have read before the write, and asked
        before this saw it): told at once."""
        pending = self.store.changes()
        while True:
            await asked.wait()
            asked.clear()
            await pending.wait()
            pending = self.store.changes()
            with contextlib.suppress(OSError):  # full: the worker has a wake-up queued already
                control.send(CHANGED)
                self.told += 1

    def _hand_back(self) -> None:
        """End the streams the server served while no worker ran: their clients resume by
        Last-Event-ID, and are handed to the worker (the server's connections are for the
        webhook and the API)."""
        if self.served_here:
            log.info("the stream worker is up: %d streams served meanwhile go to it",
                     len(self.served_here))  # fmt: skip
        for transport in list(self.served_here):
            cut(transport)
        if self.served_here:
            self.served_here.clear()
            self.after_hand_back()

    def handover(self, fd: int, stream: Mapping[str, Any]) -> bool:
        """Give the worker the connection `fd` and what it needs to serve the stream;
        whether it took it (False: serve it here)."""
        control = self.control
        if control is None:
            return False
        message = json.dumps({"op": "watch", **stream}).encode()
        try:
            socket.send_fds(control, [message], [fd])
        except OSError as exc:  # gone, or its queue is full
            log.warning("the stream worker did not take a stream (%s): served here", exc)
            return False
        self.handed += 1
        self.open_streams += 1
        return True


class _Changes:
    """The worker's `changes()`: events set when the server says it wrote. The first wait
    after a wake-up asks the server (WANT) to say so at its next write."""

    def __init__(self, control: socket.socket) -> None:
        self.control = control
        self.waiting: list[asyncio.Event] = []
        self.asked = False

    def changes(self) -> asyncio.Event:
        event = asyncio.Event()
        self.waiting.append(event)
        if not self.asked:
            try:
                self.control.send(WANT)
                self.asked = True
            except OSError:  # (full or gone: the hub polls meanwhile; asked again next time)
                pass
        return event

    def fire(self) -> None:
        self.asked = False
        waiting, self.waiting = self.waiting, []
        for event in waiting:
            event.set()


class _Sink(asyncio.Protocol):
    """A stream's connection in the worker: what the client sends is ignored (an SSE client
    sends nothing after its request); its loss ends its watcher at once (`lost`), so that it
    no longer counts as open (else at the next event or keepalive, up to 15 s on)."""

    def __init__(self, lost: Callable[[], None]) -> None:
        self.lost = lost

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost()

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        return False  # close


class RawPeer(TransportPeer):
    def __init__(self, transport: asyncio.WriteTransport, chunked: bool,
                 drain_timeout: float) -> None:  # fmt: skip
        super().__init__(chunked, drain_timeout)
        self.transport = transport

    def _transport(self) -> asyncio.BaseTransport | None:
        return self.transport


class _Worker:
    def __init__(self, store: Reads, limit: int, control: socket.socket,
                 in_force: Callable[[str], bool] | None = None,
                 drain_timeout: float = DRAIN_TIMEOUT) -> None:  # fmt: skip
        self.changes = _Changes(control)
        self.drain_timeout = drain_timeout
        self.hub = EventHub(store, changes=self.changes.changes, in_force=in_force)
        self.limit = limit
        self.streams: set[asyncio.Task[None]] = set()
        self.stop = asyncio.Event()
        self._sweep_due = False

    def on_control(self, control: socket.socket) -> None:
        for _ in range(1000):  # bounded: the rest at the next readiness
            try:
                message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 1)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the server closed its end
                self.stop.set()
                return
            if message == CHANGED:
                self.changes.fire()
                continue
            for fd in fds:
                self._start(fd, message)

    def _start(self, fd: int, message: bytes) -> None:
        sock = socket.socket(fileno=fd)
        try:
            stream = json.loads(message)
            wanted = WatchFilter.parse(stream["query"])  # validated by the server already
        except Exception:
            log.exception("a stream handed over unreadable: closed")
            sock.close()
            self._ended()
            return
        if len(self.streams) >= self.limit:  # (the server answers 503 first; this is a backstop)
            log.warning("%d streams open (server.max_connections): one closed", self.limit)
            sock.close()
            self._ended()
            return
        task = asyncio.create_task(self._serve(sock, stream, wanted))
        self.streams.add(task)
        task.add_done_callback(self._done)

    def lost(self) -> None:
        """A stream's connection is gone: its watcher is let go of at the next turn of the
        loop, in one sweep for all the connections lost in this one (1,024 streams dropping
        together: one sweep of the watchers, not one per connection)."""
        if not self._sweep_due:
            self._sweep_due = True
            asyncio.get_running_loop().call_soon(self._sweep)

    def _sweep(self) -> None:
        self._sweep_due = False
        self.hub.let_go_of_gone()

    def _done(self, task: asyncio.Task[None]) -> None:
        self.streams.discard(task)
        self._ended()

    def _ended(self) -> None:
        """Tell the server a stream it handed over is gone (it counts them against
        server.max_connections)."""
        with contextlib.suppress(OSError):  # full or gone: the count is corrected at a restart
            self.changes.control.send(ENDED)

    async def _serve(self, sock: socket.socket, stream: Mapping[str, Any],
                     wanted: WatchFilter) -> None:  # fmt: skip
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_accepted_socket(lambda: _Sink(self.lost), sock)
        if not isinstance(transport, asyncio.WriteTransport):  # (a socket's always is)
            transport.close()
            return
        peer = RawPeer(transport, bool(stream["chunked"]), self.drain_timeout)
        try:
            await self.hub.watch(int(stream["position"]), wanted, bool(stream["gzip"]), peer,
                                 stream.get("key"))  # fmt: skip
        except (ConnectionError, OSError):
            pass  # the watcher went away
        finally:
            if peer.chunked and not peer.gone():
                transport.write(b"0\r\n\r\n")  # the stream ends (the hub closed)
            if transport.get_write_buffer_size():
                cut(transport)  # a close would wait for it to read what it has not read
            else:
                transport.close()


def _in_force(keys: str | None) -> Callable[[str], bool] | None:
    """Whether a key is in force, by the keys file (reread when it changes, as the server
    does); None without one. A file unreadable when the worker starts: nothing is checked
    (the server refuses the key's new requests by its own last good keys), and it says so."""
    if keys is None:
        return None
    try:
        ring = KeyRing(keys)
    except KeysError as exc:
        log.error("stream worker: keys file: %s; streams will not end when a key is revoked", exc)
        return None
    return ring.in_force


def settle_in(priority: str) -> None:
    """The worker's process, before its loop and threads start (they inherit it).

    "idle": SCHED_IDLE, so that the worker runs only on a core ingestion leaves free: at
    SCHED_OTHER, on two cores, a server thread waking (the event loop, the SQLite writer,
    its syncer) often found the worker in the middle of a batch and waited for it, and those
    waits were the whole of what 200 watchers cost the webhook (bench.stream: 0.2 s of run
    queue wait per 8 s for the event loop, 0.5 s for the writer, 0.3 s for the syncer, against
    0.01-0.07 s with nobody watching; 85-88 % of the webhook's throughput, 93-96 % at
    SCHED_IDLE). The worker keeps up as long as some core is idle part of the time; on a
    machine saturated by the server, live updates lag (streams get larger batches, later;
    none is lost), while the webhook, whose answers Alertmanager waits for, does not. Any
    process may lower its own priority so; one that cannot (a seccomp profile forbidding it)
    logs why and runs as "normal".

    Also: the objects of start-up are frozen out of the garbage collector's sight and young
    collections are rarer. The hub keeps 10,000 events (bridge.feed.hub) and makes about 500
    objects a batch; at the default thresholds a collection ran every other batch and a
    full one every few seconds, walking every module's objects too (a few percent of the
    worker's CPU in a profile).
    """
    if priority == "idle":
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except (OSError, AttributeError) as exc:
            log.warning("stream worker: cannot run at SCHED_IDLE (%s); running as normal", exc)
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def run_stream_worker(settings: Settings, db: str, parent: int, fd: int,
                            priority: str = "idle", keys: str | None = None) -> None:  # fmt: skip
    """Serve the streams the server hands over until it is gone or SIGTERM; then end them."""
    die_with_parent()
    settle_in(priority)
    # No query timeout: the worker's reads are pages of the feed by id (the hub filters in
    # Python), short by construction; a timeout's progress handler would make each read that
    # runs past a millisecond pause as long (bridge.store.sqlite.database._ReadBudget), which
    # is for a server's reads sharing a GIL with its webhook, not for a process of its own.
    store = open_store(db, read_only=True, inline_reads=True,
                       password_file=settings.server.db_password_file)  # fmt: skip
    control = socket.socket(fileno=fd)
    control.setblocking(False)
    worker = _Worker(store, settings.server.max_connections, control, _in_force(keys),
                     settings.server.stream_drain_timeout)  # fmt: skip
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    hub = asyncio.create_task(worker.hub.run_forever(), name="stream-worker-hub")
    loop.add_reader(fd, worker.on_control, control)
    try:
        control.send(READY)
        await until_stopped(worker.stop, parent)
    finally:
        loop.remove_reader(fd)
        worker.hub.close()  # every stream ends
        if worker.streams:
            await asyncio.wait(list(worker.streams), timeout=5)
        await stop_task(hub)
        control.close()
        await store.close()
        ignore_stop_signals(loop)
