"""The background lease's holder (bridge.workers.leader) on one machine: a server restarted after
a crash takes its dead predecessor's lease at once instead of waiting out the term; a live
process's lease is left alone; work under `lead` starts and stops with the lease."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from bridge.core.times import NS, now_ns
from bridge.store.sqlite.store import SqliteStore
from bridge.workers.leader import Leader, lead
from tests.support import until


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


async def test_a_dead_predecessor_here_is_replaced_at_once_a_live_one_is_not(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.start()
    try:
        far = now_ns() + 3600 * NS  # the predecessor's term: an hour
        host = socket.gethostname()
        alive = f"{host}:{os.getppid()}:aaaaaa"
        assert await store.lease("background", alive, far, now_ns())
        leader = Leader(store, term=60)
        assert not await leader.try_once()  # alive: its term must run out
        assert await store.lease_holder("background") == alive
        await store.release("background", alive)
        gone = f"{host}:{dead_pid()}:bbbbbb"
        assert await store.lease("background", gone, far, now_ns())
        assert await leader.try_once()  # gone: taken at once
        assert await store.lease_holder("background") == leader.holder
        # a restarted container: the same host name and pid, another token
        await store.release("background", leader.holder)
        assert await store.lease("background", f"{host}:{os.getpid()}:cccccc", far, now_ns())
        again = Leader(store, term=60)
        assert await again.try_once()
        other_machine = Leader(store, term=60, holder="elsewhere:1:dddddd")
        assert not await other_machine.try_once()
    finally:
        await store.close()


async def test_work_under_the_lease_starts_and_stops_with_it(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.start()
    running: list[bool] = []

    @contextlib.asynccontextmanager
    async def work() -> AsyncIterator[None]:
        running.append(True)
        try:
            yield
        finally:
            running.append(False)

    try:
        leader = Leader(store, term=60, holder="me:1:x")
        assert not leader.held
        ready = asyncio.Event()
        task = asyncio.create_task(lead(leader, work, ready))
        await ready.wait()  # not held: ready at once, nothing started
        assert running == []
        await leader.try_once()
        await until(lambda: running == [True], "the lease work to start or stop", 5, every=0)
        await store.lease("background", "thief:2:y", now_ns() + 60 * NS, now_ns() + 61 * NS)
        await leader.try_once()  # renewal refused: lost
        await until(lambda: running == [True, False], "the lease work to start or stop", 5, every=0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        await store.close()


async def test_a_store_failing_ends_the_lease_and_a_failing_start_is_tried_again(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "a.db")
    await store.start()
    leader = Leader(store, term=60, holder="me:1:x")
    assert await leader.try_once()
    starts: list[int] = []

    @contextlib.asynccontextmanager
    async def failing() -> AsyncIterator[None]:
        starts.append(1)
        raise RuntimeError("cannot start")
        yield  # (a generator)

    ready = asyncio.Event()
    task = asyncio.create_task(lead(leader, failing, ready, retry=0.01))
    await ready.wait()  # set though the start failed
    await until(lambda: len(starts) >= 2, "a second start", 5, every=0)  # tried again
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await store.close()
    assert not await leader.try_once()  # the store is gone: not ours to act on
    assert leader.lost.is_set()
