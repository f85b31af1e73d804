"""Retention in the background (bridge.http.background.prune_store): batches sized by how
long the last one took, so that the webhook's writes never wait behind a long delete."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from bridge.core.times import NS
from bridge.http.background import PRUNE_BATCHES, next_batch, prune_store
from bridge.store import AlertQuery
from bridge.store.sqlite.store import SqliteStore
from tests.stores import T0, received


def test_the_next_batch_doubles_when_quick_halves_when_slow_within_bounds() -> None:
    assert next_batch(100, 0.001) == 200
    assert next_batch(100, 0.005) == 100
    assert next_batch(100, 0.050) == 50
    assert next_batch(PRUNE_BATCHES[1], 0.0) == PRUNE_BATCHES[1]
    assert next_batch(PRUNE_BATCHES[0], 1.0) == PRUNE_BATCHES[0]


async def test_prune_deletes_everything_old_in_growing_batches(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "alerts.db")
    await store.start()
    try:
        old = [received("resolved", T0 + i * NS, T0 + i * NS + NS, f"{i:016x}", team=f"t{i % 7}")
               for i in range(700)]  # fmt: skip
        await store.ingest(old, T0)
        await store.ingest([received(fingerprint="f" * 16)], T0)  # firing: kept
        await store.set_retention_days(1)
        asked: list[int] = []
        real = store.prune

        got: list[int] = []

        async def prune(at: int, batch: int = 5000) -> int:
            asked.append(batch)
            got.append(await real(at, batch))
            return got[-1]

        store.prune = prune  # type: ignore[method-assign]
        original: Any = store
        # Each batch takes 0.5 ms by the clock given: quick, so each doubles.
        clock = itertools.count(0, 0.0005)
        removed = await prune_store(original, lambda: next(clock))
        assert removed == 700
        assert asked == [50, 100, 200, 400]
        assert got[:-1] == asked[:-1]
        assert got[-1] < asked[-1]  # stopped at the first short one
        assert [a.fingerprint for a in await store.list_alerts(AlertQuery())] == ["f" * 16]
    finally:
        await store.close()
