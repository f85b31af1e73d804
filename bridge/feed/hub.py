"""The feed of changes fanned out to live watchers (`GET /api/v1/events/stream`, the web page,
`alertbridge watch`): one reader of the store for all of them.

The hub follows the feed (woken at once by this process's writes, polling for those of other
processes: the escalation worker, the CLI) and keeps the newest `keep` events, each with a
snapshot of its alert and its SSE frame encoded once. A watcher is a position: it takes what
follows it from the hub's buffer, or, when it is further behind than the buffer reaches (a
resume from an old Last-Event-ID), from the store in pages, until it is caught up. Nobody's
queue can overflow and a slow watcher slows nobody else; each gets every event after its
position exactly once, in id order.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bridge.core.errors import InvalidInput
from bridge.core.logutil import log_failure
from bridge.core.matchers import Matcher
from bridge.core.times import now_ns
from bridge.host.aio import wait_event
from bridge.store import FeedEntry
from bridge.store.interface import Reads
from bridge.store.query import parse_alert_query, parse_int
from bridge.store.records import EVENT_KINDS

log = logging.getLogger(__name__)
MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Item:
    """One event as watchers get it: what their filters look at, and its SSE frame."""

    entry: FeedEntry
    frame: bytes


def item_of(entry: FeedEntry) -> Item:
    return Item(entry, b"id: %d\ndata: %s\n\n" % (entry.id, entry.data.encode()))


async def items_after(store: Reads, position: int, limit: int) -> list[Item]:
    return [item_of(e) for e in await store.feed_after(position, limit)]


#: The start of a gzip stream (RFC 1952: no name, no time, OS unknown); the stream never
#: ends, so its trailer is never sent.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


KEEPALIVE = b": keepalive\n\n"


def deflated(data: bytes) -> bytes:
    """`data` as deflate blocks of their own, ending byte-aligned (a sync flush): each batch is
    compressed once, by a compressor of its own that refers to nothing before it, so that the
    same bytes continue any watcher's gzip stream (every stream is at such a boundary between
    batches). SSE frames of one batch compress about 30 times (bench.stream)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


KEEPALIVE_GZ = deflated(KEEPALIVE)


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Which events a watcher wants: by kind, by alert, by its alert's labels and state (the
    alert list's filters)."""

    kinds: frozenset[str] = frozenset()
    alert_id: int | None = None
    status: str | None = None
    severities: frozenset[str] = frozenset()
    rule: str | None = None
    matchers: tuple[Matcher, ...] = ()
    acknowledged: bool | None = None

    PARAMS = frozenset({"kind", "alert_id", "status", "severity", "rule", "filter",
                        "acknowledged", "after"})  # fmt: skip

    @classmethod
    def parse(cls, params: Mapping[str, Sequence[str]]) -> WatchFilter:
        """From query parameters; InvalidInput names an unknown or malformed one."""
        unknown = sorted(set(params) - cls.PARAMS)
        if unknown:
            known = ", ".join(sorted(cls.PARAMS))
            raise InvalidInput(unknown[0], f"unknown parameter (known: {known})")
        query = parse_alert_query(
            {k: v for k, v in params.items() if k not in ("kind", "alert_id", "after")}, now_ns()
        )
        ids = params.get("alert_id") or []
        raw_id = ids[-1] if ids else None
        kinds = frozenset(k for raw in params.get("kind", []) for k in raw.split(",") if k)
        if kinds - EVENT_KINDS:
            raise InvalidInput(
                "kind", f"unknown event kind {sorted(kinds - EVENT_KINDS)[0][:64]!r}"
                f" (known: {', '.join(sorted(EVENT_KINDS))})",
            )  # fmt: skip
        return cls(
            kinds=kinds,
            alert_id=parse_int(raw_id, "alert_id", 1, MAX_ID) if raw_id else None,
            status=query.status,
            severities=frozenset(query.severities),
            rule=query.rule,
            matchers=query.matchers,
            acknowledged=query.acknowledged,
        )

    @property
    def everything(self) -> bool:
        return self == _EVERYTHING

    def wants(self, item: Item) -> bool:
        entry = item.entry
        if self.kinds and entry.kind not in self.kinds:
            return False
        if self.alert_id is not None and entry.alert_id != self.alert_id:
            return False
        if not (self.status or self.severities or self.rule or self.matchers
                or self.acknowledged is not None):  # fmt: skip
            return True
        if entry.status is None:  # the alert is gone: nothing to match
            return False
        return (
            (self.status is None or entry.status == self.status)
            and (not self.severities or entry.severity in self.severities)
            and (self.rule is None or entry.alertname == self.rule)
            and (self.acknowledged is None or entry.acknowledged == self.acknowledged)
            and all(m.matches(entry.labels) for m in self.matchers)
        )


