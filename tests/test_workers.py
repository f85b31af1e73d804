"""The supervisor of the bridge's worker processes (bridge.workers): a worker that exits is
started again after RESTART_AFTER, and stop() ends both the loop and the process; a worker
notices its server gone. The two kinds on real processes: tests/test_fanout.py (streams) and
tests/test_e2e_escalation.py (escalation)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from bridge.config import load_settings
from bridge.workers import supervisor
from bridge.workers.child import until_stopped
from bridge.workers.supervisor import Supervisor, worker_argv


async def test_a_worker_that_exits_is_started_again_and_stop_ends_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_AFTER", 0.05)
    dying = Supervisor([sys.executable, "-c", "raise SystemExit(3)"])
    dying.name = "test worker"
    task = asyncio.create_task(dying.run())
    for _ in range(400):  # bounded: 20 s
        if dying.restarts >= 2:
            break
        await asyncio.sleep(0.05)
    assert dying.restarts >= 2
    assert "test worker exited with 3; starting it again in 0.05s" in caplog.text
    await dying.stop()
    await asyncio.wait_for(task, 10)

    sleeping = Supervisor([sys.executable, "-c", "import time; time.sleep(60)"])
    task = asyncio.create_task(sleeping.run())
    for _ in range(400):
        if sleeping.proc is not None:
            break
        await asyncio.sleep(0.05)
    await sleeping.stop(timeout=5)
    await asyncio.wait_for(task, 10)
    assert sleeping.proc is not None
    assert sleeping.proc.returncode is not None  # stopped, not left running
    assert sleeping.restarts == 0


def test_a_workers_command_line_is_the_servers_configuration_and_database() -> None:
    settings = load_settings(None, {}, db="/var/lib/alertbridge/a.db")
    argv = worker_argv(settings, "escalation-worker", "--x", "1")
    assert argv[:3] == [sys.executable, "-m", "bridge"]
    assert "--config" not in argv  # the defaults: no file to name
    assert argv[3:] == ["escalation-worker", "--db", "/var/lib/alertbridge/a.db", "--parent",
                        str(os.getpid()), "--x", "1"]  # fmt: skip


async def test_a_worker_stops_once_its_server_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    stop = asyncio.Event()
    await asyncio.wait_for(until_stopped(stop, parent=os.getppid() + 1, every=0.01), 5)
    assert "is gone: stopping" in caplog.text
    stop.set()
    await asyncio.wait_for(until_stopped(stop, parent=os.getppid()), 5)
