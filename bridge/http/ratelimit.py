"""Attempts at credentials, rate limited: sign-ins by client address and by key, wrong bearer
tokens by client address. The `limits` library's moving window, in memory (a restart forgets:
these are floods, not a ledger). Past a limit the answer is 429 with Retry-After, counted.

>>> attempts = Attempts("2/minute", "1/minute")
>>> attempts.signin("127.0.0.1"), attempts.signin("127.0.0.1"), attempts.signin("127.0.0.1") > 0
(None, None, True)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from limits import RateLimitItem, parse, storage, strategies


def rate(text: str) -> RateLimitItem:
    """A rate as `limits` writes them ("10/minute", "100 per hour"); ValueError otherwise."""
    return parse(text)


class Attempts:
    """The limiter of the attempts of one server."""

    def __init__(self, signins: str, failures: str,
                 on_limited: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self._window = strategies.MovingWindowRateLimiter(storage.MemoryStorage())
        self._signins = rate(signins)
        self._failures = rate(failures)
        self._on_limited = on_limited or (lambda what: None)

    def signin(self, *who: str) -> float | None:
        """Count a sign-in attempt of each of `who` (an address, a key's name); None when
        every one is within its limit, else the seconds until it may try again."""
        return self._hit(self._signins, "signin", who)

    def failure(self, address: str) -> float | None:
        """Count a wrong bearer token from `address`; as signin."""
        return self._hit(self._failures, "token", (address,))

    def _hit(self, item: RateLimitItem, what: str, who: tuple[str, ...]) -> float | None:
        wait = 0.0
        for name in who:
            if not self._window.hit(item, what, name):
                reset = self._window.get_window_stats(item, what, name).reset_time
                wait = max(wait, reset - time.time(), 1.0)
        if wait:
            self._on_limited(what)
            return float(math.ceil(wait))
        return None
