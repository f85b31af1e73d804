"""The worker's side: what ties a worker process to the server that started it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from bridge.host.aio import wait_event

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # linux/prctl.h: a signal to this process when its parent dies


def die_with_parent() -> None:
    """Linux: SIGTERM to this process when its parent dies (a server killed with SIGKILL
    leaves no worker behind); elsewhere `until_stopped` notices within its period."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


async def until_stopped(stop: asyncio.Event, parent: int, every: float = 0.5) -> None:
    """Return once `stop` is set, or once the parent is no longer `parent` (the server is
    gone: this process was adopted), looking every `every` seconds."""
    while not stop.is_set():
        await wait_event(stop, every)
        if os.getppid() != parent:
            log.warning("the server (pid %d) is gone: stopping", parent)
            return
