"""The escalation engine in a process of its own (`escalation.worker: process`, the default):
`serve` starts it and starts it again if it dies; it opens the same database, follows the feed
(polling: another process's writes do not wake it) and takes the due steps, off the server's
interpreter, so that escalation does not take the webhook's CPU. It exits when the server is
gone. Its counters (steps taken, notifications a rate limit held back) are kept in the store
for the server's /metrics and GET /api/v1/channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

import aiohttp

from bridge.alertmanager.client import AlertmanagerCluster
from bridge.config import Settings
from bridge.core.aio import ignore_stop_signals, stop_process, stop_task, wait_event
from bridge.escalation.engine import Escalator
from bridge.store import AlertStore, open_store

log = logging.getLogger(__name__)
#: How often the worker looks for new changes (another process's writes) and saves counters.
POLL = 0.2
COUNTS_EVERY = 2.0
RESTART_AFTER = 2.0


async def save_counts(store: AlertStore, engine: Escalator) -> None:
    steps = {f"{p}/{lv}": n for (p, lv), n in engine.steps_taken.items()}
    await store.save_engine_counts({"steps": steps, "held": dict(engine.limiter.held_total)})


async def run_worker(settings: Settings, db: str, parent: int) -> None:
    """Run the engine until the parent process is gone or SIGTERM."""
    _die_with_parent()
    store = open_store(db, query_timeout=settings.server.query_timeout)
    await store.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with aiohttp.ClientSession() as session:
            cluster = AlertmanagerCluster.of(settings.alertmanager.urls, session)
            engine = Escalator(store, settings.escalation, cluster, poll=POLL)
            previous = await store.engine_counts()  # counters go on from the last run's
            engine.steps_taken.update({_key(k): v for k, v in previous.get("steps", {}).items()})
            engine.limiter.held_total.update(previous.get("held", {}))
            await engine.consumer.start()
            task = asyncio.create_task(engine.run_forever(), name="escalation-engine")
            try:
                saved = loop.time()
                while not stop.is_set():
                    await wait_event(stop, 0.5)
                    if os.getppid() != parent:
                        log.warning("the server (pid %d) is gone: stopping", parent)
                        break
                    if loop.time() - saved >= COUNTS_EVERY:
                        saved = loop.time()
                        with contextlib.suppress(Exception):
                            await save_counts(store, engine)
            finally:
                await stop_task(task)
                with contextlib.suppress(Exception):
                    await save_counts(store, engine)
    finally:
        await store.close()
        ignore_stop_signals(loop)


class WorkerProcess:
    """The server's side: start the worker, start it again when it dies, stop it."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False

    @classmethod
    def for_settings(cls, settings: Settings) -> WorkerProcess:
        argv = [sys.executable, "-m", "bridge"]
        if settings.source != "<defaults>":
            argv += ["--config", settings.source]
        argv += ["escalation-worker", "--db", settings.server.db, "--parent", str(os.getpid())]
        return cls(argv)

    async def run(self) -> None:
        """Keep the worker running until stop() (bounded backoff between restarts)."""
        while not self.stopping:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL
            )
            code = await self.proc.wait()
            if self.stopping:
                return
            log.error("escalation worker exited with %s; starting it again in %gs", code,
                      RESTART_AFTER)  # fmt: skip
            await asyncio.sleep(RESTART_AFTER)

    async def stop(self, timeout: float = 10.0) -> None:
        self.stopping = True
        await stop_process(self.proc, timeout)


def _key(text: str) -> tuple[str, str]:
    policy, _, level = text.rpartition("/")
    return policy, level


def _die_with_parent() -> None:
    """Linux: SIGTERM to this process when its parent dies (a server killed with SIGKILL
    leaves no worker behind); elsewhere the parent check in the loop does it within 0.5 s."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
