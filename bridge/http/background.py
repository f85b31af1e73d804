"""The server's background work, as aiohttp cleanup contexts the application factory
(bridge.http.app) adds: the store and the replicas' lease, the feed's consumers, the work
against Alertmanager (reconciler, escalation inline or in its worker, the heartbeat check),
and the periodic jobs (the sampler, retention, the embedded evaluator). What runs once across
replicas runs while this replica holds the lease (bridge.workers.leader)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web

from bridge.alertmanager.client import AlertmanagerCluster
from bridge.alertmanager.reconciler import Reconciler
from bridge.core.logutil import log_failure
from bridge.core.rules import WindowHolds
from bridge.core.times import now_ns
from bridge.escalation.engine import CONSUMER as ESCALATION_CONSUMER
from bridge.escalation.engine import Escalator
from bridge.escalation.heartbeat import Watchdog
from bridge.escalation.links import ack_links
from bridge.escalation.worker import WorkerProcess
from bridge.feed.consumer import FeedConsumer, starting_position
from bridge.feed.enrich import CONSUMER as ENRICH
from bridge.feed.enrich import enricher
from bridge.feed.notify import CONSUMER
from bridge.host.aio import stop_task
from bridge.http.keys import (
    ENRICH_FEED,
    ESCALATOR,
    FEED,
    LEADER,
    METRICS,
    NOTIFIER,
    RECONCILER,
    SETTINGS,
    STORE,
    TELEMETRY,
    WATCHDOG,
    WORKER,
)
from bridge.http.rules import MANAGER, rules_in_force
from bridge.store import AlertStore, open_store
from bridge.telemetry.embedded import EmbeddedEvaluator
from bridge.telemetry.exporter import CpuSampler, memory_used_bytes
from bridge.workers.leader import Leader, lead

log = logging.getLogger(__name__)
PRUNE_EVERY_SECONDS = 3600


def every(
    seconds: float,
    name: str,
    step: Callable[[web.Application], Awaitable[None]],
    leader_only: bool = False,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running `step` now and then every `seconds`, logging its failures;
    `leader_only`: only while this replica holds the background lease."""

    async def loop(app: web.Application) -> None:
        while True:
            if leader_only:
                await app[LEADER].gained.wait()
            try:
                await step(app)
            except Exception as exc:
                log_failure(log, exc, "background task %s failed; retrying in %ss", name, seconds)
            await asyncio.sleep(seconds)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(loop(app), name=f"alertbridge-{name}")
        yield
        await stop_task(task)

    return ctx


async def storage_ctx(app: web.Application) -> AsyncIterator[None]:
    """Open the store (it must be writable: file, directory, journal) and start its writer;
    follow the feed for the notification callbacks; close all after the last request."""
    settings = app[SETTINGS]
    store = await asyncio.to_thread(
        open_store,
        settings.server.db,
        query_timeout=settings.server.query_timeout,
        password_file=settings.server.db_password_file,
    )
    try:
        await store.start()
        # Acks consult it: with no Alertmanager, they record no silence to make.
        await store.record_alertmanagers(list(settings.alertmanager.urls))
    except BaseException:
        await store.close()
        raise
    app[STORE] = store
    # The work done once across replicas runs while this one holds the lease (with SQLite:
    # always; taken here before anything starts, as before there were leases).
    leader = app[LEADER] = Leader(store, term=float(settings.server.lease_duration))
    await leader.try_once()
    app[METRICS].background_leader.set_function(lambda: float(leader.held))
    started = asyncio.Event()  # the consumers are running (or another replica's)
    tasks = [asyncio.create_task(leader.run_forever(), name="alertbridge-lease"),
             asyncio.create_task(lead(leader, lambda: _feed_consumers(app), started),
                                 name="alertbridge-consumers")]  # fmt: skip
    await started.wait()
    try:
        yield
    finally:
        for task in reversed(tasks):
            await stop_task(task)
        await store.close()


@contextlib.asynccontextmanager
async def _feed_consumers(app: web.Application) -> AsyncIterator[None]:
    """The feed's notification callbacks and the enrichment, from their stored positions."""
    settings, store, notifier = app[SETTINGS], app[STORE], app[NOTIFIER]
    tasks = []
    if notifier.callbacks:
        feed = app[FEED] = FeedConsumer(store, CONSUMER, notifier.handler(store))
        await feed.start()
        tasks.append(asyncio.create_task(feed.run_forever(), name="alertbridge-notify"))
    if settings.enrichment:
        enrich = app[ENRICH_FEED] = FeedConsumer(store, ENRICH,
                                                 enricher(store, settings.enrichment))  # fmt: skip
        await enrich.start()
        tasks.append(asyncio.create_task(enrich.run_forever(), name="alertbridge-enrich"))
    try:
        yield
    finally:
        for task in tasks:
            await stop_task(task)


async def alertmanager_ctx(app: web.Application) -> AsyncIterator[None]:
    """Silences and reconciliation against the configured Alertmanager, escalation and the
    heartbeat check: while this replica holds the background lease."""
    started = asyncio.Event()
    work = asyncio.create_task(lead(app[LEADER], lambda: _alertmanager_work(app), started),
                               name="alertbridge-alertmanager")  # fmt: skip
    await started.wait()
    yield
    await stop_task(work)


