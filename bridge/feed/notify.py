"""Notification callbacks on the feed of changes: every change of an alert (fired,
resolved, reopened, acknowledged, unacknowledged, note, assigned, silenced, expired, ...),
however it was made, reaches them after it is on disk; they never delay or fail the request
that made it, and they resume after a restart where they stopped (bridge.feed.consumer)."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from bridge.core.model import Severity
from bridge.store import Event, StoredAlert
from bridge.store.interface import Reads

log = logging.getLogger(__name__)
#: The consumer name under which the notifier keeps its position in the store.
CONSUMER = "notify"


@dataclass(frozen=True, slots=True)
class Change:
    """One change: its event, and the alert as it is when the callback runs."""

    event: Event
    alert: StoredAlert


Callback = Callable[[Change], Awaitable[None] | None]


class Notifier:
    """Calls registered callbacks for the changes of alerts at or above a severity threshold,
    in the feed's order. Synchronous callbacks run in a worker thread, coroutine functions on
    the loop; one that raises, or runs past `timeout` seconds, is logged and counted
    (`errors`) and does not stop the others.

    >>> n = Notifier(Severity.WARNING)
    >>> n.add(lambda change: None)
    """

    def __init__(self, threshold: Severity = Severity.WARNING, timeout: float = 30.0) -> None:
        self.threshold = threshold
        self.timeout = timeout
        self.callbacks: list[Callback] = []
        self.errors = 0
        self.delivered = 0

    def add(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def wanted(self, alert: StoredAlert) -> bool:
        try:
            return Severity(alert.severity).rank >= self.threshold.rank
        except ValueError:
            return True  # an unknown severity from a foreign rule: better told than not

    async def _call(self, callback: Callback, change: Change) -> None:
        try:
            if _is_async(callback):
                await asyncio.wait_for(callback(change), self.timeout)  # type: ignore[arg-type]
            else:
                await asyncio.wait_for(asyncio.to_thread(callback, change), self.timeout)
            self.delivered += 1
        except Exception:
            self.errors += 1
            log.exception(
                "notification callback %r failed for event %d (alert %d)",
                callback, change.event.id, change.alert.id,
            )  # fmt: skip

    def handler(self, store: Reads) -> Callable[[Sequence[Event]], Awaitable[None]]:
        """The feed consumer's handler: each event's alert read once per batch, then every
        callback called for each change in order (a pruned alert's events are skipped)."""

        async def handle(events: Sequence[Event]) -> None:
            ids = list(dict.fromkeys(e.alert_id for e in events))
            alerts = {a.id: a for a in await store.get_alerts(ids)}
            for event in events:
                alert = alerts.get(event.alert_id)
                if alert is None or not self.wanted(alert):
                    continue
                for callback in self.callbacks:
                    await self._call(callback, Change(event, alert))

        return handle


def _is_async(callback: Callback) -> bool:
    """A coroutine function, or an object whose __call__ is one."""
    return inspect.iscoroutinefunction(callback) or inspect.iscoroutinefunction(
        getattr(callback, "__call__", None)  # noqa: B004 - the method, not callable()
    )
