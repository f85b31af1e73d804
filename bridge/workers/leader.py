"""One replica at a time does the background work (reconciliation with Alertmanager,
retention, escalation, the heartbeat check, the feed's notification callbacks): the one
holding the store's lease `background`. Each replica tries to take or renew it every third of
its term (15 s); the holder that cannot renew (storage unreachable, too slow) stops its work at
once, and another takes the lease once the term has run out: a replica SIGKILLed is replaced
within a term and a third, one restarted on the same machine at once (its predecessor's pid is
gone). A replica stopping cleanly releases it (taken over at the next try). With SQLite, one
server on a file, the lease is always the one server's.

The terms are in the replicas' own clocks (as Alertmanager's cluster, they should agree within
a second or so; a clock seconds off shortens or stretches a term by as much)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from bridge.core.logutil import log_failure
from bridge.core.times import NS, now_ns
from bridge.store.interface import Leases

log = logging.getLogger(__name__)
#: The lease's term by default (server.lease_duration sets it).
TERM_SECONDS = 15.0
#: The holders of this process (several in tests): alive, whatever their pid says.
_OURS: set[str] = set()


class Leader:
    def __init__(self, store: Leases, name: str = "background",
                 term: float = TERM_SECONDS, holder: str | None = None) -> None:  # fmt: skip
        self.store = store
        self.name = name
        self.term = term
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        _OURS.add(self.holder)
        self.held = False
        self.first = True
        self.gained = asyncio.Event()
        self.lost = asyncio.Event()
        self.lost.set()

    async def try_once(self) -> bool:
        """Take or renew the lease; whether this replica holds it now."""
        at = now_ns()
        try:
            got = await asyncio.wait_for(
                self.store.lease(self.name, self.holder, at + int(self.term * NS), at),
                self.term / 3,
            )
            if not got:  # a predecessor of this process on this machine, killed?
                current = await asyncio.wait_for(self.store.lease_holder(self.name),
                                                 self.term / 3)  # fmt: skip
                if current is not None and self._dead_here(current):
                    log.warning("lease %s: its holder %s, on this machine, is gone: taken over",
                                self.name, current)  # fmt: skip
                    got = await asyncio.wait_for(
                        self.store.lease(self.name, self.holder, at + int(self.term * NS), at,
                                         replacing=current), self.term / 3,
                    )  # fmt: skip
        except Exception as exc:  # unreachable, slow: not ours to act on any more
            if self.held:
                log.warning("lease %s: cannot renew (%s); background work stops", self.name, exc)
            got = False
        first, self.first = self.first, False
        if got and not self.held:
            # Quiet at start (one server on SQLite takes it every time); loud on a takeover.
            log.log(logging.DEBUG if first else logging.WARNING,
                    "lease %s: taken by %s: this replica does the background work",
                    self.name, self.holder)  # fmt: skip
            self.held = True
            self.lost.clear()
            self.gained.set()
        elif not got and self.held:
            log.warning("lease %s: lost by %s", self.name, self.holder)
            self.held = False
            self.gained.clear()
            self.lost.set()
        return got

    def _dead_here(self, holder: str) -> bool:
        """Whether `holder` was a process of this machine that no longer runs: a server
        restarted after a crash need not wait for its own old lease to run out (with SQLite,
        always the case). Its pid reused by another process: taken as alive (the term then
        runs out as for another machine's); our own pid with another token: a predecessor
        (a container restarted keeps its host name and often its pid)."""
        parts = holder.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != socket.gethostname() or holder in _OURS:
            return False
        try:
            pid = int(parts[1])
        except ValueError:
            return False
        if pid == os.getpid():
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # alive, another user's
            return False
        return False

    async def run_forever(self) -> None:
        try:
            while True:
                await self.try_once()
                await asyncio.sleep(self.term / 3)
        finally:
            if self.held:
                self.held = False
                self.gained.clear()
                self.lost.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.store.release(self.name, self.holder), 2)


async def lead(leader: Leader, work: Callable[[], AbstractAsyncContextManager[None]],
               ready: asyncio.Event | None = None, retry: float = 2.0) -> None:  # fmt: skip
    """Run `work` (a context: started on entry, stopped on exit) whenever `leader` holds the
    lease, until cancelled. `ready` is set once the work has started, or at once when the
    lease is another's (the caller may wait for it: a server's start). A start that fails is
    logged and tried again after `retry` seconds."""
    while True:
        if not leader.held and ready is not None:
            ready.set()
        await leader.gained.wait()
        try:
            async with work():
                if ready is not None:
                    ready.set()
                await leader.lost.wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log_failure(log, exc, "background work under lease %s failed; again in %gs",
                        leader.name, retry)  # fmt: skip
            if ready is not None:
                ready.set()
            await asyncio.sleep(retry)