@contextlib.asynccontextmanager
async def _alertmanager_work(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    am = settings.alertmanager
    trust_after = am.trust_after(settings.prometheus.evaluation_interval)
    async with aiohttp.ClientSession() as session:
        reconciler = Reconciler(
            app[STORE],
            AlertmanagerCluster.of(am.urls, session, trust_after),
            silence_seconds=am.silence_duration,
            max_ack_seconds=am.max_ack_duration or None,
            on_round=lambda outcome: app[METRICS].reconcile_rounds.labels(outcome=outcome).inc(),
            limits=settings.limits,
            held=WindowHolds(lambda: rules_in_force(app)),
        )
        app[RECONCILER] = reconciler
        # Acks and resolutions through the other replicas wake it (bridge.http.wake).
        stop_listening = await app[STORE].on_wake(reconciler.kick)
        tasks = [asyncio.create_task(reconciler.run_forever(am.reconcile_interval))]
        worker = None
        if settings.escalation.policies and settings.escalation.worker == "inline":
            links = await ack_links(app[STORE], settings.server.public_url,
                                    settings.server.ack_link_duration)  # fmt: skip
            escalator = app[ESCALATOR] = Escalator(
                app[STORE],
                settings.escalation,
                AlertmanagerCluster.of(am.urls, session),
                links=links,
            )
            app[METRICS].escalations.source = lambda: escalator.steps_taken
            app[METRICS].escalations.held = lambda: escalator.limiter.held_total
            await escalator.consumer.start()
            tasks.append(
                asyncio.create_task(escalator.run_forever(), name="alertbridge-escalation")
            )
        elif settings.escalation.policies:  # its own process: the counters via the store
            # where it begins, set now: an alert taken while the process starts is escalated
            await starting_position(app[STORE], ESCALATION_CONSUMER)
            worker = app[WORKER] = WorkerProcess.for_settings(settings)
            app[METRICS].escalations.store = app[STORE]
            tasks.append(asyncio.create_task(worker.run(), name="alertbridge-escalation"))
        if settings.heartbeat.enabled:
            watchdog = app[WATCHDOG] = Watchdog(app[STORE], settings, session)
            app[METRICS].heartbeat_age.set_function(watchdog.age)
            tasks.append(asyncio.create_task(_watch(watchdog), name="alertbridge-heartbeat"))
        try:
            yield
        finally:
            await stop_listening()
            if worker is not None:
                await worker.stop()
            for task in tasks:
                await stop_task(task)


async def _watch(watchdog: Watchdog) -> None:
    """Check the heartbeat every few seconds (an interval of at most a fifth of the timeout,
    so that a silent pipeline is noticed within a fifth past the timeout)."""
    every = max(0.5, min(5.0, watchdog.timeout / 5))
    while True:
        try:
            await watchdog.check()
        except Exception as exc:
            log_failure(log, exc, "heartbeat check failed; retrying in %ss", every)
        await asyncio.sleep(every)


def sampler(app: web.Application) -> Callable[[web.Application], Awaitable[None]]:
    cpu = CpuSampler() if app[SETTINGS].telemetry.system == "psutil" else None

    async def step(app: web.Application) -> None:
        if cpu is not None:
            app[TELEMETRY].set_system(cpu(), memory_used_bytes())
        app[TELEMETRY].tick()

    return step


#: Retention deletes in batches sized to take about this long each (the webhook's jobs wait
#: behind one batch at most), from PRUNE_BATCHES[0] rows to [1], starting at [0].
PRUNE_BATCH_SECONDS = 0.005
PRUNE_BATCHES = (50, 5000)


def next_batch(rows: int, seconds: float) -> int:
    """The next batch's size after one of `rows` took `seconds` (its wait for the writer
    included: a busy webhook shrinks the batches): doubled under half the target, halved over
    twice it, within PRUNE_BATCHES."""
    if seconds < PRUNE_BATCH_SECONDS / 2:
        rows *= 2
    elif seconds > PRUNE_BATCH_SECONDS * 2:
        rows //= 2
    return max(PRUNE_BATCHES[0], min(PRUNE_BATCHES[1], rows))


async def prune(app: web.Application) -> None:
    removed = await prune_store(app[STORE])
    if removed:
        log.info("retention deleted %d resolved episodes", removed)


async def prune_store(store: AlertStore, clock: Callable[[], float] = time.monotonic) -> int:
    """Delete what retention says, batch after batch; how many episodes went. Bounded: 5
    million a round (the next round, an hour later, goes on)."""
    rows, removed = PRUNE_BATCHES[0], 0
    for _ in range(5_000_000 // PRUNE_BATCHES[0]):
        began = clock()
        done = await store.prune(now_ns(), rows)
        removed += done
        if done < rows or removed >= 5_000_000:
            break
        rows = next_batch(rows, clock() - began)
    return removed


def embedded(app: web.Application) -> Callable[[web.Application], Awaitable[None]]:
    settings = app[SETTINGS]
    instance = f"{settings.server.host}:{settings.server.port}"
    evaluator = EmbeddedEvaluator(
        list(settings.rules.enabled),
        app[TELEMETRY],
        settings.prometheus.job,
        instance,
        restart_grace=max(30.0, 3.0 * settings.telemetry.sample_interval),
    )  # fmt: skip (the rule set in force replaces these rules at the first step)

    seen = [0]  # the rule set version the evaluator has

    async def step(app: web.Application) -> None:
        manager = app.get(MANAGER)
        if manager is not None and manager.version != seen[0]:
            evaluator.set_rules(list(manager.rules.enabled))
            seen[0] = manager.version
        await evaluator.evaluate_once(app[STORE])

    return step