_EVERYTHING = WatchFilter()


class Peer(Protocol):
    """A watcher's connection, as the hub uses it (bridge.http.stream implements it)."""

    def send(self, data: bytes) -> bool:
        """Write now, without waiting, if it fits the peer's buffer; False, with nothing
        written, when it does not (or the connection is gone): the watcher then stops being
        live and catches up from where it was."""
        ...

    async def write(self, data: bytes) -> None:
        """Write, waiting for the peer when its buffer is full (catching up)."""
        ...

    def ready(self) -> bool:
        """Whether the peer's buffer is low enough to go live."""
        ...

    async def drained(self) -> bool:
        """Wait (bounded) until ready; False when the peer is gone or does not read."""
        ...

    def gone(self) -> bool: ...


class Watcher:
    """One stream, as the hub sees it: its filter, where it is, its peer, and whether it is
    live (caught up: the hub sends it each batch itself)."""

    __slots__ = ("ended", "gzip", "key", "live", "peer", "position", "wanted", "woken")

    def __init__(self, position: int, wanted: WatchFilter, gzip: bool, peer: Peer,
                 key: str | None = None) -> None:  # fmt: skip
        self.position = position
        self.wanted = wanted
        self.gzip = gzip
        self.peer = peer
        #: The hash of the key that opened the stream (None: no named key).
        self.key = key
        #: Its key was revoked: the stream ends.
        self.ended = False
        self.live = False
        self.woken = asyncio.Event()


#: Seconds a page read from the store serves every watcher that resumes from its position;
#: pages kept beyond RECENT_PAGES are let go of once they are that old.
RECENT_PAGE = 1.0
RECENT_PAGES = 16
#: A hub's writes to its live watchers a second, at most: EventHub.pause.
WRITES_PER_SECOND = 10_000.0


