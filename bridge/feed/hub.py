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
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from bridge.core.aio import wait_event
from bridge.core.errors import InvalidInput
from bridge.core.matchers import Matcher
from bridge.core.times import now_ns
from bridge.store import AlertStore, FeedEntry
from bridge.store.query import parse_alert_query, parse_int

log = logging.getLogger(__name__)
MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Item:
    """One event as watchers get it: what their filters look at, and its SSE frame."""

    entry: FeedEntry
    frame: bytes


def item_of(entry: FeedEntry) -> Item:
    return Item(entry, b"id: %d\ndata: %s\n\n" % (entry.id, entry.data.encode()))


async def items_after(store: AlertStore, position: int, limit: int) -> list[Item]:
    return [item_of(e) for e in await store.feed_after(position, limit)]


#: The start of a gzip stream (RFC 1952: no name, no time, OS unknown); the stream never
#: ends, so its trailer is never sent.
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


def deflated(data: bytes) -> bytes:
    """`data` as deflate blocks of their own, ending byte-aligned (a sync flush): each batch is
    compressed once, by a compressor of its own that refers to nothing before it, so that the
    same bytes continue any watcher's gzip stream (every stream is at such a boundary between
    batches). SSE frames of one batch compress about 30 times (bench.stream)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


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
        return cls(
            kinds=frozenset(k for raw in params.get("kind", []) for k in raw.split(",") if k),
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


class EventHub:
    """Follows the feed for every watcher of this process."""

    def __init__(self, store: AlertStore, *, keep: int = 10_000, poll: float = 0.25,
                 page: int = 500, retry: float = 2.0, every: float = 0.04) -> None:  # fmt: skip
        self.store = store
        #: The least time between two reads: under load, events go out in batches this often
        #: (one write per watcher per batch), not one write per commit; when quiet, at once.
        self.every = every
        self.keep = keep
        self.poll = poll
        self.page = page
        self.retry = retry
        self._items: list[Item] = []
        self._ids: list[int] = []
        self._shared: dict[tuple[int, int, WatchFilter, bool], bytes] = {}
        #: The buffer holds every event with an id above floor (and up to `position`).
        self.floor = 0
        self.position = 0
        #: Resolved (and replaced) when new events are in, or when a keepalive is due
        #: (result: whether it is a keepalive): every watcher awaits this one future.
        self._new: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._last_tick = 0.0
        self._wanted = asyncio.Event()
        self.closed = False
        self.watchers = 0
        #: Seconds of quiet after which a stream gets a keepalive comment.
        self.keepalive = 15.0

    async def run_forever(self) -> None:
        """Follow the feed while anyone watches (nobody watching: no reads, no buffer)."""
        while not self.closed:
            try:
                if not self.watchers:
                    self._items.clear()
                    self._ids.clear()
                    self._shared.clear()
                    self._wanted.clear()
                    await self._wanted.wait()
                    self.floor = self.position = await self.store.last_event_id()
                    self._wake()  # watchers that looked before the floor moved look again
                changed = self.store.changes()
                began = asyncio.get_running_loop().time()
                await self._read()
                if began - self._last_tick >= self.keepalive:
                    self._last_tick = began
                    self._wake(keepalive=True)
                await wait_event(changed, self.poll)
                rest = self.every - (asyncio.get_running_loop().time() - began)
                if rest > 0:
                    await asyncio.sleep(rest)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event hub: reading the feed failed; retrying in %gs", self.retry)
                await asyncio.sleep(self.retry)

    async def _read(self, rounds: int = 100) -> None:
        """Read what is new (bounded), then wake the watchers once."""
        got = False
        for _ in range(rounds):
            items = await items_after(self.store, self.position, self.page)
            if not items:
                break
            got = True
            self._items += items
            self._ids += [i.entry.id for i in items]
            self.position = items[-1].entry.id
            if len(self._items) > self.keep:
                cut = len(self._items) - self.keep
                self.floor = self._ids[cut - 1]
                del self._items[:cut], self._ids[:cut]
            self._shared.clear()  # (indices moved; and the newest batch is what is asked for)
            if len(items) < self.page:
                break
        if got:
            self._wake()

    def _wake(self, keepalive: bool = False) -> None:
        new, self._new = self._new, asyncio.get_running_loop().create_future()
        new.set_result(keepalive)

    def close(self) -> None:
        """Stop: every watcher's stream ends (the server is shutting down)."""
        self.closed = True
        if not self._new.done():
            self._new.set_result(False)
        self._wanted.set()

    async def after(
        self, position: int, wanted: WatchFilter, gzip: bool = False
    ) -> tuple[int | None, bytes]:
        """The SSE frames `wanted` of what follows `position` (from the buffer, or from the
        store, a page, when the buffer does not reach back that far), gzip members' worth
        of deflate when `gzip` (see `deflated`), and the id of the last event looked at
        (None: nothing follows yet). Watchers at the same position with the same filter share
        one result, compressed once: caught up, they all ask for the newest batch."""
        if position >= self.floor and self._wanted.is_set():
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
        items = await items_after(self.store, position, self.page)
        if not items:
            return None, b""
        payload = b"".join(i.frame for i in items if wanted.wants(i))
        return items[-1].entry.id, deflated(payload) if gzip and payload else payload

    async def follow(
        self, position: int | None, wanted: WatchFilter, gzip: bool = False
    ) -> AsyncIterator[bytes]:
        """The frames `wanted` of every event after `position` (None: from now), in batches
        as they come; b"" every `keepalive` seconds with nothing to send (for a comment that
        keeps proxies from cutting the stream)."""
        at = await self.store.last_event_id() if position is None else position
        self.watchers += 1
        self._wanted.set()
        try:
            while not self.closed:
                new = self._new
                last, payload = await self.after(at, wanted, gzip)
                if last is not None:
                    at = last
                    if payload:
                        yield payload
                    continue
                # shielded: a watcher that goes away must not cancel everyone's future
                if await asyncio.shield(new) and not self.closed:
                    yield b""
        finally:
            self.watchers -= 1


def parse_position(last_event_id: str | None, after: str | None) -> int | None:
    """Where a stream resumes: the Last-Event-ID header (a reconnecting EventSource sends
    it), else ?after=ID; None: from now."""
    raw, name = (last_event_id, "Last-Event-ID") if last_event_id else (after, "after")
    if not raw:
        return None
    return parse_int(raw.strip(), name, 0, MAX_ID, "an event id")
