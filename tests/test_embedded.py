"""The embedded evaluator across restarts: the previous run's firing alerts continue as the
same episodes when their condition still holds, and are resolved when it does not."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.core.rules import DEFAULT_RULES
from bridge.store.sqlite.database import AlertQuery, Store, get_events, list_alerts
from bridge.store.sqlite.writer import Writer
from bridge.telemetry.embedded import EmbeddedEvaluator
from bridge.telemetry.exporter import Telemetry

RULES = [r.replace(for_seconds=0) for r in DEFAULT_RULES if r.metric_name == "system.cpu.percent"]


def run(
    store: Store, cpu: float | None, clock: list[float], grace: float = 30.0
) -> EmbeddedEvaluator:
    """A fresh evaluator (a new run of serve) on the store, with CPU at `cpu`."""
    telemetry = Telemetry("telemetry")
    if cpu is not None:
        telemetry.set_system(cpu_ratio=cpu, memory_bytes=100.0)
    return EmbeddedEvaluator(RULES, telemetry, "alertbridge", "127.0.0.1:9470",
                             restart_grace=grace, clock=lambda: clock[0])  # fmt: skip


def firing(store: Store) -> list[tuple[int, str]]:
    alerts = store.read(lambda c: list_alerts(c, AlertQuery(status="firing", sort="newest")))
    return sorted((a.id, a.alertname) for a in alerts)


def trail(store: Store, alert_id: int) -> list[tuple[str, str]]:
    return [(e.kind, e.detail) for e in store.read(lambda c: get_events(c, alert_id))]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "a.db")


async def test_a_restart_while_firing_continues_the_same_episodes(store: Store) -> None:
    """Both CPU rules fire, the process restarts, CPU is still high: the same ids go on
    firing (no new episode), each with a "continued" event; when CPU drops they resolve."""
    clock = [1000.0]
    async with Writer(store) as writer:
        first = run(store, 0.97, clock)
        assert len((await first.evaluate_once(writer, store)).fired) == 2
        clock[0] += 60
        second = run(store, 0.97, clock)  # the restart: a new evaluator, memory lost
        result = await second.evaluate_once(writer, store)
        assert (result.fired, result.resolved) == ([], [])
        assert firing(store) == [(1, "high_cpu"), (2, "critical_cpu")]
        assert trail(store, 1)[-1] == ("continued", "the condition still held at restart")
        clock[0] += 5
        assert (await second.evaluate_once(writer, store)).fired == []  # still the same
        second.telemetry.set_system(cpu_ratio=0.10)
        result = await second.evaluate_once(writer, store)
        assert sorted(result.resolved) == [1, 2]
    assert firing(store) == []


async def test_a_restart_after_the_condition_ended_resolves(store: Store) -> None:
    """CPU fell while the process was down: the previous run's alerts are resolved with the
    reason, resolution "restart"."""
    clock = [1000.0]
    async with Writer(store) as writer:
        await run(store, 0.97, clock).evaluate_once(writer, store)
        clock[0] += 60
        await run(store, 0.20, clock).evaluate_once(writer, store)
    assert firing(store) == []
    assert trail(store, 1)[-1] == ("resolved", "condition no longer held at restart")
    assert store.read(lambda c: list_alerts(c, AlertQuery()))[0].resolution == "restart"


async def test_the_previous_run_waits_for_data_then_for_the_grace(store: Store) -> None:
    """With no CPU value yet (the first sample not taken) nothing is decided; once the grace
    is over without data, the alerts are resolved."""
    clock = [1000.0]
    async with Writer(store) as writer:
        await run(store, 0.97, clock).evaluate_once(writer, store)
        second = run(store, None, clock, grace=30)
        await second.evaluate_once(writer, store)
        assert len(firing(store)) == 2
        clock[0] += 31
        await second.evaluate_once(writer, store)
    assert firing(store) == []


async def test_another_instances_alerts_are_not_taken_up(store: Store) -> None:
    """Firing local alerts of another instance (the port changed) cannot continue here."""
    clock = [1000.0]
    async with Writer(store) as writer:
        other = EmbeddedEvaluator(RULES, Telemetry("telemetry"), "alertbridge", "other:1",
                                  clock=lambda: clock[0])  # fmt: skip
        other.telemetry.set_system(cpu_ratio=0.97, memory_bytes=1.0)
        await other.evaluate_once(writer, store)
        result = await run(store, 0.97, clock).evaluate_once(writer, store)
        assert len(result.fired) == 2  # its own, new
    instances = {(a.labels["instance"], a.status)
                 for a in store.read(lambda c: list_alerts(c, AlertQuery()))}  # fmt: skip
    assert instances == {("other:1", "resolved"), ("127.0.0.1:9470", "firing")}


async def test_a_local_alert_resolved_by_hand_stays_resolved(store: Store) -> None:
    """Resolved by hand while the condition holds: the evaluator does not reopen it."""
    from bridge.store.sqlite.actions import resolve

    clock = [1000.0]
    async with Writer(store) as writer:
        evaluator = run(store, 0.97, clock)
        await evaluator.evaluate_once(writer, store)
        await writer.submit(resolve(1, "ann", "", 1))
        clock[0] += 5
        result = await evaluator.evaluate_once(writer, store)
        assert result.fired == []
    assert (1, "high_cpu") not in firing(store)