class EventHub:
    """Follows the feed for every watcher of this process.

    A watcher that is caught up is live: the hub writes each new batch to it directly, the
    frames each filter wants found and compressed once per batch, in one loop over the live
    watchers (no task of theirs wakes). A watcher that is behind (a resume from an old id, a
    slow peer) catches up in its own task, at its own pace, from the buffer or the store,
    then goes live again.
    """

    def __init__(self, store: Reads, *, keep: int = 10_000, poll: float = 0.25,
                 page: int = 500, retry: float = 2.0, every: float = 0.04,
                 writes_per_second: float = WRITES_PER_SECOND,
                 changes: Callable[[], asyncio.Event] | None = None,
                 in_force: Callable[[str], bool] | None = None) -> None:  # fmt: skip
        self.store = store
        #: Whether a key (by its hash) is still in force; the streams of a key that is not
        #: end within `recheck` seconds (None: nothing is checked).
        self.in_force = in_force
        self.recheck = 1.0
        self._last_check = 0.0
        #: What wakes the hub when something was written (default: this process's writes;
        #: the stream worker's: the server's word that it wrote).
        self.changes = changes or store.changes
        #: The least time between two reads: under load, events go out in batches this often
        #: (one write per watcher per batch), not one write per commit; when quiet, at once.
        self.every = every
        #: Writes to live watchers a second, at most (see `pause`).
        self.writes_per_second = writes_per_second
        self.keep = keep
        self.poll = poll
        self.page = page
        self.retry = retry
        self._items: list[Item] = []
        self._ids: list[int] = []
        self._shared: dict[tuple[int, int, WatchFilter, bool], bytes] = {}
        #: Pages read from the store lately, by the position they follow (_page_after).
        self._pages: dict[int, tuple[float, asyncio.Future[list[Item]]]] = {}
        #: The buffer holds every event with an id above floor (and up to `position`).
        self.floor = 0
        self.position = 0
        self._watchers: set[Watcher] = set()
        self._live: list[Watcher] = []
        self._last_tick = 0.0
        self._wanted = asyncio.Event()
        self.closed = False
        #: Seconds of quiet after which a stream gets a keepalive comment.
        self.keepalive = 15.0

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def pause(self) -> float:
        """The least time between two reads (and so two pushes): `every`, longer when there
        are so many live watchers that a push each `every` would write more than
        `writes_per_second` (1,024 watchers: a push each 0.1 s). A push costs a write per
        watcher, each a system call and, on loopback, the receiver's packet handling too;
        unbounded, 1,024 watchers of a busy feed cost 25,000 writes a second, and the
        server's webhook (sharing the cores) waited for them: p99 5.7 ms against 2.9 idle
        (bench.restart). Events wait longer for their batch only while that many watch."""
        return max(self.every, len(self._live) / self.writes_per_second)

    async def run_forever(self) -> None:
        """Follow the feed while anyone watches (nobody watching: no reads, no buffer)."""
        while not self.closed:
            try:
                if not self._watchers:
                    self._items.clear()
                    self._ids.clear()
                    self._shared.clear()
                    # and nothing read: a watcher arriving now waits for the hub's position
                    # (a stale one, ahead of it with the buffer empty, had it look again and
                    # again without yielding: the loop spun)
                    self.floor = self.position = 0
                    self._wanted.clear()
                    await self._wanted.wait()
                    if self.closed:
                        return
                    self.floor = self.position = await self.store.last_event_id()
                    self._wake_all()  # watchers that looked before the floor moved look again
                changed = self.changes()
                began = asyncio.get_running_loop().time()
                await self._read()
                if began - self._last_tick >= self.keepalive:
                    self._last_tick = began
                    self._push_keepalive()
                if self.in_force is not None and began - self._last_check >= self.recheck:
                    self._last_check = began
                    self._end_revoked(self.in_force)
                await wait_event(changed, self.poll)
                rest = self.pause() - (asyncio.get_running_loop().time() - began)
                if rest > 0:
                    await asyncio.sleep(rest)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, exc, "event hub: reading the feed failed; retrying in %gs",
                            self.retry)  # fmt: skip
                await asyncio.sleep(self.retry)

    async def _read(self, rounds: int = 100) -> None:
        """Read what is new (bounded), send it to the live watchers, then trim the buffer
        (after the push: a live watcher must get every event, however many came)."""
        before = self.position
        for _ in range(rounds):
            items = await items_after(self.store, self.position, self.page)
            if not items:
                break
            self._items += items
            self._ids += [i.entry.id for i in items]
            self.position = items[-1].entry.id
            if len(items) < self.page:
                break
        if self.position == before:
            return
        self._shared.clear()
        self._push()
        if len(self._items) > self.keep:
            cut = len(self._items) - self.keep
            self.floor = self._ids[cut - 1]
            del self._items[:cut], self._ids[:cut]
            self._shared.clear()  # (indices moved)

    def _push(self) -> None:
        """The new batch to every live watcher (all at the previous position)."""
        still: list[Watcher] = []
        for watcher in self._live:
            _, payload = self._from_buffer(watcher.position, watcher.wanted, watcher.gzip)
            if payload and not watcher.peer.send(payload):
                watcher.live = False  # nothing written: it catches up from where it was
                watcher.woken.set()  # behind, or gone: its own task sees to it
                continue
            watcher.position = self.position
            still.append(watcher)
        self._live = still

    def _push_keepalive(self) -> None:
        for watcher in self._live:
            if not watcher.peer.send(KEEPALIVE_GZ if watcher.gzip else KEEPALIVE):
                watcher.live = False
                watcher.woken.set()
        self._live = [w for w in self._live if w.live]

    def _end_revoked(self, in_force: Callable[[str], bool]) -> None:
        """End the streams whose key is no longer in force (revoked since they opened)."""
        ending = [w for w in self._watchers if w.key is not None and not in_force(w.key)]
        for watcher in ending:
            log.info("a stream ends: its key was revoked")
            watcher.ended, watcher.live = True, False
            watcher.woken.set()
        if ending:
            self._live = [w for w in self._live if w.live]

    def let_go_of_gone(self) -> None:
        """End the watchers whose peer is gone now (their connections were cut), rather than
        at the next event or keepalive: their streams no longer count as open."""
        for watcher in self._watchers:
            if watcher.peer.gone():
                watcher.ended, watcher.live = True, False
                watcher.woken.set()
        self._live = [w for w in self._live if w.live]

    def _wake_all(self) -> None:
        """Every watcher looks again for itself (the floor moved, or the hub closes)."""
        for watcher in self._live:
            watcher.live = False
        self._live = []
        for watcher in self._watchers:
            watcher.woken.set()

    def close(self) -> None:
        """Stop: every watcher's stream ends (the server is shutting down)."""
        self.closed = True
        self._wake_all()
        self._wanted.set()

    def _from_buffer(self, position: int, wanted: WatchFilter,
                     gzip: bool) -> tuple[int | None, bytes]:  # fmt: skip
        start = bisect.bisect_right(self._ids, position)
        if start == len(self._ids):
            return None, b""
        key = (start, len(self._ids), wanted, gzip)
        payload = self._shared.get(key)
        if payload is None:
            items = self._items[start:]
            if wanted.everything:
                payload = b"".join(i.frame for i in items)
            else:
                payload = b"".join(i.frame for i in items if wanted.wants(i))
            if gzip and payload:
                payload = deflated(payload)
            self._shared[key] = payload
        return self._ids[-1], payload

    async def after(
        self, position: int, wanted: WatchFilter, gzip: bool = False
    ) -> tuple[int | None, bytes]:
        """The SSE frames `wanted` of what follows `position` (from the buffer, or from the
        store, a page, when the buffer does not reach back that far), as deflate blocks when
        `gzip` (see `deflated`), and the id of the last event looked at (None: nothing
        follows yet). Watchers at the same position with the same filter share one result,
        compressed once."""
        if position >= self.floor and self._wanted.is_set():
            return self._from_buffer(position, wanted, gzip)
        items = await self._page_after(position)
        if not items:
            return None, b""
        payload = b"".join(i.frame for i in items if wanted.wants(i))
        return items[-1].entry.id, deflated(payload) if gzip and payload else payload

    async def _page_after(self, position: int) -> list[Item]:
        """A page of the store after `position`, read once for every watcher that wants it
        within RECENT_PAGE seconds: a crowd resuming from one Last-Event-ID (every stream of
        a killed worker had the same last id) costs one read, not one each. (A page's
        snapshots are as fresh as the buffer's: taken when it was read.) At most RECENT_PAGES
        kept: beyond, a watcher reads its own."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        kept = self._pages.get(position)
        if kept is not None and now - kept[0] <= RECENT_PAGE:
            try:
                return await asyncio.shield(kept[1])
            except asyncio.CancelledError:
                if not kept[1].cancelled():
                    raise  # this watcher is cancelled
                # the reader's read failed or it was cancelled: this one reads for itself
        for old in [p for p, (at, _) in self._pages.items() if now - at > RECENT_PAGE]:
            del self._pages[old]
        if len(self._pages) >= RECENT_PAGES:
            return await items_after(self.store, position, self.page)
        page: asyncio.Future[list[Item]] = loop.create_future()
        self._pages[position] = (now, page)
        try:
            page.set_result(await items_after(self.store, position, self.page))
        except BaseException:
            self._pages.pop(position, None)
            page.cancel()  # (those waiting read for themselves)
            raise
        return page.result()

    async def watch(
        self,
        position: int | None,
        wanted: WatchFilter,
        gzip: bool,
        peer: Peer,
        key: str | None = None,
    ) -> None:
        """Serve one watcher until its peer is gone or the hub closes: catch up (writing,
        waiting for the peer), then live (the hub sends), and again whenever it falls behind.
        Every event after `position` (None: from now) that it wants, once, in order; until
        `key` (the hash of the key that opened it) is revoked, when in_force is given."""
        at = await self.store.last_event_id() if position is None else position
        watcher = Watcher(at, wanted, gzip, peer, key)
        self._watchers.add(watcher)
        self._wanted.set()
        try:
            while not self.closed and not peer.gone() and not watcher.ended:
                last, payload = await self.after(watcher.position, wanted, gzip)
                if last is not None:
                    if payload:
                        await peer.write(payload)
                    watcher.position = last
                    continue
                if watcher.position < self.position:
                    continue  # (the store path found nothing yet the hub is further on)
                if not peer.ready():
                    if not await peer.drained():
                        return  # a peer that does not read: it may resume by Last-Event-ID
                    continue
                watcher.live = True  # caught up, with no await since the check: the hub's now
                self._live.append(watcher)
                watcher.woken.clear()
                await watcher.woken.wait()
        finally:
            self._watchers.discard(watcher)
            if watcher.live:
                watcher.live = False
                self._live = [w for w in self._live if w is not watcher]


def parse_position(last_event_id: str | None, after: str | None) -> int | None:
    """Where a stream resumes: the Last-Event-ID header (a reconnecting EventSource sends
    it), else ?after=ID; None: from now."""
    raw, name = (last_event_id, "Last-Event-ID") if last_event_id else (after, "after")
    if not raw:
        return None
    return parse_int(raw.strip(), name, 0, MAX_ID, "an event id")
