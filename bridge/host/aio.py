"""asyncio helpers.

`asyncio.wait_for` on Python 3.11 can swallow a cancellation that arrives as the awaited
future completes (python/cpython#86296): a loop built on it may then never end when its task
is cancelled. `wait_event` waits with `asyncio.wait`, which never swallows one.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds passed; whether it is set."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=timeout)
    finally:
        if not waiter.done():
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
    return event.is_set()


async def stop_task(task: asyncio.Task[object], rounds: int = 10, every: float = 5.0) -> None:
    """Cancel a task and wait for it to end (cancelled again if a cancellation was lost)."""
    for _ in range(rounds):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                task.result()
            return


async def stop_process(proc: asyncio.subprocess.Process | None, timeout: float = 10.0) -> None:
    """SIGTERM a child process, SIGKILL after `timeout` seconds; wait for it to exit."""
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def ignore_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """A worker process that is stopping: SIGTERM and SIGINT from now on are ignored, their
    handlers taken off the loop while it still runs. Closing the loop with them on closes its
    self-pipe first and detaches it from the signal module after: a signal between the two
    (a second SIGTERM, as a process group's kill sends) once left a worker spinning a core
    for ever inside CPython's report of the failed wake-up write."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(ValueError, RuntimeError):
            loop.remove_signal_handler(sig)
        signal.signal(sig, signal.SIG_IGN)
