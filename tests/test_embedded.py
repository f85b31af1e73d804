"""The embedded evaluator across restarts: the previous run's firing alerts continue as the
same episodes when their condition still holds, and are resolved when it does not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.core.rules import DEFAULT_RULES
from bridge.store import AlertQuery, AlertStore
from bridge.store.sqlite.store import SqliteStore
from bridge.telemetry.embedded import EmbeddedEvaluator
from bridge.telemetry.exporter import Telemetry

RULES = [r.replace(for_seconds=0) for r in DEFAULT_RULES if r.metric_name == "system.cpu.percent"]


def run(
    store: AlertStore, cpu: float | None, clock: list[float], grace: float = 30.0
) -> EmbeddedEvaluator:
    """A fresh evaluator (a new run of serve) on the store, with CPU at `cpu`."""
    telemetry = Telemetry("telemetry")
    if cpu is not None:
        telemetry.set_system(cpu_ratio=cpu, memory_bytes=100.0)
    return EmbeddedEvaluator(RULES, telemetry, "alertbridge", "127.0.0.1:9470",
                             restart_grace=grace, clock=lambda: clock[0])  # fmt: skip


async def firing(store: AlertStore) -> list[tuple[int, str]]:
    alerts = await store.list_alerts(AlertQuery(status="firing", sort="newest"))
    return sorted((a.id, a.alertname) for a in alerts)


async def trail(store: AlertStore, alert_id: int) -> list[tuple[str, str]]:
    return [(e.kind, e.detail) for e in await store.events(alert_id)]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[AlertStore]:
    opened = SqliteStore(tmp_path / "a.db")
    await opened.start()
    yield opened
    await opened.close()


async def test_a_restart_while_firing_continues_the_same_episodes(store: AlertStore) -> None:
    """Both CPU rules fire, the process restarts, CPU is still high: the same ids go on
    firing (no new episode), each with a "continued" event; when CPU drops they resolve."""
    clock = [1000.0]
    first = run(store, 0.97, clock)
    assert len((await first.evaluate_once(store)).fired) == 2
    clock[0] += 60
    second = run(store, 0.97, clock)  # the restart: a new evaluator, memory lost
    result = await second.evaluate_once(store)
    assert (result.fired, result.resolved) == ([], [])
    assert (await firing(store)) == [(1, "high_cpu"), (2, "critical_cpu")]
    assert (await trail(store, 1))[-1] == ("continued", "the condition still held at restart")
    clock[0] += 5
    assert (await second.evaluate_once(store)).fired == []  # still the same
    second.telemetry.set_system(cpu_ratio=0.10)
    result = await second.evaluate_once(store)
    assert sorted(result.resolved) == [1, 2]
    assert (await firing(store)) == []


async def test_a_restart_after_the_condition_ended_resolves(store: AlertStore) -> None:
    """CPU fell while the process was down: the previous run's alerts are resolved with the
    reason, resolution "restart"."""
    clock = [1000.0]
    await run(store, 0.97, clock).evaluate_once(store)
    clock[0] += 60
    await run(store, 0.20, clock).evaluate_once(store)
    assert (await firing(store)) == []
    assert (await trail(store, 1))[-1] == ("resolved", "condition no longer held at restart")
    assert (await store.list_alerts(AlertQuery()))[0].resolution == "restart"


async def test_the_previous_run_waits_for_data_then_for_the_grace(store: AlertStore) -> None:
    """With no CPU value yet (the first sample not taken) nothing is decided; once the grace
    is over without data, the alerts are resolved."""
    clock = [1000.0]
    await run(store, 0.97, clock).evaluate_once(store)
    second = run(store, None, clock, grace=30)
    await second.evaluate_once(store)
    assert len(await firing(store)) == 2
    clock[0] += 31
    await second.evaluate_once(store)
    assert (await firing(store)) == []


async def test_another_instances_alerts_are_not_taken_up(store: AlertStore) -> None:
    """Firing local alerts of another instance (the port changed) cannot continue here."""
    clock = [1000.0]
    other = EmbeddedEvaluator(RULES, Telemetry("telemetry"), "alertbridge", "other:1",
                              clock=lambda: clock[0])  # fmt: skip
    other.telemetry.set_system(cpu_ratio=0.97, memory_bytes=1.0)
    await other.evaluate_once(store)
    result = await run(store, 0.97, clock).evaluate_once(store)
    assert len(result.fired) == 2  # its own, new
    instances = {(a.labels["instance"], a.status)
                 for a in (await store.list_alerts(AlertQuery()))}  # fmt: skip
    assert instances == {("other:1", "resolved"), ("127.0.0.1:9470", "firing")}


async def test_a_local_alert_resolved_by_hand_stays_resolved(store: AlertStore) -> None:
    """Resolved by hand while the condition holds: the evaluator does not reopen it."""

    clock = [1000.0]
    evaluator = run(store, 0.97, clock)
    await evaluator.evaluate_once(store)
    await store.resolve(1, "ann", "", 1)
    clock[0] += 5
    result = await evaluator.evaluate_once(store)
    assert result.fired == []
    assert (1, "high_cpu") not in (await firing(store))
