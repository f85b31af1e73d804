"""The stages every delivery shares: the target read from its secret file, the POST with a
timeout, what came of it (timed, for the caller's metrics). A URL is a secret: it is in no
message and no log line."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from bridge.channels.base import Channel
from bridge.core.alerts import Notification
from bridge.core.errors import BridgeError

#: Seconds the far end has to take a message; then a DeliveryError (Alertmanager, which
#: notified the adapter, retries).
TIMEOUT = 8.0


class DeliveryError(BridgeError):
    """The far end did not take the message, or could not be reached."""


class TargetError(DeliveryError):
    """The target could not be read (its secret file)."""


def read_url(path: str) -> str:
    """A URL from its secret file; TargetError naming the file, not the URL, when it cannot
    be read or is not http(s)."""
    try:
        url = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TargetError(f"cannot read the URL file {path}: {exc.strerror}") from None
    if not url.startswith(("https://", "http://")):
        raise TargetError(f"the URL file {path} does not hold an http(s) URL")
    return url


async def post(session: aiohttp.ClientSession, url: str, message: Mapping[str, Any],
               what: str, timeout: float = TIMEOUT) -> int:  # fmt: skip
    """POST the message as JSON; the answer's status. DeliveryError when it is not 2xx or
    `what` cannot be reached (the URL stays out of the message)."""
    try:
        async with session.post(
            url, json=message, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            text = (await response.text())[:200]
            if response.status >= 300:
                raise DeliveryError(f"{what} answered HTTP {response.status}: {text.strip()}")
            return response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DeliveryError(f"{what} could not be reached: {exc.__class__.__name__}") from None


async def send(
    channel: Channel,
    config: Mapping[str, Any],
    session: aiohttp.ClientSession,
    notification: Notification,
    ids: Mapping[str, int],
    public_url: str | None,
    *,
    timeout: float = TIMEOUT,
    timed: Callable[[float], None] | None = None,
) -> int:
    """Deliver a notification through a channel: its target, its message, the POST (timed
    by `timed`, seconds, whatever came of it). The far end's status; TargetError or
    DeliveryError."""
    url = channel.target(config)
    message = channel.render(notification, ids, public_url)
    started = time.perf_counter()
    try:
        return await post(session, url, message, channel.title, timeout)
    finally:
        if timed is not None:
            timed(time.perf_counter() - started)
