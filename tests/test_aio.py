"""asyncio helpers: waiting for an event without losing a cancellation, and stopping a task
that lost one."""

from __future__ import annotations

import asyncio

from bridge.host.aio import stop_task, wait_event


async def test_wait_event_returns_when_set_or_after_the_timeout() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 5) is True


async def test_a_cancelled_waiter_is_cancelled() -> None:
    event = asyncio.Event()
    task = asyncio.ensure_future(wait_event(event, 60))
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done == {task}
    assert task.cancelled()


async def test_stop_task_cancels_again_a_task_that_swallowed_a_cancellation() -> None:
    swallowed = []

    async def stubborn() -> None:
        for _ in range(3):
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                swallowed.append(1)
                if len(swallowed) == 2:
                    raise

    task = asyncio.ensure_future(stubborn())
    await asyncio.sleep(0)
    await stop_task(task, every=0.05)
    assert task.done()
    assert swallowed == [1, 1]


async def test_a_stopping_worker_ignores_stop_signals_before_its_loop_closes() -> None:
    """ignore_stop_signals: the loop's SIGTERM/SIGINT handlers are off (its self-pipe no longer
    the signal module's wake-up fd) and the signals ignored, before the loop closes."""
    import signal

    from bridge.host.aio import ignore_stop_signals

    loop = asyncio.get_running_loop()
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
        assert signal.set_wakeup_fd(-1) != -1  # (the loop's, put back at once)
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
        ignore_stop_signals(loop)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.set_wakeup_fd(-1) == -1  # detached while the loop runs
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
