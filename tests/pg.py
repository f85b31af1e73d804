"""A PostgreSQL cluster of the tests' own: Debian's initdb and pg_ctl, a temporary directory, a
free loopback port, password authentication (scram-sha-256) with the password in a file, as
operators give it to the bridge; stopped (fast) and removed at the end. Started once per test
session, when a test first asks for it; each test gets a database of its own."""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.support import LOOPBACK, free_port

USER = "alertbridge"


def pg_bin(name: str) -> str:
    """A PostgreSQL server program (not on PATH in Debian): the newest installed version's."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(Path(p).parts[-3]))  # fmt: skip
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(f"{name} not found: run scripts/setup (it installs postgresql)")
    return on_path


def _as_owner() -> tuple[Callable[[], None] | None, int | None]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` user
    (Debian's package makes it) or `nobody`."""
    if os.geteuid() != 0:
        return None, None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            uid, gid = entry.pw_uid, entry.pw_gid

            def drop(uid: int = uid, gid: int = gid) -> None:
                os.setgid(gid)
                os.setuid(uid)

            return drop, uid
    raise RuntimeError("running as root and no postgres or nobody user to run PostgreSQL as")


class Cluster:
    def __init__(self, durable: bool = True) -> None:
        #: False: fsync off (the shared cluster of the contract tests, which make a database
        #: per store; nothing there is about surviving a crash of the machine).
        self.durable = durable
        self.dir = Path(tempfile.mkdtemp(prefix="alertbridge-pg-"))
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.password_file = self.dir / "password"
        self._names = itertools.count(1)
        self._drop, self._uid = _as_owner()

    def _run(self, *argv: str) -> None:
        done = subprocess.run(argv, preexec_fn=self._drop, capture_output=True, text=True,
                              timeout=120, check=False, cwd=self.dir)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        (self.dir / "initpw").write_text(self.password)
        self.password_file.write_text(self.password + "\n")
        self.password_file.chmod(0o600)
        if self._uid is not None:
            os.chown(self.dir, self._uid, -1)
            os.chown(self.dir / "initpw", self._uid, -1)
        self._run(pg_bin("initdb"), "-D", str(self.dir / "data"), "-U", USER, "-E", "UTF8",
                  "--auth=scram-sha-256", f"--pwfile={self.dir / 'initpw'}",
                  "--no-sync")  # fmt: skip
        self.start_again()

    def start_again(self) -> None:
        """Start the server (again, after a stop)."""
        self.pg_ctl("start", "-w", "-t", "60", "-l", str(self.dir / "log"), "-o",
                    f"-p {self.port} -k {self.dir} -c listen_addresses={LOOPBACK}"
                    " -c max_connections=200"
                    + ("" if self.durable else " -c fsync=off -c full_page_writes=off"),
                    )  # fmt: skip

    def pg_ctl(self, *args: str) -> None:
        self._run(pg_bin("pg_ctl"), "-D", str(self.dir / "data"), *args)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.pg_ctl("stop", "-m", "fast", "-w", "-t", "60")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The store URL of a database (no password in it: that is in password_file)."""
        return f"postgresql://{USER}@{LOOPBACK}:{self.port}/{database}"

    def new_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"t{next(self._names)}"
        self.psql(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": self.password}
        done = subprocess.run(
            [pg_bin("psql"), "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", LOOPBACK, "-p",
             str(self.port), "-U", USER, "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r}: {done.stderr}")
        return done.stdout.strip()


_shared: Cluster | None = None


def shared() -> Cluster:
    """The test process's cluster: started at the first call, stopped when the process ends
    (pytest's session fixture `pg_cluster` and the store contract's opener share it)."""
    global _shared
    if _shared is None:
        made = Cluster(durable=False)
        atexit.register(made.stop)
        made.start()
        _shared = made
    return _shared


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    made = Cluster()
    try:
        made.start()
        yield made
    finally:
        made.stop()
