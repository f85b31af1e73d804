"""A consumer of the feed of changes: it handles every event after the last one it handled,
in order, and keeps its position in the store, so that it resumes there after a restart.

Delivery is at least once: a position is saved after its batch was handled, so a crash in
between hands that batch over again. A consumer that has never run starts at the newest
event (it does not replay the history); one that finds its position pruned goes on from
the next event that exists. In-process writes wake it at once (`AlertStore.changes`); those
of other processes (the CLI, another replica) within `poll` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from bridge.core.logutil import log_failure
from bridge.host.aio import wait_event
from bridge.store import Event
from bridge.store.interface import FeedCursors, Reads

log = logging.getLogger(__name__)
Handler = Callable[[Sequence[Event]], Awaitable[None]]


class FeedStore(Reads, FeedCursors, Protocol):
    """What a consumer of the feed uses of the store: its reads, and where it is."""


class FeedConsumer:
    """Follows the feed for one named consumer.

    >>> # consumer = FeedConsumer(store, "notify", handle); await consumer.run_forever()
    """

    def __init__(
        self,
        store: FeedStore,
        name: str,
        handle: Handler,
        *,
        batch: int = 500,
        poll: float = 1.0,
        retry: float = 5.0,
        coalesce: float = 0.0,
    ) -> None:
        self.store = store
        self.name = name
        self.handle = handle
        self.batch = batch
        self.poll = poll
        self.retry = retry
        #: After a wake-up, wait this long before reading, so that a burst of writes is
        #: handled in a few large batches rather than one small batch per write.
        self.coalesce = coalesce
        self.position: int | None = None  # the last event handled; None until started
        self.handled = 0

    async def start(self) -> int:
        """Where it resumes: its saved position, or the newest event on its first run."""
        if self.position is None:
            self.position = await starting_position(self.store, self.name)
        return self.position

    async def run_once(self) -> int:
        """Handle the next batch of events, if any, then save the position; how many."""
        position = await self.start()
        events = await self.store.events_after(position, self.batch)
        if not events:
            return 0
        await self.handle(events)
        self.position = events[-1].id
        self.handled += len(events)
        await self.store.save_cursor(self.name, self.position)
        return len(events)

    async def catch_up(self, rounds: int = 10_000) -> int:
        """Handle everything there is now (bounded); how many."""
        total = 0
        for _ in range(rounds):
            done = await self.run_once()
            total += done
            if done < self.batch:
                break
        return total

    async def run_forever(self) -> None:
        """Catch up, then wait for the next change (or `poll` seconds), and again."""
        while True:
            try:
                changed = self.store.changes()
                await self.catch_up()
                await wait_event(changed, self.poll)
                if self.coalesce and changed.is_set():
                    await asyncio.sleep(self.coalesce)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_failure(log, exc, "feed consumer %s failed; retrying in %gs", self.name,
                            self.retry)  # fmt: skip
                await asyncio.sleep(self.retry)


async def starting_position(store: FeedStore, name: str) -> int:
    """Consumer `name`'s saved position; on its first run, the newest event, saved. A server
    whose consumer runs in another process calls it before it takes alerts: what arrives
    while that process starts is then after the position, not skipped."""
    saved = await store.cursor(name)
    if saved is None:
        saved = await store.last_event_id()
        await store.save_cursor(name, saved)
    return saved
