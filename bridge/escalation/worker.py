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
import signal

import aiohttp

from bridge.alertmanager.client import AlertmanagerCluster
from bridge.config import Settings
from bridge.escalation.engine import Escalator
from bridge.escalation.links import ack_links
from bridge.host.aio import ignore_stop_signals, stop_task
from bridge.store import open_store
from bridge.store.interface import SystemChanges
from bridge.workers.child import die_with_parent, until_stopped
from bridge.workers.supervisor import Supervisor, worker_argv

log = logging.getLogger(__name__)
#: How often the worker looks for new changes (another process's writes) and saves counters.
POLL = 0.2
COUNTS_EVERY = 2.0


async def save_counts(store: SystemChanges, engine: Escalator) -> None:
    steps = {f"{p}/{lv}": n for (p, lv), n in engine.steps_taken.items()}
    await store.save_engine_counts({"steps": steps, "held": dict(engine.limiter.held_total)})


async def run_worker(settings: Settings, db: str, parent: int) -> None:
    """Run the engine until the parent process is gone or SIGTERM."""
    die_with_parent()
    store = open_store(db, query_timeout=settings.server.query_timeout,
                       password_file=settings.server.db_password_file)  # fmt: skip
    await store.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with aiohttp.ClientSession() as session:
            cluster = AlertmanagerCluster.of(settings.alertmanager.urls, session)
            links = await ack_links(store, settings.server.public_url,
                                    settings.server.ack_link_duration)  # fmt: skip
            engine = Escalator(store, settings.escalation, cluster, poll=POLL, links=links)
            previous = await store.engine_counts()  # counters go on from the last run's
            engine.steps_taken.update({_key(k): v for k, v in previous.get("steps", {}).items()})
            engine.limiter.held_total.update(previous.get("held", {}))
            await engine.consumer.start()
            task = asyncio.create_task(engine.run_forever(), name="escalation-engine")
            saver = asyncio.create_task(_save_counts_every(store, engine), name="counts")
            try:
                await until_stopped(stop, parent)
            finally:
                await stop_task(saver)
                await stop_task(task)
                with contextlib.suppress(Exception):
                    await save_counts(store, engine)
    finally:
        await store.close()
        ignore_stop_signals(loop)


async def _save_counts_every(store: SystemChanges, engine: Escalator) -> None:
    while True:
        await asyncio.sleep(COUNTS_EVERY)
        with contextlib.suppress(Exception):
            await save_counts(store, engine)


class WorkerProcess(Supervisor):
    """The server's side: start the worker, start it again when it dies, stop it."""

    name = "escalation worker"

    @classmethod
    def for_settings(cls, settings: Settings) -> WorkerProcess:
        return cls(worker_argv(settings, "escalation-worker"))


def _key(text: str) -> tuple[str, str]:
    policy, _, level = text.rpartition("/")
    return policy, level
