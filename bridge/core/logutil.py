"""Logging that a flood cannot bury: repeated messages at most once per interval, counted.

When the process runs out of file descriptors, asyncio logs every failed accept() with a
traceback, thousands a second (80,720 lines in 20 s were seen). A log is for the operator:
one line, then the count of what was left out, says the same.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from bridge.core.errors import StoreError


class Throttle:
    """Decides whether an occurrence of `key` is due, at most once per `interval` seconds;
    counts those it held back. Remembers at most `max_keys` keys (least recent forgotten).

    >>> t = Throttle(60, clock=lambda: 0.0)
    >>> t.due("a"), t.due("a"), t.held("a")
    (True, False, 1)
    """

    def __init__(
        self, interval: float, max_keys: int = 1000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._last: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()

    def due(self, key: Hashable) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return False
        self._last[key] = (now, 0)
        self._last.move_to_end(key)
        while len(self._last) > self.max_keys:
            self._last.popitem(last=False)
        return True

    def held(self, key: Hashable) -> int:
        """How many occurrences of `key` were held back since it was last due."""
        last = self._last.get(key)
        return last[1] if last is not None else 0

    def take(self, key: Hashable) -> tuple[bool, int]:
        """(due, how many were held back before this one)."""
        held = self.held(key)
        return self.due(key), held


class RepeatFilter(logging.Filter):
    """Passes a message (same logger, level and first line) at most once per interval; the
    next one that passes says how many were suppressed in between."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.throttle = Throttle(interval, clock=clock)

    def filter(self, record: logging.LogRecord) -> bool:
        first_line = str(record.msg).partition("\n")[0]
        key = (record.name, record.levelno, first_line)
        due, held = self.throttle.take(key)
        if not due:
            return False
        if held:
            record.msg = (
                f"{record.getMessage()} ({held} similar message(s) suppressed in the last"
                f" {self.throttle.interval:g}s)"
            )
            record.args = ()
        return True


def log_failure(log: logging.Logger, exc: BaseException, message: str, *args: object) -> None:
    """A background job's failure: a storage outage (StoreError: the database down, a disk
    full) in one line, no traceback, as it is the operator's to mend, not a bug (repeats are
    folded by RepeatFilter); anything else with its traceback."""
    if isinstance(exc, StoreError):
        log.warning(message + ": storage unavailable: %s", *args, exc)
    else:
        log.error(message, *args, exc_info=exc)
