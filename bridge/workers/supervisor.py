"""The server's side of a worker process: its command line, started, started again after
RESTART_AFTER when it dies, stopped with the server. A worker kind says how one run goes
(`run_once`: start the process, wait for it, whatever it needs in between)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from bridge.config import Settings
from bridge.host.aio import stop_process

log = logging.getLogger(__name__)
#: Seconds between a worker's death and its next start (bounded: a worker that cannot start
#: is tried again every RESTART_AFTER, not in a loop).
RESTART_AFTER = 2.0


def worker_argv(settings: Settings, command: str, *extra: str) -> list[str]:
    """`python -m bridge [--config FILE] COMMAND --db DB --parent PID EXTRA...`: the server's
    own configuration file and database (it may have had the database from a flag or its
    environment, which the worker then inherits), and the server's pid (the worker stops once
    its parent is no longer that process)."""
    argv = [sys.executable, "-m", "bridge"]
    if settings.source != "<defaults>":
        argv += ["--config", settings.source]
    return [*argv, command, "--db", settings.server.db, "--parent", str(os.getpid()), *extra]


class Supervisor:
    """Keep one worker process running until stop()."""

    #: In the log: "<name> exited with ...".
    name = "worker"
    #: Said after the restart delay in that line (what happens meanwhile).
    meanwhile = ""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc: asyncio.subprocess.Process | None = None
        self.stopping = False
        #: Times the worker was started again after it died (for the tests and the logs).
        self.restarts = 0

    async def run(self) -> None:
        """Run the worker, and again after RESTART_AFTER whenever it exits, until stop()."""
        while not self.stopping:
            code = await self.run_once()
            if self.stopping:
                return
            log.error("%s exited with %s; starting it again in %gs%s", self.name, code,
                      RESTART_AFTER, self.meanwhile)  # fmt: skip
            await asyncio.sleep(RESTART_AFTER)
            self.restarts += 1

    async def run_once(self) -> int | None:
        """Start the process and wait for it; its exit code."""
        self.proc = await self.spawn()
        return await self.proc.wait()

    async def spawn(self, *extra: str, pass_fds: Sequence[int] = ()) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv, *extra, stdin=asyncio.subprocess.DEVNULL, pass_fds=tuple(pass_fds)
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop restarting it, then stop it (SIGTERM; SIGKILL after `timeout`)."""
        self.stopping = True
        await stop_process(self.proc, timeout)
