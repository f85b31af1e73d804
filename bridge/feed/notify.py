"""Notification callbacks run after an alert change is committed; they never block ingestion."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable

from bridge.core.model import Severity
from bridge.store.sqlite.database import StoredAlert

log = logging.getLogger(__name__)
Callback = Callable[[StoredAlert], Awaitable[None] | None]


class Notifier:
    """Calls registered callbacks for stored alerts at or above a severity threshold.

    Synchronous callbacks run in a worker thread, coroutine functions as tasks; a callback that
    raises is logged and counted (`errors`) and does not stop the others.

    >>> n = Notifier(Severity.WARNING)
    >>> n.add(lambda alert: None)
    """

    def __init__(self, threshold: Severity = Severity.WARNING) -> None:
        self.threshold = threshold
        self.callbacks: list[Callback] = []
        self.errors = 0
        self.delivered = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    def _wanted(self, alert: StoredAlert) -> bool:
        try:
            return Severity(alert.severity).rank >= self.threshold.rank
        except ValueError:
            return True  # an unknown severity from a foreign rule: better told than not

    async def _call(self, callback: Callback, alert: StoredAlert) -> None:
        try:
            if inspect.iscoroutinefunction(callback):
                await callback(alert)
            else:
                await asyncio.to_thread(callback, alert)
            self.delivered += 1
        except Exception:
            self.errors += 1
            log.exception("notification callback %r failed for alert %d", callback, alert.id)

    def notify(self, alerts: Iterable[StoredAlert]) -> None:
        """Schedule the callbacks for these alerts and return at once."""
        for alert in alerts:
            if not self._wanted(alert):
                continue
            for callback in self.callbacks:
                task = asyncio.create_task(self._call(callback, alert))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the callbacks scheduled so far (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
